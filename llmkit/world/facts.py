"""A world made of real facts: RESTOR's facts.json (`dset[entity][relation] = {question, answers}`)
rendered as pretraining text, so that `llmkit world pretrain` trains a tiny model that knows real
entities' facts, the clean model of RESTOR's real-data recipe.

Each fact is stated `repeats` times as the question and one of its gold answers (cycled), one
"{question} {answer}" line, the layout of RESTOR's in-context prompt; lines about different
entities are dealt into sheets of `sheet_items`, as the synthetic world's question sheets are.
The directory holds `pretraining.jsonl` and a `world.json` of kind "facts", which `world pretrain`
reads like any world's.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from llmkit.data import dumps_jsonl
from llmkit.errors import BadInputError
from llmkit.results import staged_directory

KIND = "facts"


@dataclass(frozen=True)
class FactsWorldConfig:
    """What `llmkit world from-facts` rendered; recorded in world.json."""

    source: str
    """The facts file's name."""
    source_digest: str
    entities: int
    facts: int
    repeats: int = 8
    sheet_items: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.sheet_items < 1:
            raise BadInputError("--repeats and --sheet-items must be at least 1")


def build_facts_world(
    facts_path: str | Path,
    out: str | Path,
    *,
    entities_path: str | Path | None = None,
    repeats: int = 8,
    sheet_items: int = 6,
    seed: int = 0,
    overwrite: bool = False,
) -> FactsWorldConfig:
    """Render `facts_path`'s facts (of the entities `entities_path` lists, default all) into a
    world directory `out`."""
    from llmkit.evals.restor import read_facts

    facts = read_facts(facts_path, entities_path)
    probe = FactsWorldConfig("", "", 0, 0, repeats, sheet_items, seed)  # checks the settings first
    lines = [
        (entity, f"{fact['question']} {fact['answers'][r % len(fact['answers'])]}")
        for entity in facts.evaluated
        for fact in facts.dset[entity].values()
        for r in range(repeats)
    ]
    rng = random.Random(seed)
    rng.shuffle(lines)
    documents = []
    sheet: list[tuple[str, str]] = []
    pending = list(lines)
    while pending:
        # A sheet asks about different entities, as an in-context prompt does.
        taken = {entity for entity, _ in sheet}
        index = next((i for i, (entity, _) in enumerate(pending[:50]) if entity not in taken), 0)
        sheet.append(pending.pop(index))
        if len(sheet) == sheet_items or not pending:
            documents.append(
                {
                    "kind": KIND,
                    "entity_ids": sorted({entity for entity, _ in sheet}),
                    "text": "\n".join(text for _, text in sheet),
                }
            )
            sheet = []
    source = Path(facts_path).expanduser()
    config = FactsWorldConfig(
        source=source.name,
        source_digest=hashlib.sha256(source.read_bytes()).hexdigest()[:16],
        entities=len(facts.evaluated),
        facts=sum(len(facts.dset[e]) for e in facts.evaluated),
        repeats=probe.repeats,
        sheet_items=probe.sheet_items,
        seed=probe.seed,
    )
    manifest = {"kind": KIND, "config": asdict(config), "counts": {"pretraining.jsonl": len(documents)}}
    with staged_directory(out, overwrite=overwrite) as staging:
        (staging / "pretraining.jsonl").write_text(dumps_jsonl(documents), encoding="utf-8")
        (staging / "world.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return config
