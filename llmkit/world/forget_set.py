"""Forget and retain sets from a world, for the unlearning methods that learn from data
(`forget_set`: one entity's facts) and for skill unlearning (`skill_set`: one skill's items).

The forget set holds one target's facts in one form: `qa`, `cloze`, `mc`, `tf` or `char` (the
world's probes: `prompt` + `answer` records), or `bio` (biography sentences, every phrasing
pretraining used: `text` records). The retain set holds the same form's facts about other
entities the model knows (exposure ≥ 10), taken outside the target's exposure bucket where
the world has such entities, because ORT measures collateral damage on that bucket (the
neighbours), and training on them would hide it. Entities married to the target are left out:
their facts name the target.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmkit.data import dumps_jsonl, read_records
from llmkit.errors import BadInputError
from llmkit.results import staged_directory
from llmkit.world.forms import FORMS, STATEMENTS, phrasing
from llmkit.world.generator import ATTRIBUTES

FORGET_FORMS = (*FORMS, "bio")
KNOWN_EXPOSURE = 10


def _records(entity: Mapping[str, Any], form: str, probes: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if form == "bio":
        return [
            {"text": sentence.format(name=entity["name"], value=entity[a])}
            for a in ATTRIBUTES
            if entity[a] is not None
            for sentence in STATEMENTS[a]
        ]
    return [
        {"prompt": p["prompt"], "answer": p["answer"]}
        for p in probes
        if p["entity_id"] == entity["id"] and p["form"] == form and phrasing(p) == "trained"
    ]


def forget_set(
    world_dir: str | Path, target: str, form: str
) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, Any]]:
    """(forget records, retain records, a summary naming the entities each came from)."""
    world_dir = Path(world_dir).expanduser()
    if not (world_dir / "entities.jsonl").is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no entities.jsonl); build one with `llmkit world build`"
        )
    if form not in FORGET_FORMS:
        raise BadInputError(f"unknown form {form!r}; choose one of {', '.join(FORGET_FORMS)}")
    entities = read_records(world_dir / "entities.jsonl")
    by_key = {key: e for e in entities for key in (e["id"], e["name"])}
    if target not in by_key:
        raise BadInputError(f"{world_dir} has no entity named {target!r}; names are in its entities.jsonl")
    entity = by_key[target]
    probes = read_records(world_dir / "probes.jsonl") if form != "bio" else []
    known = [
        e
        for e in entities
        if e["exposure"] >= KNOWN_EXPOSURE
        and e["id"] != entity["id"]
        and e.get("spouse") != entity["name"]
        and entity.get("spouse") != e["name"]
    ]
    other_buckets = [e for e in known if e["exposure"] != entity["exposure"]]
    kept = other_buckets or known
    forget = _records(entity, form, probes)
    retain = [record for e in kept for record in _records(e, form, probes)]
    summary = {
        "target": entity["name"],
        "target_id": entity["id"],
        "exposure": entity["exposure"],
        "form": form,
        "forget_records": len(forget),
        "retain_records": len(retain),
        "retain_entities": [e["name"] for e in kept],
    }
    return forget, retain, summary


def skill_set(world_dir: str | Path, skill: str) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, Any]]:
    """(forget records, retain records, summary): the training items of `skill` and of every other
    skill, as prompt/answer records. The test items stay unseen for evaluation."""
    world_dir = Path(world_dir).expanduser()
    if not (world_dir / "skills.jsonl").is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no skills.jsonl); build one with `llmkit world build`"
        )
    items = [item for item in read_records(world_dir / "skills.jsonl") if item["split"] == "train"]
    names = list(dict.fromkeys(item["skill"] for item in items))
    if skill not in names:
        raise BadInputError(f"{world_dir} has no skill {skill!r}; its skills: {', '.join(names)}")
    records = [{"prompt": i["prompt"], "answer": i["answer"], "skill": i["skill"]} for i in items]
    forget = [r for r in records if r["skill"] == skill]
    retain = [r for r in records if r["skill"] != skill]
    summary = {
        "skill": skill,
        "forget_records": len(forget),
        "retain_records": len(retain),
        "retain_skills": [name for name in names if name != skill],
    }
    return forget, retain, summary


def write_sets(
    out: Path, forget: list[dict], retain: list[dict], summary_file: str, summary: dict, overwrite: bool = False
) -> None:
    """forget.jsonl, retain.jsonl and the summary, appearing in `out` whole or not at all."""
    with staged_directory(out, overwrite=overwrite) as staging:
        (staging / "forget.jsonl").write_text(dumps_jsonl(forget), encoding="utf-8")
        (staging / "retain.jsonl").write_text(dumps_jsonl(retain), encoding="utf-8")
        (staging / summary_file).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
