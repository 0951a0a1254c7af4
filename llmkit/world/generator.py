"""The world generator: seeded, so the same configuration always writes byte-identical files.

Ground truth the real benchmarks can only approximate: every entity has an exposure count, the
number of pretraining biographies that state its facts. Exposure 0 means the model never saw the
entity: what it says about one is a guess.

The second edition follows Physics of Language Models (Part 3.1) so that the model stores facts
per entity rather than per sentence. Every biography is rendered fresh (a phrasing drawn per
sentence from `STATEMENTS`, sentences in random order, the full name in each); first and last names
come from shared pools so only the pair is unique, and the entity's identity must be assembled at
its last name (Nanda et al. 2023); and the world has two populations of seen entities. Facts of
*demonstration* entities also appear as question sheets in every probe form (mixed training), each
item rendered fresh and mixed with other entities' items; *biography-only* entities are known from
their biographies alone, the targets of every cross-form experiment.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.data import dumps_jsonl
from llmkit.errors import BadInputError
from llmkit.results import staged_directory
from llmkit.world.facts import KIND as FACTS_KIND
from llmkit.world.facts import FactsWorldConfig
from llmkit.world.forms import FORMS, HELDOUT_QUESTIONS, QUESTIONS, STATEMENTS, TEMPLATE_KINDS, render

FORMAT_VERSION = 2
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
    first_names: int = 8
    last_names: int = 100
    """Sizes of the name pools: an entity's name is a (first, last) pair drawn without replacement,
    so names share first and last names and only the pair is unique."""
    demonstration_fraction: float = 0.5
    """Share of seen entities whose facts also appear in pretraining as question-sheet items in the
    probe forms (mixed training); the others are known only from their biographies."""
    sheet_items: int = 4
    """Items (of different entities) per question sheet."""
    sheet_forms: int = 1
    """Forms each fact of a demonstration entity is stated in per exposure unit, drawn at random."""
    open_book_fraction: float = 0.0
    """Share of multiple-choice and true/false sheet items that state their fact before asking."""
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
        for name in ("demonstration_fraction", "open_book_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise BadInputError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if min(self.first_names, self.last_names, self.sheet_items) < 1:
            raise BadInputError("first_names, last_names and sheet_items must be at least 1")
        if not 1 <= self.sheet_forms <= len(FORMS):
            raise BadInputError(f"sheet_forms must be between 1 and {len(FORMS)}, got {self.sheet_forms}")
        buckets = len(set(self.exposures))
        if self.first_names * self.last_names // buckets < -(-self.entities // buckets):
            raise BadInputError(
                f"{self.first_names} first names x {self.last_names} last names cannot name {self.entities} entities"
                f" in {buckets} exposure buckets; use larger name pools"
            )


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


def _names(exposures: list[int], firsts: list[str], lasts: list[str], rng: random.Random) -> list[str]:
    """A unique (first, last) name per entity, each exposure bucket drawing its pairs from its own
    diagonals of the first x last grid (pair (i, j) belongs to bucket (i + j) mod buckets), so
    every first and every last name recurs within a bucket: neither name alone tells the
    entities of one exposure apart, and the model must combine them (Nanda et al. 2023)."""
    buckets = list(dict.fromkeys(exposures))
    names = [""] * len(exposures)
    for b, exposure in enumerate(buckets):
        slots = [i for i, e in enumerate(exposures) if e == exposure]
        diagonal = [
            f"{first} {last}"
            for i, first in enumerate(firsts)
            for j, last in enumerate(lasts)
            if (i + j) % len(buckets) == b
        ]
        for slot, name in zip(slots, rng.sample(diagonal, len(slots))):
            names[slot] = name
    return names


def _entities(config: WorldConfig, rng: random.Random) -> list[dict[str, Any]]:
    taken: set[str] = set()
    cities = _unique(lambda: _word(rng, 2) + rng.choice(("", "", " Falls", " Harbor")), config.num_cities, taken)
    companies = _unique(lambda: f"{_word(rng, 2)} {rng.choice(_COMPANY_SUFFIXES)}", config.num_companies, taken)
    firsts = _unique(lambda: _word(rng, rng.choice((1, 2))), config.first_names, taken)
    lasts = _unique(lambda: _word(rng, 2), config.last_names, taken)
    exposures = [config.exposures[i % len(config.exposures)] for i in range(config.entities)]
    names = _names(exposures, firsts, lasts, rng)
    entities = []
    for i, (name, exposure) in enumerate(zip(names, exposures)):
        entities.append(
            {
                "id": f"e{i:04d}",
                "name": name,
                "exposure": exposure,
                "birthplace": rng.choice(cities),
                "birth_year": str(rng.randint(1900, 1999)),
                "occupation": rng.choice(OCCUPATIONS),
                "employer": rng.choice(companies),
                "spouse": None,
                "demonstration": False,
            }
        )
    # An exact share of each exposure bucket, so both populations span every exposure.
    for exposure in config.exposures:
        bucket = [e for e in entities if e["exposure"] == exposure] if exposure > 0 else []
        for e in rng.sample(bucket, round(config.demonstration_fraction * len(bucket))):
            e["demonstration"] = True
    # Spouses share exposure and population, so a seen entity's spouse is seen too, two-hop
    # questions stay within one bucket, and no sheet states a biography-only entity's marriage.
    for exposure in config.exposures:
        for demonstration in (True, False):
            group = [e for e in entities if e["exposure"] == exposure and e["demonstration"] == demonstration]
            for a, b in zip(group[0::2], group[1::2]):
                a["spouse"], b["spouse"] = b["name"], a["name"]
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


def _seen_distractors(facts: list[dict[str, Any]]) -> Callable[[dict[str, Any]], list[str]]:
    """Other values of a fact's attribute. Distractors for seen facts come from seen facts only:
    a spouse option or a false statement must not leak an unseen entity's name into pretraining."""
    everything = _values_by_attribute(facts)
    seen = _values_by_attribute([f for f in facts if f["exposure"] > 0])

    def distractors(fact: dict[str, Any]) -> list[str]:
        pool = seen if fact["exposure"] > 0 else everything
        return [v for v in pool[fact["attribute"]] if v != fact["value"]]

    return distractors


def _probes(facts, entities_by_id, rng) -> list[dict[str, Any]]:
    distractors = _seen_distractors(facts)
    probes = []
    for fact in facts:
        demonstration = entities_by_id[fact["entity_id"]]["demonstration"]
        for template in TEMPLATE_KINDS:
            for form in FORMS:
                probe = render(fact["name"], fact["attribute"], fact["value"], form, distractors(fact), rng, template)
                probes.append(
                    {
                        "fact_id": fact["id"],
                        "entity_id": fact["entity_id"],
                        "attribute": fact["attribute"],
                        "exposure": fact["exposure"],
                        "form": form,
                        "template": template,
                        "demonstration": demonstration,
                        "prompt": probe.prompt,
                        "answer": probe.answer,
                        "in_pretraining": False,  # set once the sheets are drawn
                    }
                )
    return probes


def _biography(entity: dict[str, Any], rng: random.Random) -> str:
    sentences = [
        rng.choice(STATEMENTS[a]).format(name=entity["name"], value=entity[a])
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
                    rng.choice(STATEMENTS[f["attribute"]]).format(name=target["name"], value=f["value"])
                    for f in false_facts
                ] + [STATEMENTS[f["attribute"]][0].format(name=f["name"], value=f["value"]) for f in true_facts]
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
                        "question": QUESTIONS[attribute][0].format(name=e["name"]),
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


def _about(entity: dict[str, Any], attributes: Iterable[str], ids_by_name: dict[str, str]) -> list[str]:
    """The entities a text stating `entity`'s `attributes` is about: the entity, and its spouse
    when the spouse is stated (a marriage is a fact about both)."""
    spouse = entity["spouse"] if "spouse" in attributes else None
    return [entity["id"], *([ids_by_name[spouse]] if spouse else [])]


def _deal(items: list[tuple[list[str], str]], size: int) -> Iterator[tuple[list[str], str]]:
    """Deal (entity ids, text) items into sheets of up to `size` items, no entity twice in a sheet."""
    sheets: list[tuple[list[str], list[str]]] = []
    for ids, text in items:
        home = next((s for s in sheets if len(s[1]) < size and not set(ids) & set(s[0])), None)
        if home is None:
            home = ([], [])
            sheets.append(home)
        home[0].extend(ids)
        home[1].append(text)
        if len(sheets) > 4 * size:  # only the last few sheets are still open
            sheets, full = sheets[-4 * size :], sheets[: -4 * size]
            yield from ((ids_, "\n".join(texts)) for ids_, texts in full)
    yield from ((ids_, "\n".join(texts)) for ids_, texts in sheets)


def _pretraining(config, entities, facts, skills, rng) -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """Each exposure unit of an entity is one biography, rendered fresh. A demonstration entity's
    unit also states each of its facts in `sheet_forms` probe forms drawn at random, each item
    rendered fresh (phrasing, distractors, option letter, truth value) and dealt into question
    sheets mixing entities. Skill training items join. Returns the documents and, per fact id, the
    probe forms its sheets used."""
    ids_by_name = {e["name"]: e["id"] for e in entities}
    by_id = {e["id"]: e for e in entities}
    distractors = _seen_distractors(facts)
    docs = []
    items = []
    forms_used: dict[str, set[str]] = {}
    for e in entities:
        for _ in range(e["exposure"]):
            docs.append(
                {"kind": "biography", "entity_ids": _about(e, ATTRIBUTES, ids_by_name), "text": _biography(e, rng)}
            )
    for fact in facts:
        entity = by_id[fact["entity_id"]]
        if not entity["demonstration"]:
            continue
        about = _about(entity, [fact["attribute"]], ids_by_name)
        for _ in range(entity["exposure"]):
            for form in rng.sample(FORMS, config.sheet_forms):
                forms_used.setdefault(fact["id"], set()).add(form)
                probe = render(fact["name"], fact["attribute"], fact["value"], form, distractors(fact), rng)
                text = f"{probe.prompt} {probe.answer}"
                if form in ("mc", "tf") and rng.random() < config.open_book_fraction:
                    # Open book: the fact stated first, so matching an option (or a statement)
                    # to a value is learnable before the value can be recalled.
                    text = (
                        rng.choice(STATEMENTS[fact["attribute"]]).format(name=fact["name"], value=fact["value"])
                        + "\n"
                        + text
                    )
                items.append((about, text))
    rng.shuffle(items)
    docs += [{"kind": "questions", "entity_ids": ids, "text": text} for ids, text in _deal(items, config.sheet_items)]
    docs += [
        {"kind": item["skill"], "entity_ids": [], "text": f"{item['prompt']} {item['answer']}"}
        for item in skills
        if item["split"] == "train"
    ]
    rng.shuffle(docs)
    return docs, forms_used


FILE_DESCRIPTIONS = {
    "entities.jsonl": "one line per entity: id, name, exposure, attribute values, spouse, demonstration",
    "facts.jsonl": "one line per (entity, attribute) fact with its value and exposure",
    "probes.jsonl": "every fact in every form (qa, cloze, mc, tf, char), phrased by a trained and a held-out template",
    "pretraining.jsonl": "the pretraining documents: biographies, question sheets, skill items",
    "skills.jsonl": "skill items (comparison, reversal, language) with their train/test split",
    "misinformation.jsonl": "RESTOR-style corruption documents with k = 0..3 true facts mixed in",
    "corpus.jsonl": "the search corpus: one document per entity, unseen entities included",
    "search_questions.jsonl": "one-hop questions for every fact and two-hop questions through the spouse",
    "heldout_questions.jsonl": "questions phrased as pretraining never phrased them, for seen and unseen entities",
}


def build_world(config: WorldConfig) -> World:
    """Generate every file of the world in memory."""
    rng = random.Random(config.seed)
    entities = _entities(config, rng)
    entities_by_id = {e["id"]: e for e in entities}
    entities_by_name = {e["name"]: e for e in entities}
    facts = _facts(entities)
    values = _values_by_attribute(facts)
    probes = _probes(facts, entities_by_id, rng)
    skills = _skill_items(config, rng)
    pretraining, forms_used = _pretraining(config, entities, facts, skills, rng)
    for probe in probes:
        probe["in_pretraining"] = probe["form"] in forms_used.get(probe["fact_id"], ())
    files = {
        "entities.jsonl": entities,
        "facts.jsonl": facts,
        "probes.jsonl": probes,
        "pretraining.jsonl": pretraining,
        "skills.jsonl": skills,
        "misinformation.jsonl": _misinformation(config, entities, facts, values, rng),
        "corpus.jsonl": [
            {
                "doc_id": e["id"],
                "title": e["name"],
                "text": " ".join(
                    STATEMENTS[a][0].format(name=e["name"], value=e[a]) for a in ATTRIBUTES if e[a] is not None
                ),
            }
            for e in entities
        ],
        "search_questions.jsonl": _search_questions(entities, entities_by_name),
        "heldout_questions.jsonl": [
            {
                "fact_id": f["id"],
                "question": rng.choice(HELDOUT_QUESTIONS[f["attribute"]]).format(name=f["name"]),
                "answer": f["value"],
                "exposure": f["exposure"],
                "seen": f["exposure"] > 0,
                "demonstration": entities_by_id[f["entity_id"]]["demonstration"],
            }
            for f in facts
        ],
    }
    return World(config, files, _manifest(config, files))


def _manifest(config: WorldConfig, files: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """world.json: the configuration, file descriptions, counts and the ground truth of every fact."""
    misinformed = {d["target_entity_id"] for d in files["misinformation.jsonl"]}
    mixed_in = {fid for d in files["misinformation.jsonl"] for fid in d["true_fact_ids"]}
    forms_in_pretraining = {f["id"]: ["biography"] for f in files["facts.jsonl"] if f["exposure"] > 0}
    for probe in files["probes.jsonl"]:
        if probe["in_pretraining"] and probe["template"] == "trained":
            forms_in_pretraining[probe["fact_id"]].append(probe["form"])
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


def read_world_config(world_dir: str | Path) -> WorldConfig | FactsWorldConfig:
    """The configuration of a world directory (a synthetic world, or one `llmkit world from-facts`
    rendered), or a clear error if it is not one."""
    path = Path(world_dir).expanduser() / "world.json"
    if not path.is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no world.json); create one with `llmkit world build`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and manifest.get("kind") == FACTS_KIND:
            return FactsWorldConfig(**manifest["config"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BadInputError(f"{path} is not a valid world.json; build the world again") from None
    return load_world_config(path, "config", "rebuild the world with `llmkit world build`")


def load_world_config(path: Path, key: str, fix: str) -> WorldConfig:
    """The world configuration stored under `key` of the JSON file `path`, or one line saying
    the file is not valid and how to `fix` it."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))[key]
        return WorldConfig(**{**config, "exposures": tuple(config["exposures"])})
    except (json.JSONDecodeError, KeyError, TypeError):
        raise BadInputError(f"{path} is not a valid {path.name}; {fix}") from None
