"""A world's facts as question-answer items, with the ground truth real benchmarks lack: how often
the model saw each entity, and so whether the answer is known.

Items have the shape `llmkit.data.read_questions` gives (`id`, `question`, `answers`, `prompt`)
plus `exposure`, `known` (exposure ≥ 10: True, never seen: False, between: None, neither known
nor unknown), `attribute`, `entity_id`, `demonstration`, `template` and `group` ("exposure N").
The abstention methods (R-Tuning, MASH) learn from them and `eval abstention` asks them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.world.forget_set import KNOWN_EXPOSURE
from llmkit.world.forms import TEMPLATE_KINDS, phrasing


def known_label(exposure: int) -> bool | None:
    """Known (seen ≥ 10 times), unknown (never seen), or neither (seen 1-9 times: partly known)."""
    if exposure >= KNOWN_EXPOSURE:
        return True
    return False if exposure == 0 else None


def world_questions(
    world_dir: str | Path, *, template: str = "trained", exposures: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """The world's QA probes phrased by `template` (trained or held-out), about entities of
    `exposures` (all when None), as question-answer items."""
    path = Path(world_dir).expanduser() / "probes.jsonl"
    if not path.is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no probes.jsonl); build one with `llmkit world build`"
        )
    if template not in TEMPLATE_KINDS:
        raise BadInputError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATE_KINDS)}")
    probes = [p for p in read_records(path) if p["form"] == "qa" and phrasing(p) == template]
    have = sorted({p["exposure"] for p in probes})
    missing = sorted(set(exposures or ()) - set(have))
    if missing:
        raise BadInputError(
            f"{world_dir} has no entities of exposure {', '.join(map(str, missing))}; "
            f"its exposures are {', '.join(map(str, have))}"
        )
    return [
        {
            "id": f"{p['fact_id']}.{template}",
            "question": p["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:"),
            "answers": [p["answer"]],
            "prompt": p["prompt"],
            "exposure": p["exposure"],
            "known": known_label(p["exposure"]),
            "group": f"exposure {p['exposure']}",
            "attribute": p["attribute"],
            "entity_id": p["entity_id"],
            "demonstration": p.get("demonstration"),
            "template": template,
        }
        for p in probes
        if exposures is None or p["exposure"] in exposures
    ]


def split_entities(items: Sequence[dict[str, Any]], train_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(tuning entities, held-out entities): within each exposure, a seeded `train_fraction` of
    its entities for tuning and the rest held out, so that both halves span every exposure and a
    tuned model must tell known from unknown for people it was not tuned on."""
    if not 0 < train_fraction < 1:
        raise BadInputError(f"--train-fraction must be in (0, 1), got {train_fraction}")
    by_exposure: dict[int, list[str]] = {}
    for item in items:
        entities = by_exposure.setdefault(item["exposure"], [])
        if item["entity_id"] not in entities:
            entities.append(item["entity_id"])
    rng = random.Random(seed)
    tuned: set[str] = set()
    for exposure in sorted(by_exposure):
        entities = sorted(by_exposure[exposure])
        rng.shuffle(entities)
        tuned.update(entities[: max(1, round(train_fraction * len(entities)))])
    return tuned, {item["entity_id"] for item in items} - tuned


def abstention_sets(
    world_dir: str | Path, train_fraction: float, seed: int, attributes: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(tuning questions, test sets) for an abstention method on a world: the trained-phrasing
    questions about the tuning entities (`split_entities`) and, when given, only of `attributes`;
    the test sets ask the held-out entities: `test` the same attributes and phrasing, and, out of
    distribution, `test_heldout_template` (phrasings pretraining never used) and
    `test_other_attributes` (the attributes left out of tuning, when some are)."""
    trained = world_questions(world_dir)
    known_attributes = list(dict.fromkeys(item["attribute"] for item in trained))
    unknown = sorted(set(attributes or ()) - set(known_attributes))
    if unknown:
        raise BadInputError(
            f"{world_dir} has no attribute {', '.join(map(repr, unknown))}; "
            f"its attributes: {', '.join(known_attributes)}"
        )
    chosen = set(attributes or known_attributes)
    tuned, held_out = split_entities(trained, train_fraction, seed)
    heldout_template = world_questions(world_dir, template="heldout")
    tests = {
        "test": [q for q in trained if q["entity_id"] in held_out and q["attribute"] in chosen],
        "test_heldout_template": [
            q for q in heldout_template if q["entity_id"] in held_out and q["attribute"] in chosen
        ],
    }
    if chosen != set(known_attributes):
        tests["test_other_attributes"] = [
            q for q in trained if q["entity_id"] in held_out and q["attribute"] not in chosen
        ]
    return [q for q in trained if q["entity_id"] in tuned and q["attribute"] in chosen], tests


SEARCH_KEYWORDS = {"birthplace": "born", "birth_year": "year", "occupation": "worked", "employer": "employed",
                   "spouse": "married"}  # fmt: skip
"""The word of each attribute's corpus sentence ("X was born in …", "… in the year …") a query names."""


def search_questions(world_dir: str | Path) -> list[dict[str, Any]]:
    """The world's MASH questions (search_questions.jsonl: one-hop for every fact, two-hop through
    the spouse) as question-answer items with `hops` and `queries`, the oracle decomposition the
    warm start searches with: the person's name and the fact's `SEARCH_KEYWORDS` word, and for a
    two-hop question first "{name} married" (the spouse), then the spouse's fact. A one-hop
    question is known or unknown by its entity's exposure (`known_label`); a two-hop one is
    neither, since the model never saw the composition."""
    world_dir = Path(world_dir).expanduser()
    for name in ("search_questions.jsonl", "entities.jsonl"):
        if not (world_dir / name).is_file():
            raise BadInputError(
                f"{world_dir} is not a world directory (no {name}); build one with `llmkit world build`"
            )
    names = {e["id"]: e["name"] for e in read_records(world_dir / "entities.jsonl")}
    items = []
    for q in read_records(world_dir / "search_questions.jsonl"):
        one_hop = q["hops"] == 1
        items.append(
            {
                "id": q["id"],
                "question": q["question"],
                "answers": [q["answer"]],
                "hops": q["hops"],
                "queries": _queries(q, names),
                "exposure": q["exposure"],
                "known": known_label(q["exposure"]) if one_hop else None,
                "group": f"exposure {q['exposure']}" if one_hop else f"two-hop exposure {q['exposure']}",
                "entity_id": q["entity_ids"][0],
            }
        )
    return items


def _queries(question: dict[str, Any], names: dict[str, str]) -> list[str]:
    attribute = question["id"].rsplit(".", 1)[1]
    *hops, last = question["entity_ids"]
    return [f"{names[e]} {SEARCH_KEYWORDS['spouse']}" for e in hops] + [f"{names[last]} {SEARCH_KEYWORDS[attribute]}"]


def split_questions(
    items: Sequence[dict[str, Any]], test_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training questions, test questions): a seeded random `test_fraction` of the questions held
    out, as MASH splits its datasets (an entity's other questions may be trained on)."""
    if not 0 < test_fraction < 1:
        raise BadInputError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held_out = set(order[: max(1, round(test_fraction * len(items)))])
    return [q for i, q in enumerate(items) if i not in held_out], [q for i, q in enumerate(items) if i in held_out]
