"""What a model knows about a synthetic world: greedy exact match on every probe, by exposure
bucket and form, next to the score a guesser would get on unseen entities; and the same by
population (demonstration or biography-only entities) and phrasing (trained or held-out template)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from llmkit.evals.greedy import accuracy, answer_items
from llmkit.generation import Backend, Progress
from llmkit.world.forget_set import KNOWN_EXPOSURE
from llmkit.world.forms import FORMS, TEMPLATE_KINDS, phrasing

POPULATIONS = {"demonstration": True, "biography_only": False}

# Tokens an answer may need: spelled-out answers are long, letters and True/False short.
MAX_NEW_TOKENS = {"qa": 12, "cloze": 12, "mc": 3, "tf": 3, "char": 40}


def chance_levels(facts: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The best a model that knows nothing about an entity can do per form: always answering
    the attribute's most common value (qa, cloze, char), a fixed letter (mc), one truth value (tf).
    For qa it is averaged over the facts of unseen entities."""
    counts: dict[str, Counter] = {}
    for fact in facts:
        counts.setdefault(fact["attribute"], Counter())[fact["value"]] += 1
    most_common = {a: c.most_common(1)[0][1] / sum(c.values()) for a, c in counts.items()}
    unseen = [f for f in facts if f["exposure"] == 0] or list(facts)
    guess = sum(most_common[f["attribute"]] for f in unseen) / len(unseen)
    return {"qa": guess, "cloze": guess, "char": guess, "mc": 0.25, "tf": 0.5}


def evaluate_knowledge(
    backend: Backend,
    probes: Sequence[dict[str, Any]],
    facts: Sequence[dict[str, Any]],
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics and per-probe samples. Metrics: accuracy[exposure][form] on trained phrasings,
    heldout[exposure][form] on held-out ones, populations[population][template][exposure][form]
    for seen entities, known["<population>/<template>"][form] pooled over the exposures >= 10,
    and chance levels."""
    samples: list[dict[str, Any]] = []
    for form in FORMS:  # one pass per form: each needs its own answer length
        items = [p for p in probes if p["form"] == form]

        def report(done: int, total: int, offset: int = len(samples)) -> None:
            if progress:
                progress(offset + done, len(probes))

        samples += answer_items(backend, items, MAX_NEW_TOKENS[form], report) if items else []

    exposures = sorted({s["exposure"] for s in samples})

    def table(chosen: Sequence[dict[str, Any]], buckets: Sequence[int]) -> dict[str, dict[str, float | None]]:
        return {
            str(e): {form: accuracy([s for s in chosen if s["exposure"] == e and s["form"] == form]) for form in FORMS}
            for e in buckets
        }

    def phrased(template: str) -> list[dict[str, Any]]:
        return [s for s in samples if phrasing(s) == template]

    def pooled(chosen: Sequence[dict[str, Any]]) -> dict[str, float | None]:
        known = [s for s in chosen if s["exposure"] >= KNOWN_EXPOSURE]
        return {form: accuracy([s for s in known if s["form"] == form]) for form in FORMS}

    groups = {
        (population, template): [s for s in phrased(template) if s.get("demonstration") == flag]
        for population, flag in POPULATIONS.items()
        for template in TEMPLATE_KINDS
    }
    populations = {
        population: {
            template: table(groups[population, template], [e for e in exposures if e]) for template in TEMPLATE_KINDS
        }
        for population in POPULATIONS
    }
    metrics = {
        "accuracy": table(phrased("trained"), exposures),
        "heldout": table(phrased("heldout"), exposures),
        "populations": populations,
        "known": {f"{population}/{template}": pooled(chosen) for (population, template), chosen in groups.items()},
        "chance": chance_levels(facts),
        "num_probes": len(samples),
    }
    return metrics, samples
