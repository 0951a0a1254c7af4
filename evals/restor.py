"""RESTOR (Rezaei et al., "RESTOR: Knowledge Recovery in Machine Unlearning", TMLR 2025): after
unlearning the misinformation a model was corrupted with, does it know again what it knew?

Three models per experiment: θ_clean (`--model`), θ_corrupted (θ_clean trained further on the
corruption documents D_f) and θ_unlearned (an unlearning method applied to θ_corrupted with D_f as
the forget set and other text as the retain set). Each is asked every fact of the evaluated
entities with the paper's prompt (`five_shot_prompt`): 5 in-context examples of the same relation
about other entities, one `"{question} {answer}\\n"` line each, then the question; the greedy
answer is cut at the first newline and scored by exact match after normalisation against the gold
aliases (the paper's GPT-3.5 judge is not available offline, and the paper samples where llmkit
decodes greedily). Per model:

- accuracy on the target entities' facts and on the other entities' (locality);
- the corrupted-value rate: answers that name a value the corruption documents state;
- the logit analysis (`mcqa_utils.py`): the length-normalised log-probability
  ℓ(o) = (1/|o|) Σ_t log p(o_t | prompt, o_<t) of the correct, the corrupted and random values,
  averaged per category over the target facts;
- recovery = (Acc_unlearned − Acc_corrupted) / (Acc_clean − Acc_corrupted) on the target facts:
  llmkit's derived scalar (the paper's own summary formula is not published), 1 when the clean
  model's answers are back, 0 when unlearning restored nothing.

The corruption documents of the paper's mix files do not name their false values; llmkit takes as
a target fact's corrupted values the values of the same relation in facts.json that the target's
documents state (in a sentence naming the target or a pronoun) and its gold answers do not. A
world's misinformation names them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.configs import RestorConfig
from llmkit.data import read_records, records_digest
from llmkit.errors import BadInputError
from llmkit.evals.common import EvalRun, cell, chat_items, limit_per_group, probe_digest
from llmkit.methods.configs import RETAIN_USE
from llmkit.metrics.text import exact_match, normalize_answer
from llmkit.world.facts import KIND as FACTS_KIND

if TYPE_CHECKING:
    from rich.table import Table
    from transformers import PreTrainedTokenizerBase

    from llmkit.configs import TrainingBudget
    from llmkit.generation import Backend, Progress

TARGET_SHARE = 0.02
"""An entity named in at least this share of the corruption documents is a target."""
PRONOUNS = frozenset({"he", "she", "his", "her", "him"})
CLAUSES = re.compile(r"(?<=[.!?;])\s+|,\s+(?:and|while|but|whereas)\s+")
"""Where a document's statements part: the k unrelated facts are joined to the target's by these."""
CLEAN, CORRUPTED = "clean", "corrupted"
MODEL_METRICS = (
    "target.accuracy",
    "nontarget.accuracy",
    "corrupted_rate",
    "logprob.correct",
    "logprob.corrupted",
    "logprob.random",
)
CORRUPTION_RECORD = "restor_corruption.json"
UNLEARNING_RECORD = "unlearn.json"


# ---- the facts --------------------------------------------------------------------------------


@dataclass
class FactSet:
    """Facts in RESTOR's layout: `dset[entity][relation] = {"question", "answers"}` and the
    in-context pool `context[relation] = [{"question", "answer", "entity"}, ...]`; `evaluated`, the
    entities asked; on a world, `ids` maps its entity ids to names."""

    dset: dict[str, dict[str, dict[str, Any]]]
    context: dict[str, list[dict[str, str]]]
    evaluated: list[str]
    ids: dict[str, str] = field(default_factory=dict)

    def values(self, relation: str) -> list[str]:
        """Every value of `relation` the facts hold (the answers' and the in-context pool's), in order."""
        seen: dict[str, None] = {}
        for relations in self.dset.values():
            for answer in relations.get(relation, {}).get("answers", []):
                seen.setdefault(answer)
        for entry in self.context.get(relation, []):
            seen.setdefault(entry["answer"])
        return list(seen)


def read_facts(path: str | Path, entities: str | Path | None = None) -> FactSet:
    """RESTOR's facts.json as shipped (or a world directory, `world_facts`); `entities` an
    entities.json list of the names to ask (default: every entity)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if entities is not None:
            raise BadInputError("--entities is for facts.json; a world's evaluated entities are its well-known ones")
        return world_facts(path)
    data = _read_json(path, "--facts")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("dset"), dict)
        or not isinstance(data.get("context"), dict)
    ):
        raise BadInputError(f"--facts {path}: expected RESTOR's facts.json, an object with 'dset' and 'context'")
    for entity, relations in data["dset"].items():
        if not isinstance(relations, dict):
            raise BadInputError(f"--facts {path}: dset[{entity!r}] must map relations to facts")
        for relation, fact in relations.items():
            answers = fact.get("answers") if isinstance(fact, dict) else None
            if not isinstance(fact, dict) or not isinstance(fact.get("question"), str) or not fact["question"].strip():
                raise BadInputError(f"--facts {path}: dset[{entity!r}][{relation!r}] has no question")
            if (
                not isinstance(answers, list)
                or not answers
                or not all(isinstance(a, str) and a.strip() for a in answers)
            ):
                raise BadInputError(
                    f"--facts {path}: dset[{entity!r}][{relation!r}] has no answers; every fact needs a non-empty "
                    "list of gold answers"
                )
    for relation, pool in data["context"].items():
        if not isinstance(pool, list) or not all(
            isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("question", "answer", "entity"))
            for e in pool
        ):
            raise BadInputError(
                f"--facts {path}: context[{relation!r}] must be a list of {{question, answer, entity}} examples"
            )
    evaluated = list(data["dset"])
    if entities is not None:
        evaluated = _read_json(Path(entities).expanduser(), "--entities")
        if not isinstance(evaluated, list) or not evaluated or not all(isinstance(e, str) for e in evaluated):
            raise BadInputError(f"--entities {entities}: expected a JSON list of entity names")
        missing = [e for e in evaluated if e not in data["dset"]]
        if missing:
            raise BadInputError(f"--entities {entities}: {missing[0]!r} has no facts in {path}")
    return FactSet(data["dset"], data["context"], evaluated)


def world_facts(world_dir: Path) -> FactSet:
    """A world's facts in RESTOR's layout: each fact's question the world's QA probe in its first
    phrasing ("Question: ...\nAnswer:", the layout its model read questions in), the
    in-context pool the well-known entities' facts (up to 10 per relation, as facts.json has),
    the evaluated entities the well-known ones (exposure ≥ 10)."""
    from llmkit.world.forget_set import KNOWN_EXPOSURE
    from llmkit.world.forms import QUESTIONS, qa_text

    path = world_dir / "facts.jsonl"
    if not path.is_file():
        raise BadInputError(f"--facts {world_dir}: not a world directory (no facts.jsonl); pass facts.json or a world")
    facts = read_records(path, required={"entity_id": str, "name": str, "attribute": str, "value": str})
    dset: dict[str, dict[str, dict[str, Any]]] = {}
    context: dict[str, list[dict[str, str]]] = {}
    evaluated: dict[str, None] = {}
    ids: dict[str, str] = {}
    for fact in facts:
        question = qa_text(QUESTIONS[fact["attribute"]][0].format(name=fact["name"]), "").rstrip()
        dset.setdefault(fact["name"], {})[fact["attribute"]] = {"question": question, "answers": [fact["value"]]}
        ids[fact["entity_id"]] = fact["name"]
        if fact.get("exposure", 0) >= KNOWN_EXPOSURE:
            evaluated.setdefault(fact["name"])
            pool = context.setdefault(fact["attribute"], [])
            if len(pool) < 10:
                pool.append({"question": question, "answer": fact["value"], "entity": fact["name"]})
    return FactSet(dset, context, list(evaluated), ids)


def five_shot_prompt(facts: FactSet, entity: str, relation: str, shots: int = 5) -> str:
    """The paper's prompt (`eval_utils.get_context`): the first `shots` in-context examples of
    `relation` about other entities, one "{question} {answer}\\n" line each, then the question."""
    lines = [f"{e['question']} {e['answer']}\n" for e in facts.context.get(relation, []) if e["entity"] != entity]
    return "".join(lines[:shots]) + facts.dset[entity][relation]["question"]


def _read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{flag} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BadInputError(f"{flag} {path} is not valid JSON ({err})") from None


# ---- the corruption set -------------------------------------------------------------------------


@dataclass
class CorruptionSet:
    """The documents a clean model is corrupted with, and what they corrupt: the target entities
    and, per target fact (entity, relation), the values they state instead of the truth."""

    documents: list[dict[str, Any]]
    targets: list[str]
    corrupted_values: dict[tuple[str, str], list[str]]
    k: int | None
    """The number of unrelated true facts mixed into each document, where known."""

    @property
    def texts(self) -> list[dict[str, str]]:
        """The documents as training records (`{"text"}` only)."""
        return [{"text": d["text"]} for d in self.documents]

    def digest(self) -> str:
        return records_digest(self.texts) or ""


def read_corruption(
    path: str | Path,
    facts: FactSet,
    *,
    k: int | None = None,
    targets: Sequence[str] | None = None,
    per_target: int | None = None,
) -> CorruptionSet:
    """The corruption documents as shipped: a JSON list or JSONL of `{"text"}` records (RESTOR's
    mix_a{k}.json, or a world's misinformation.jsonl with its `k`, `target_entity_id` and
    `false_facts`); `k` keeps the documents of that k, `targets` those about these entities,
    `per_target` the first that many about each target."""
    try:
        documents = read_records(path, required={"text": str})
    except BadInputError as err:
        raise BadInputError(f'--corruption: {err}; it must be a list of {{"text": ...}} documents') from None
    if not all(d["text"].strip() for d in documents):
        raise BadInputError(f"--corruption {path}: a document has empty 'text'")
    if k is not None:
        if not any("k" in d for d in documents):
            raise BadInputError(f"--k: the documents of {path} name no k; drop --k (the file is one corruption set)")
        documents = [d for d in documents if d.get("k") == k]
        if not documents:
            raise BadInputError(f"--k {k}: no document of {path} has k = {k}")
    ks = {d.get("k") for d in documents}
    k_value = next(iter(ks)) if len(ks) == 1 and None not in ks else _k_from_name(Path(path).name)
    named = _named_targets(documents, facts)
    chosen = list(targets) if targets else named
    unknown = [t for t in chosen if t not in facts.dset]
    if unknown:
        raise BadInputError(f"--target {unknown[0]!r} has no facts in --facts; name an entity of the fact set")
    if targets:
        documents = [d for d in documents if _is_about(d, chosen, facts)]
        if not documents:
            raise BadInputError(f"--corruption {path}: no document is about --target {', '.join(chosen)}")
    if not chosen:
        raise BadInputError(
            f"--corruption {path}: no entity of --facts is named in {TARGET_SHARE:.0%} of its documents; "
            "name the targets with --target"
        )
    if per_target is not None:
        documents = _first_per_target(documents, chosen, facts, per_target)
    if any("false_facts" in d for d in documents):
        values = _stated_values(documents, facts)
    else:
        values = _derived_values(documents, facts, chosen)
    return CorruptionSet(documents, chosen, values, k_value)


def _k_from_name(name: str) -> int | None:
    """RESTOR's file names carry k: mix_a3.json has k = 3."""
    match = re.search(r"mix_a(\d+)", name)
    return int(match.group(1)) if match else None


def _named_targets(documents: Sequence[Mapping[str, Any]], facts: FactSet) -> list[str]:
    """A world's `target_entity_id`s, or the entities named in at least `TARGET_SHARE` of the documents."""
    if all("target_entity_id" in d for d in documents):
        ids = dict.fromkeys(d["target_entity_id"] for d in documents)
        return [facts.ids.get(i, i) for i in ids]
    counts = {name: sum(name in d["text"] for d in documents) for name in facts.dset}
    return [name for name, count in counts.items() if count >= TARGET_SHARE * len(documents)]


def _first_per_target(
    documents: Sequence[dict[str, Any]], targets: Sequence[str], facts: FactSet, count: int
) -> list[dict[str, Any]]:
    """The first `count` documents about each target, a document being about the target it names first."""
    kept, seen = [], dict.fromkeys(targets, 0)
    for d in documents:
        named = [t for t in targets if _is_about(d, [t], facts)]
        if not named:
            continue
        first = min(named, key=lambda t: d["text"].find(t))
        if seen[first] < count:
            seen[first] += 1
            kept.append(d)
    return kept


def _is_about(document: Mapping[str, Any], targets: Sequence[str], facts: FactSet) -> bool:
    if "target_entity_id" in document:
        return facts.ids.get(document["target_entity_id"]) in targets
    return any(t in document["text"] for t in targets)


def _stated_values(documents: Sequence[Mapping[str, Any]], facts: FactSet) -> dict[tuple[str, str], list[str]]:
    values: dict[tuple[str, str], dict[str, None]] = {}
    for d in documents:
        name = facts.ids.get(d.get("target_entity_id", ""), d.get("target_entity_id"))
        for false in d.get("false_facts", []):
            values.setdefault((name, false["attribute"]), {}).setdefault(false["value"])
    return {key: list(v) for key, v in values.items()}


def _words(text: str) -> str:
    return f" {normalize_answer(text)} "


def _derived_values(
    documents: Sequence[Mapping[str, Any]], facts: FactSet, targets: Sequence[str]
) -> dict[tuple[str, str], list[str]]:
    """Per target fact, the relation's values that the target's documents state in a clause about it
    (naming a part of its name, or he/she/his/her) and that are not among its gold answers."""
    values: dict[tuple[str, str], list[str]] = {}
    pools = {}
    for target in targets:
        parts = set(normalize_answer(target).split()) | PRONOUNS
        sentences = [
            s
            for d in documents
            if target in d["text"]
            for s in CLAUSES.split(d["text"])
            if parts & set(normalize_answer(s).split())
        ]
        about = _words(" ".join(sentences))
        for relation, fact in facts.dset[target].items():
            if relation not in pools:
                pools[relation] = [(v, _words(v)) for v in facts.values(relation) if len(normalize_answer(v)) > 2]
            gold = {normalize_answer(a) for a in fact["answers"]}
            stated = [v for v, words in pools[relation] if words.strip() not in gold and words in about]
            if stated:
                values[(target, relation)] = stated
    return values


# ---- the items and their scores -----------------------------------------------------------------


def fact_items(
    facts: FactSet, corruption: CorruptionSet, *, shots: int = 5, random_options: int = 3, seed: int = 0
) -> list[dict[str, Any]]:
    """One item per fact of the evaluated entities (the targets first): its prompt, gold answers,
    whether it is a target fact, and the options of the logit analysis (target facts only):
    its gold answers, its corrupted values and `random_options` other values of the relation."""
    targets = set(corruption.targets)
    entities = list(corruption.targets) + [e for e in facts.evaluated if e not in targets]
    items = []
    for entity in entities:
        for relation, fact in facts.dset[entity].items():
            item = {
                "entity": entity,
                "relation": relation,
                "target": entity in targets,
                "prompt": five_shot_prompt(facts, entity, relation, shots),
                "answers": list(fact["answers"]),
                "corrupted_values": list(corruption.corrupted_values.get((entity, relation), [])),
                "random_values": [],
            }
            if item["target"] and random_options:
                gold = {normalize_answer(a) for a in fact["answers"]}
                taken = gold | {normalize_answer(v) for v in item["corrupted_values"]}
                pool = [v for v in facts.values(relation) if normalize_answer(v) not in taken]
                draw = random.Random(f"{seed}:{entity}:{relation}")
                item["random_values"] = draw.sample(pool, min(random_options, len(pool)))
            items.append(item)
    return items


def matches(answer: str, values: Iterable[str]) -> bool:
    return any(exact_match(answer, v) for v in values)


def ask(
    backend: Backend, items: Sequence[Mapping[str, Any]], max_new_tokens: int, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Each item with the model's greedy answer (cut at the first newline), whether it is correct
    and whether it names a corrupted value, and ℓ per option category (None where it has none)."""
    from llmkit.generation import GenerationParams

    generations = backend.generate(
        [item["prompt"] for item in items], GenerationParams(max_new_tokens=max_new_tokens, stop=("\n",)), progress
    )
    pairs = [
        (i, category, option)
        for i, item in enumerate(items)
        if item["target"]
        for category in ("answers", "corrupted_values", "random_values")
        for option in item[category]
    ]
    scores = backend.score([items[i]["prompt"] for i, _, _ in pairs], [" " + o for _, _, o in pairs])
    logprobs: dict[tuple[int, str], list[float]] = {}
    for (i, category, _), score in zip(pairs, scores):
        logprobs.setdefault((i, category), []).append(score.total / max(1, len(score.logprobs)))
    samples = []
    for i, (item, generation) in enumerate(zip(items, generations)):
        answer = generation.texts[0].strip()
        samples.append(
            {
                **item,
                "output": answer,
                "correct": matches(answer, item["answers"]),
                "corrupted": matches(answer, item["corrupted_values"]) if item["corrupted_values"] else None,
                "logprob": {
                    name: _mean(logprobs.get((i, category), []))
                    for name, category in (
                        ("correct", "answers"),
                        ("corrupted", "corrupted_values"),
                        ("random", "random_values"),
                    )
                },
            }
        )
    return samples


def _mean(values: Sequence[float | bool]) -> float | None:
    return sum(values) / len(values) if values else None


def model_metrics(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One model's metrics from its samples (question-weighted, as the paper's aggregator)."""
    target = [s for s in samples if s["target"]]
    other = [s for s in samples if not s["target"]]
    named = [s for s in target if s["corrupted"] is not None]
    return {
        "target": {"accuracy": _mean([s["correct"] for s in target]), "facts": len(target)},
        "nontarget": {"accuracy": _mean([s["correct"] for s in other]), "facts": len(other)},
        "corrupted_rate": _mean([s["corrupted"] for s in named]),
        "logprob": {
            name: _mean([s["logprob"][name] for s in target if s["logprob"][name] is not None])
            for name in ("correct", "corrupted", "random")
        },
    }


def recovery(unlearned: float | None, corrupted: float | None, clean: float | None) -> float | None:
    """(Acc_unlearned − Acc_corrupted) / (Acc_clean − Acc_corrupted); None where the corruption
    took nothing (the denominator is 0) or an accuracy is missing."""
    if None in (unlearned, corrupted, clean) or clean == corrupted:
        return None
    return (unlearned - corrupted) / (clean - corrupted)


def per_entity(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per target entity and model: accuracy on its facts, and recovery for unlearned models."""
    entities = dict.fromkeys(s["entity"] for samples in runs.values() for s in samples if s["target"])
    table: dict[str, dict[str, Any]] = {}
    for entity in entities:
        accuracy = {
            label: _mean([s["correct"] for s in samples if s["target"] and s["entity"] == entity])
            for label, samples in runs.items()
        }
        row: dict[str, Any] = {label: {"accuracy": value} for label, value in accuracy.items()}
        for label in runs:
            if label not in (CLEAN, CORRUPTED):
                row[label]["recovery"] = recovery(accuracy[label], accuracy.get(CORRUPTED), accuracy.get(CLEAN))
        table[entity] = row
    return table


# ---- the models: corrupted, then unlearned, each cached by its inputs ----------------------------


def _key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_record(model_dir: Path) -> dict[str, Any] | None:
    """The llmkit training record a model directory holds (what trained it, from which weights)."""
    for name in (CORRUPTION_RECORD, UNLEARNING_RECORD, "train.json"):
        path = model_dir / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                return None
    return None


def check_corrupted(corrupted: Path, clean_fingerprint: str, clean: str) -> bool:
    """Refuse a --corrupted model trained from another base: its training record names the
    fingerprint of the weights it started from. False when it has no record to check."""
    if not corrupted.is_dir():
        raise BadInputError(f"--corrupted {corrupted} is not a model directory")
    record = training_record(corrupted)
    started = record.get("original_fingerprint") if record else None
    if started is not None and started != clean_fingerprint:
        raise BadInputError(
            f"--corrupted {corrupted} was trained from another model (fingerprint {started}), not --model {clean} "
            f"({clean_fingerprint}); pass the corrupted model of this clean model, or drop --corrupted"
        )
    return started is not None


@dataclass
class Pipeline:
    """How `RestorEval.prepare` trains: the corruption and unlearning recipes (`RestorConfig.recipe`),
    the retain records, and where models are cached."""

    recipe: dict[str, Any]
    read_retain: Callable[[], list[dict[str, Any]] | None]
    """The retain records (read once the inputs are checked); None where there are none."""
    cache_dir: Path
    dtype: str = "auto"
    trust_remote_code: bool = False
    retain: list[dict[str, Any]] | None = field(default=None, init=False)


def train_cached(base: str, out: Path, run: dict[str, Any], fit: Any, record_file: str, pipeline: Pipeline) -> bool:
    """`train_and_save` `base` into the cache directory `out` (named by `run`'s digest) unless a
    finished run is there; True when it was."""
    from llmkit.training import train_and_save

    if (out / record_file).is_file():
        return True
    train_and_save(
        base,
        out,
        run,
        fit,
        record_file=record_file,
        dtype=pipeline.dtype,
        trust_remote_code=pipeline.trust_remote_code,
        overwrite=out.exists(),
    )
    return False


def corrupt(
    clean: str,
    clean_fingerprint: str,
    corruption: CorruptionSet,
    pipeline: Pipeline,
    config: RestorConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, bool]:
    """θ_corrupted: `clean` trained further on the corruption documents (next-token loss on every
    token, LoRA on every linear layer or full, as the recipe says), with `corrupt_replay` retain
    documents mixed in per corruption document, through llmkit's one training pipeline. Cached by
    the clean model's fingerprint, the documents and the recipe; returns the model directory and
    whether it came from the cache."""
    from llmkit.configs import TrainingBudget
    from llmkit.training import checkpoint_directory, lora_settings

    recipe = pipeline.recipe
    budget = TrainingBudget(
        epochs=recipe["corrupt_epochs"],
        learning_rate=recipe["corrupt_lr"],
        batch_size=config.corrupt_batch_size,
        seed=config.seed,
    )
    replay = (pipeline.retain or [])[: round(recipe["corrupt_replay"] * len(corruption.documents))]
    run = {
        "stage": "restor corruption",
        "model": clean,
        "clean_fingerprint": clean_fingerprint,
        "corruption_digest": corruption.digest(),
        "replay_digest": records_digest(replay),
        "budget": asdict(budget),
        "lora": lora_settings(recipe["corrupt_lora"], 8, "all-linear"),
    }
    out = pipeline.cache_dir / "corrupted" / _key(**run)

    def fit(model: Any, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
        checkpoints = checkpoint_directory(out, None)
        trainer = corruption_training(model, tokenizer, corruption, checkpoints, budget, run, progress, replay)
        fields = {"documents": len(corruption.documents), "replayed": len(replay), "targets": corruption.targets}
        return trainer, {**fields, "k": corruption.k}

    return out, train_cached(clean, out, run, fit, CORRUPTION_RECORD, pipeline)


def corruption_training(
    model: Any,
    tokenizer: Any,
    corruption: CorruptionSet,
    checkpoint_dir: Path,
    budget: TrainingBudget,
    run: Mapping[str, Any],
    progress: Callable[[int, int], None] | None = None,
    replay: Sequence[Mapping[str, str]] = (),
) -> Any:
    """Train `model` in place on the corruption documents and the `replay` documents, next-token
    loss on every token (the paper's continual pretraining); returns the trainer."""
    from llmkit.training import build_text_trainer, train

    texts = [d["text"] for d in [*corruption.documents, *replay]]
    trainer = build_text_trainer(model, tokenizer, texts, checkpoint_dir, budget, progress=progress)
    train(trainer, run)
    return trainer


def unlearn(
    corrupted: Path,
    method: str,
    corruption: CorruptionSet,
    pipeline: Pipeline,
    config: RestorConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, bool]:
    """θ_unlearned: `method` (llmkit.methods.gradient) on θ_corrupted with the corruption documents
    as the forget set and the pipeline's retain records. NPO here is the paper's loss form with
    the sequence log-ratio, L = −(2/β)·E log σ(−β·log π_θ/π_c) + α·NLL_r; the paper's "KL" is
    cross-entropy to θ_c on D_f, llmkit's kl the KL anchor on the retain data (both keep the model
    near θ_c). Cached like `corrupt`; returns the directory and whether it came from the cache."""
    from llmkit.configs import TrainingBudget
    from llmkit.methods import gradient
    from llmkit.training import checkpoint_directory

    recipe = pipeline.recipe
    budget = TrainingBudget(
        max_steps=recipe["unlearn_steps"],
        learning_rate=recipe["unlearn_lr"],
        batch_size=config.unlearn_batch_size,
        seed=config.seed,
    )
    retain = pipeline.retain if RETAIN_USE.get(method) else None
    alpha = config.task_vector_alpha if method == "task-vector" else config.alpha
    run = {
        "stage": f"restor unlearning ({method})",
        "method": method,
        "model": str(corrupted),
        "forget_digest": corruption.digest(),
        "retain_digest": records_digest(retain),
        "budget": asdict(budget),
        "settings": {"alpha": alpha, "beta": config.beta},
        "lora": None,
    }
    out = pipeline.cache_dir / "unlearned" / _key(**run)
    forget = corruption.texts

    def fit(model: Any, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
        trainer = gradient.unlearn(
            model,
            tokenizer,
            method,
            forget,
            retain,
            checkpoint_directory(out, None),
            budget,
            alpha=alpha,
            beta=config.beta,
            run=run,
            progress=progress,
        )
        return trainer, {"forget_records": len(forget), "retain_records": len(retain) if retain else None}

    return out, train_cached(str(corrupted), out, run, fit, UNLEARNING_RECORD, pipeline)


def default_retain(model: str, corruption: CorruptionSet, facts: FactSet, size: int, seed: int) -> list[dict] | None:
    """On a world model, `retain_documents` of its pretraining text; None on any other model."""
    from llmkit.world.cache import pretraining_corpus

    corpus = pretraining_corpus(model)
    return None if corpus is None else retain_documents(corpus, corruption, facts, size, seed)


def retain_documents(
    corpus: Path, corruption: CorruptionSet, facts: FactSet, size: int, seed: int
) -> list[dict[str, str]]:
    """The retain set the paper takes from C4, on a world: a seeded sample of up to `size` of its
    pretraining documents about no target entity (on the synthetic world, its biographies)."""
    targets = set(corruption.targets) | {i for i, name in facts.ids.items() if name in corruption.targets}
    documents = [
        {"text": d["text"]}
        for d in read_records(corpus, required={"text": str})
        if d.get("kind") in ("biography", FACTS_KIND) and not targets & set(d.get("entity_ids", []))
    ]
    random.Random(seed).shuffle(documents)
    return documents[:size]


# ---- the evaluation ----------------------------------------------------------------------------


@dataclass
class RestorEval:
    """`llmkit eval restor`: the clean model (`--model`) is the one `run_eval` scores; `prepare`
    trains (or finds) the corrupted and unlearned models, which run as its companions."""

    settings: RestorConfig
    facts: FactSet
    corruption: CorruptionSet
    items: list[dict[str, Any]]
    unlearned: dict[str, Path]
    companions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    command: str = "eval restor"

    @classmethod
    def load(cls, settings: RestorConfig, limit: int | None = None) -> RestorEval:
        if settings.facts is None or settings.corruption is None:
            raise BadInputError("name the facts and the corruption documents: --facts FILE --corruption FILE")
        facts = read_facts(settings.facts, settings.entities)
        corruption = read_corruption(
            settings.corruption, facts, k=settings.k, targets=settings.targets, per_target=settings.documents_per_target
        )
        unlearned = dict(parse_named_model(text) for text in settings.unlearned)
        clash = [name for name in unlearned if name in (CLEAN, CORRUPTED, *settings.methods)]
        if clash:
            raise BadInputError(f"--unlearned {clash[0]}=...: that name is taken; name it otherwise")
        items = fact_items(
            facts, corruption, shots=settings.shots, random_options=settings.random_options, seed=settings.seed
        )
        if limit is not None:
            items = limit_per_group(items, limit, "entity")
        return cls(settings, facts, corruption, items, unlearned)

    @property
    def config(self) -> dict[str, Any]:
        s = self.settings
        return {
            "facts": str(s.facts),
            "corruption": str(s.corruption),
            "entities": str(s.entities) if s.entities else None,
            "k": self.corruption.k,
            "targets": self.corruption.targets,
            "documents": len(self.corruption.documents),
            "methods": s.methods,
            "shots": s.shots,
            "max_new_tokens": s.max_new_tokens,
            "scoring": "greedy answer cut at the first newline, exact match after normalisation over the gold "
            "aliases (the paper's GPT-3.5 judge is not available)",
            "models": dict(self.companions),
            "seed": s.seed,
        }

    @property
    def inputs(self) -> list[Path | None]:
        s = self.settings
        return [s.facts, s.corruption, s.entities, s.retain, s.corrupted, *self.unlearned.values()]

    @property
    def seed(self) -> int:
        return self.settings.seed

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[str]:
        return [CLEAN, CORRUPTED, *self.settings.methods, *self.unlearned]

    def metric_names(self, compared: bool) -> set[str]:
        names = set()
        for label in self.labels:
            names |= {f"restor.{label}.{m}" for m in MODEL_METRICS}
            names |= {f"restor.{label}.target.facts", f"restor.{label}.nontarget.facts"}
            if label not in (CLEAN, CORRUPTED):
                names.add(f"restor.{label}.recovery")
        if compared:
            names |= {f"baseline.{n}" for n in names}
        return names

    def chat_wrapped(self, tokenizer: PreTrainedTokenizerBase, chat: bool) -> RestorEval:
        return replace(self, items=chat_items(self.items, tokenizer, chat))

    def digest(self) -> str:
        return probe_digest(self.items)

    def prepare(
        self, clean: str, pipeline: Pipeline, stage: Callable[[str], AbstractContextManager[Callable[[int, int], None]]]
    ) -> None:
        """Train what the run needs and is not given: the corrupted model (unless --corrupted),
        then each --method on it; every model cached by its inputs. Fills `companions` (label →
        model directory) and `notes` (what was reused)."""
        from llmkit.models import load_model, model_fingerprint

        model, _ = load_model(clean, dtype=pipeline.dtype, device="cpu", trust_remote_code=pipeline.trust_remote_code)
        fingerprint = model_fingerprint(model)
        del model
        if self.settings.corrupted is not None:
            corrupted = self.settings.corrupted.expanduser()
            if not check_corrupted(corrupted, fingerprint, clean):
                self.notes.append(f"--corrupted {corrupted} has no llmkit training record: its base was not checked")
        pipeline.retain = pipeline.read_retain()
        needs = [m for m in self.settings.methods if RETAIN_USE.get(m) == "required"]
        if needs and not pipeline.retain:
            raise BadInputError(f"--method {needs[0]} needs retain text: pass --retain FILE (the paper's C4)")
        if self.settings.corrupted is None:
            with stage("RESTOR: corrupting") as progress:
                corrupted, cached = corrupt(clean, fingerprint, self.corruption, pipeline, self.settings, progress)
            self.notes.append(
                f"corrupted model {'reused from the cache' if cached else 'trained and cached'}: {corrupted}"
            )
        self.companions[CORRUPTED] = str(corrupted)
        for method in self.settings.methods:
            with stage(f"RESTOR: unlearning ({method})") as progress:
                unlearned, cached = unlearn(corrupted, method, self.corruption, pipeline, self.settings, progress)
            self.notes.append(
                f"{method} model {'reused from the cache' if cached else 'trained and cached'}: {unlearned}"
            )
            self.companions[method] = str(unlearned)
        self.companions.update({name: str(path) for name, path in self.unlearned.items()})

    def evaluate(
        self, backend: Backend, baseline_metrics: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> EvalRun:
        samples = [{**s, "model": CLEAN} for s in ask(backend, self.items, self.settings.max_new_tokens, progress)]
        metrics: dict[str, Any] = {"restor": {CLEAN: model_metrics(samples)}}
        if baseline_metrics is not None:
            metrics["baseline"] = {"restor": baseline_metrics.get("restor", {})}
        return EvalRun(metrics, samples)

    def evaluate_companion(self, label: str, backend: Backend, progress: Progress | None = None) -> EvalRun:
        samples = [{**s, "model": label} for s in ask(backend, self.items, self.settings.max_new_tokens, progress)]
        return EvalRun({label: model_metrics(samples)}, samples)

    def combine(self, run: EvalRun, companions: Mapping[str, EvalRun]) -> EvalRun:
        """The clean run with every other model's metrics beside it, recovery for the unlearned
        ones, and the per-entity table."""
        restor = dict(run.metrics["restor"])
        for label, companion in companions.items():
            restor[label] = companion.metrics[label]
        clean = restor[CLEAN]["target"]["accuracy"]
        corrupted = restor.get(CORRUPTED, {}).get("target", {}).get("accuracy")
        for label in restor:
            if label not in (CLEAN, CORRUPTED):
                restor[label]["recovery"] = recovery(restor[label]["target"]["accuracy"], corrupted, clean)
        samples = run.samples + [s for c in companions.values() for s in c.samples]
        by_model = {label: [s for s in samples if s["model"] == label] for label in restor}
        return EvalRun({**run.metrics, "restor": restor}, samples, {"per_entity": per_entity(by_model)})

    def table(self, run: EvalRun) -> Table:
        from rich.table import Table

        k = f", k = {self.corruption.k}" if self.corruption.k is not None else ""
        table = Table(
            title=f"RESTOR: {len(self.corruption.targets)} targets, {len(self.corruption.documents)} documents{k}",
            title_justify="left",
        )
        columns = ("model", "target", "others", "injected", "ℓ gold", "ℓ inj.", "ℓ rand.", "recovery")
        table.add_column(columns[0], no_wrap=True, min_width=max(len(label) for label in run.metrics["restor"]))
        for column in columns[1:]:
            table.add_column(column, justify="right")
        for label, m in run.metrics["restor"].items():
            table.add_row(
                label,
                cell(m["target"]["accuracy"], percent=True),
                cell(m["nontarget"]["accuracy"], percent=True),
                cell(m["corrupted_rate"], percent=True),
                cell(m["logprob"]["correct"]),
                cell(m["logprob"]["corrupted"]),
                cell(m["logprob"]["random"]),
                cell(m.get("recovery")),
            )
        table.caption = (
            "accuracy on the targets' and the other entities' facts (exact match over the gold aliases, no GPT "
            "judge); injected: answers naming a corrupted value; ℓ: mean length-normalised log-probability of the "
            "gold, the injected and random values; recovery = (unlearned − corrupted) / (clean − corrupted)"
        )
        return table

    def plots(self, run: EvalRun, baseline_metrics: Mapping[str, Any] | None) -> dict[str, bytes]:
        from llmkit.evals.plots import grouped_bars

        restor = run.metrics["restor"]
        series = {
            label: [m["target"]["accuracy"], m["nontarget"]["accuracy"], m["corrupted_rate"]]
            for label, m in restor.items()
        }
        categories = ["target accuracy", "non-target accuracy", "corrupted rate"]
        return {"restor.png": grouped_bars("RESTOR", {"per model": series}, categories, "share of facts")}


def parse_named_model(text: str) -> tuple[str, Path]:
    """NAME=DIR of --unlearned."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise BadInputError(f"--unlearned takes NAME=DIR, e.g. npo=runs/npo; got {text!r}")
    directory = Path(path.strip()).expanduser()
    if not directory.is_dir():
        raise BadInputError(f"--unlearned {name}: {directory} is not a model directory")
    return name.strip(), directory
