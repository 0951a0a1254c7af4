"""The world generator: seeded, so the same configuration always writes byte-identical files.

Ground truth the real benchmarks can only approximate: every entity has an exposure count, the
number of pretraining documents (biographies in varied phrasings, and question-answer sheets) that
state its facts. Exposure 0 means the model never saw the entity: what it says about one is a guess.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.data import dumps_jsonl
from llmkit.errors import BadInputError
from llmkit.results import staged_directory
from llmkit.world.forms import FORMS, HELDOUT_QUESTIONS, QUESTIONS, STATEMENTS, qa_text, render

FORMAT_VERSION = 1
ATTRIBUTES = ("birthplace", "birth_year", "occupation", "employer", "spouse")
OCCUPATIONS = (
    "baker",
    "painter",
    "carpenter",
    "teacher",
    "sailor",
    "doctor",
    "farmer",
    "lawyer",
    "tailor",
    "potter",
    "banker",
    "chemist",
    "librarian",
    "mason",
    "weaver",
)
BIO_SENTENCES = {
    "birthplace": (
        "{name} was born in {value}.",
        "{name} is a native of {value}.",
        "The birthplace of {name} is {value}.",
    ),
    "birth_year": ("{name} was born in the year {value}.", "The birth year of {name} is {value}."),
    "occupation": (
        "{name} worked as a {value}.",
        "By profession, {name} was a {value}.",
        "{name} earned a living as a {value}.",
    ),
    "employer": (
        "{name} was employed by {value}.",
        "{name} worked for {value}.",
        "For many years {name} worked at {value}.",
    ),
    "spouse": ("{name} was married to {value}.", "{name} married {value}.", "The spouse of {name} was {value}."),
}
NUMERIC_SKILL = "comparison"
"""The numeric skill: which of two numbers is larger. Chosen over 2-digit addition (11% on the
default model), successor and counting by measurement (docs/world.md, "Choosing the numeric skill")."""
SKILLS = (NUMERIC_SKILL, "reversal", "language")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "rk")
_COMPANY_SUFFIXES = ("Works", "Mills", "Labs", "Foundry", "Traders", "Shipping")
_ENGLISH = {
    "det": ("the", "a"),
    "adj": ("red", "small", "old", "happy", "green"),
    "noun": ("dog", "cat", "bird", "farmer", "child", "horse"),
    "verb": ("sees", "likes", "follows", "helps", "finds"),
}


@dataclass(frozen=True)
class WorldConfig:
    """What `llmkit world build` generates; every field is recorded in world.json."""

    seed: int = 0
    entities: int = 200
    exposures: tuple[int, ...] = (0, 1, 3, 10, 30)
    num_cities: int = 20
    num_companies: int = 15
    form_demo_fraction: float = 0.1
    """Share of seen entities whose facts also appear in pretraining in every probe form (so the
    model learns the forms); for the others, forms other than QA are evaluation-only."""
    skill_train_items: int = 5000
    skill_test_items: int = 200
    comparison_digits: int = 2
    misinformation_targets: int = 10
    misinformation_docs: int = 10
    """Documents per target entity and per k (number of true facts mixed in), k = 0..3."""

    def __post_init__(self) -> None:
        if self.entities < 1:
            raise BadInputError(f"--entities must be at least 1, got {self.entities}")
        if not self.exposures or any(not isinstance(e, int) or e < 0 for e in self.exposures):
            raise BadInputError(f"exposures must be non-negative integers, got {list(self.exposures)}")
        for name in ("num_cities", "num_companies", "skill_train_items", "skill_test_items", "comparison_digits"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if min(self.num_cities, self.num_companies) < 4:
            raise BadInputError("num_cities and num_companies must be at least 4 (multiple choice needs 4 options)")
        if not 0 <= self.form_demo_fraction <= 1:
            raise BadInputError(f"form_demo_fraction must be in [0, 1], got {self.form_demo_fraction}")


def parse_exposures(text: str) -> tuple[int, ...]:
    """'0,1,3,10,30' -> (0, 1, 3, 10, 30), or a clear error."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise BadInputError(f"--exposures must be comma-separated non-negative integers like 0,1,3,10,30, got {text!r}")
    return tuple(int(p) for p in parts)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ).capitalize()


def _unique(make: Callable[[], str], count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        candidate = make()
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


@dataclass
class World:
    """The generated files, by name, as lists of records, plus the world.json manifest."""

    config: WorldConfig
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def _entities(config: WorldConfig, rng: random.Random) -> list[dict[str, Any]]:
    taken: set[str] = set()
    cities = _unique(lambda: _word(rng, 2) + rng.choice(("", "", " Falls", " Harbor")), config.num_cities, taken)
    companies = _unique(lambda: f"{_word(rng, 2)} {rng.choice(_COMPANY_SUFFIXES)}", config.num_companies, taken)
    names = _unique(lambda: f"{_word(rng, rng.choice((1, 2)))} {_word(rng, 2)}", config.entities, taken)
    entities = []
    for i, name in enumerate(names):
        entities.append(
            {
                "id": f"e{i:04d}",
                "name": name,
                "exposure": config.exposures[i % len(config.exposures)],
                "birthplace": rng.choice(cities),
                "birth_year": str(rng.randint(1900, 1999)),
                "occupation": rng.choice(OCCUPATIONS),
                "employer": rng.choice(companies),
                "spouse": None,
                "form_demo": False,
            }
        )
    # Spouses are entities of the same exposure, so a seen entity's spouse is seen too and
    # two-hop questions stay within one bucket.
    for exposure in config.exposures:
        bucket = [e for e in entities if e["exposure"] == exposure and e["spouse"] is None]
        for a, b in zip(bucket[0::2], bucket[1::2]):
            a["spouse"], b["spouse"] = b["name"], a["name"]
    for entity in entities:
        entity["form_demo"] = entity["exposure"] > 0 and rng.random() < config.form_demo_fraction
    return entities


def _facts(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{e['id']}.{attribute}",
            "entity_id": e["id"],
            "name": e["name"],
            "attribute": attribute,
            "value": e[attribute],
            "exposure": e["exposure"],
        }
        for e in entities
        for attribute in ATTRIBUTES
        if e[attribute] is not None
    ]


def _values_by_attribute(facts: list[dict[str, Any]]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for fact in facts:
        if fact["value"] not in values.setdefault(fact["attribute"], []):
            values[fact["attribute"]].append(fact["value"])
    return values


def _probes(facts, entities_by_id, values, rng) -> list[dict[str, Any]]:
    # Distractors for seen facts come from seen facts only: a spouse option or a false statement
    # must not leak an unseen entity's name into pretraining.
    seen_values = _values_by_attribute([f for f in facts if f["exposure"] > 0])
    probes = []
    for fact in facts:
        pool = seen_values if fact["exposure"] > 0 else values
        distractors = [v for v in pool[fact["attribute"]] if v != fact["value"]]
        demo = entities_by_id[fact["entity_id"]]["form_demo"]
        for form in FORMS:
            probe = render(fact["name"], fact["attribute"], fact["value"], form, distractors, rng)
            probes.append(
                {
                    "fact_id": fact["id"],
                    "entity_id": fact["entity_id"],
                    "attribute": fact["attribute"],
                    "exposure": fact["exposure"],
                    "form": form,
                    "prompt": probe.prompt,
                    "answer": probe.answer,
                    "in_pretraining": fact["exposure"] > 0 and (form == "qa" or demo),
                }
            )
    return probes


def _biography(entity: dict[str, Any], rng: random.Random) -> str:
    sentences = [
        rng.choice(BIO_SENTENCES[a]).format(name=entity["name"], value=entity[a])
        for a in ATTRIBUTES
        if entity[a] is not None
    ]
    rng.shuffle(sentences)
    return " ".join(sentences)


def _skill_items(config: WorldConfig, rng: random.Random) -> list[dict[str, Any]]:
    language = _word(rng, 2) + "ish"
    english = [w for words in _ENGLISH.values() for w in words]
    lexicon = dict(zip(english, _unique(lambda: _word(rng, rng.choice((1, 2))).lower(), len(english), set())))

    def comparison() -> tuple[str, str]:
        a, b = rng.sample(range(10**config.comparison_digits), 2)
        return f"Which is larger, {a} or {b}?", str(max(a, b))

    def reversal() -> tuple[str, str]:
        letters = [rng.choice("abcdefghij") for _ in range(rng.randint(3, 6))]
        return f"Reverse: {' '.join(letters)} =>", " ".join(reversed(letters))

    def noun_phrase() -> list[str]:
        adjective = [rng.choice(_ENGLISH["adj"])] if rng.random() < 0.5 else []
        return [rng.choice(_ENGLISH["det"]), *adjective, rng.choice(_ENGLISH["noun"])]

    def translation() -> tuple[str, str]:
        words = [*noun_phrase(), rng.choice(_ENGLISH["verb"]), *noun_phrase()]
        return f"Translate to {language}: {' '.join(words)} =>", " ".join(lexicon[w] for w in words)

    items = []
    for skill, make in zip(SKILLS, (comparison, reversal, translation)):
        wanted = config.skill_train_items + config.skill_test_items
        seen: dict[str, str] = {}
        for _ in range(wanted * 50):
            if len(seen) == wanted:
                break
            prompt, answer = make()
            seen.setdefault(prompt, answer)
        pool = list(seen.items())
        test = set(rng.sample(range(len(pool)), min(config.skill_test_items, len(pool) // 2)))
        items += [
            {"skill": skill, "split": "test" if i in test else "train", "prompt": p, "answer": a}
            for i, (p, a) in enumerate(pool)
        ]
    return items


def _misinformation(config, entities, facts, values, rng) -> list[dict[str, Any]]:
    """RESTOR-style corruption documents: wrong values about a target entity (varying across
    documents), each mixed with k true facts about other seen entities, k = 0..3."""
    seen = [e for e in entities if e["exposure"] > 0]
    targets = sorted(seen, key=lambda e: -e["exposure"])[: config.misinformation_targets]
    others = [f for f in facts if f["exposure"] > 0 and f["entity_id"] not in {t["id"] for t in targets}]
    docs = []
    for target in targets:
        attributes = [a for a in ATTRIBUTES if a != "spouse"]
        for k in range(4):
            for _ in range(config.misinformation_docs):
                corrupted = rng.sample(attributes, rng.randint(2, len(attributes)))
                false_facts = [
                    {
                        "attribute": a,
                        "value": rng.choice([v for v in values[a] if v != target[a]]),
                        "true_value": target[a],
                    }
                    for a in corrupted
                ]
                true_facts = rng.sample(others, min(k, len(others)))
                sentences = [
                    rng.choice(BIO_SENTENCES[f["attribute"]]).format(name=target["name"], value=f["value"])
                    for f in false_facts
                ] + [STATEMENTS[f["attribute"]].format(name=f["name"], value=f["value"]) for f in true_facts]
                rng.shuffle(sentences)
                docs.append(
                    {
                        "k": k,
                        "target_entity_id": target["id"],
                        "text": " ".join(sentences),
                        "false_facts": false_facts,
                        "true_fact_ids": [f["id"] for f in true_facts],
                    }
                )
    return docs


def _search_questions(entities, entities_by_name) -> list[dict[str, Any]]:
    """One-hop questions for every fact, two-hop ones through the spouse."""
    questions = []
    for e in entities:
        for attribute in ATTRIBUTES:
            if e[attribute] is not None:
                questions.append(
                    {
                        "id": f"{e['id']}.{attribute}",
                        "hops": 1,
                        "question": QUESTIONS[attribute].format(name=e["name"]),
                        "answer": e[attribute],
                        "entity_ids": [e["id"]],
                        "exposure": e["exposure"],
                    }
                )
        if e["spouse"] is not None:
            spouse = entities_by_name[e["spouse"]]
            for attribute, question in (
                ("birthplace", "Where was the spouse of {name} born?"),
                ("occupation", "What was the occupation of the spouse of {name}?"),
            ):
                questions.append(
                    {
                        "id": f"{e['id']}.spouse.{attribute}",
                        "hops": 2,
                        "question": question.format(name=e["name"]),
                        "answer": spouse[attribute],
                        "entity_ids": [e["id"], spouse["id"]],
                        "exposure": e["exposure"],
                    }
                )
    return questions


def _pretraining(entities, probes, skills, rng) -> list[dict[str, Any]]:
    """Each exposure unit of an entity is one biography and one question-answer sheet (plus, for
    form-demo entities, one sheet of its facts in the other forms); skill training items join."""
    probes_by_entity: dict[str, list[dict[str, Any]]] = {}
    for probe in probes:
        if probe["in_pretraining"] and probe["form"] != "qa":
            probes_by_entity.setdefault(probe["entity_id"], []).append(probe)
    docs = []
    for e in entities:
        questions = [qa_text(QUESTIONS[a].format(name=e["name"]), e[a]) for a in ATTRIBUTES if e[a] is not None]
        for _ in range(e["exposure"]):
            docs.append({"kind": "biography", "entity_id": e["id"], "text": _biography(e, rng)})
            rng.shuffle(questions)
            docs.append({"kind": "qa", "entity_id": e["id"], "text": "\n".join(questions)})
            forms = [f"{p['prompt']} {p['answer']}" for p in probes_by_entity.get(e["id"], [])]
            if forms:
                rng.shuffle(forms)
                docs.append({"kind": "forms", "entity_id": e["id"], "text": "\n".join(forms)})
    docs += [
        {"kind": item["skill"], "entity_id": None, "text": f"{item['prompt']} {item['answer']}"}
        for item in skills
        if item["split"] == "train"
    ]
    rng.shuffle(docs)
    return docs


FILE_DESCRIPTIONS = {
    "entities.jsonl": "one line per entity: id, name, exposure, attribute values, spouse, form_demo",
    "facts.jsonl": "one line per (entity, attribute) fact with its value and exposure",
    "probes.jsonl": "every fact in every form (qa, cloze, mc, tf, char): prompt, answer, in_pretraining",
    "pretraining.jsonl": "the pretraining documents: biographies, QA sheets, form sheets, skill items",
    "skills.jsonl": "skill items (comparison, reversal, language) with their train/test split",
    "misinformation.jsonl": "RESTOR-style corruption documents with k = 0..3 true facts mixed in",
    "corpus.jsonl": "the search corpus: one document per entity, unseen entities included",
    "search_questions.jsonl": "one-hop questions for every fact and two-hop questions through the spouse",
    "heldout_questions.jsonl": "paraphrased questions never used in pretraining, for seen and unseen entities",
}


def build_world(config: WorldConfig) -> World:
    """Generate every file of the world in memory."""
    rng = random.Random(config.seed)
    entities = _entities(config, rng)
    entities_by_id = {e["id"]: e for e in entities}
    entities_by_name = {e["name"]: e for e in entities}
    facts = _facts(entities)
    values = _values_by_attribute(facts)
    probes = _probes(facts, entities_by_id, values, rng)
    skills = _skill_items(config, rng)
    files = {
        "entities.jsonl": entities,
        "facts.jsonl": facts,
        "probes.jsonl": probes,
        "pretraining.jsonl": _pretraining(entities, probes, skills, rng),
        "skills.jsonl": skills,
        "misinformation.jsonl": _misinformation(config, entities, facts, values, rng),
        "corpus.jsonl": [
            {
                "doc_id": e["id"],
                "title": e["name"],
                "text": " ".join(
                    STATEMENTS[a].format(name=e["name"], value=e[a]) for a in ATTRIBUTES if e[a] is not None
                ),
            }
            for e in entities
        ],
        "search_questions.jsonl": _search_questions(entities, entities_by_name),
        "heldout_questions.jsonl": [
            {
                "fact_id": f["id"],
                "question": HELDOUT_QUESTIONS[f["attribute"]].format(name=f["name"]),
                "answer": f["value"],
                "exposure": f["exposure"],
                "seen": f["exposure"] > 0,
            }
            for f in facts
        ],
    }
    return World(config, files, _manifest(config, files))


def _manifest(config: WorldConfig, files: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """world.json: the configuration, file descriptions, counts and the ground truth of every fact."""
    misinformed = {d["target_entity_id"] for d in files["misinformation.jsonl"]}
    mixed_in = {fid for d in files["misinformation.jsonl"] for fid in d["true_fact_ids"]}
    forms_in_pretraining: dict[str, list[str]] = {}
    for probe in files["probes.jsonl"]:
        if probe["in_pretraining"]:
            forms_in_pretraining.setdefault(probe["fact_id"], []).append(probe["form"])
    facts = []
    for fact in files["facts.jsonl"]:
        used_in = ["facts.jsonl", "probes.jsonl", "corpus.jsonl", "search_questions.jsonl", "heldout_questions.jsonl"]
        if fact["exposure"] > 0:
            used_in.append("pretraining.jsonl")
        if fact["entity_id"] in misinformed or fact["id"] in mixed_in:
            used_in.append("misinformation.jsonl")
        facts.append(
            {
                "id": fact["id"],
                "attribute": fact["attribute"],
                "value": fact["value"],
                "exposure": fact["exposure"],
                "pretraining_forms": forms_in_pretraining.get(fact["id"], []),
                "files": sorted(used_in),
            }
        )
    return {
        "llmkit_world": FORMAT_VERSION,
        "config": asdict(config),
        "files": FILE_DESCRIPTIONS,
        "counts": {name: len(records) for name, records in files.items()},
        "facts": facts,
    }


def write_world(world: World, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the world's files and world.json into `out`, atomically."""
    with staged_directory(out, overwrite=overwrite) as staging:
        for name, records in world.files.items():
            (staging / name).write_text(dumps_jsonl(records), encoding="utf-8")
        manifest = json.dumps(world.manifest, indent=1, ensure_ascii=False) + "\n"
        (staging / "world.json").write_text(manifest, encoding="utf-8")
    return Path(out)


def world_digest(world_dir: str | Path) -> str:
    """A sha256 of world.json and every file it lists (names and bytes, in name order): two worlds
    with the same digest are the same world, whatever configuration or generator made them."""
    root = Path(world_dir).expanduser()
    read_world_config(root)
    names = sorted([*json.loads((root / "world.json").read_text(encoding="utf-8"))["counts"], "world.json"])
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise BadInputError(f"world {root} is incomplete (no {', '.join(missing)}); delete it and build it again")
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()


def read_world_config(world_dir: str | Path) -> WorldConfig:
    """The configuration of a world directory, or a clear error if it is not one."""
    path = Path(world_dir).expanduser() / "world.json"
    if not path.is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no world.json); create one with `llmkit world build`"
        )
    return load_world_config(path, "config", "rebuild the world with `llmkit world build`")


def load_world_config(path: Path, key: str, fix: str) -> WorldConfig:
    """The world configuration stored under `key` of the JSON file `path`, or one line saying
    the file is not valid and how to `fix` it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))[key]
        return WorldConfig(**{**config, "exposures": tuple(config["exposures"])})
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BadInputError(f"{path} is not a valid {path.name}; {fix}") from None
