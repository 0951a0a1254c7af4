"""Greedy answers to prompt -> answer items, scored by exact match: the shared core of the
world's knowledge and skill evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmkit.generation import Backend, GenerationParams, Progress
from llmkit.metrics.text import exact_match


def answer_items(
    backend: Backend, items: Sequence[dict[str, Any]], max_new_tokens: int, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Each item (with "prompt" and "answer") plus "generation" and "correct"; generation is
    greedy and stops at the first newline."""
    params = GenerationParams(max_new_tokens=max_new_tokens, stop=("\n",))
    generations = backend.generate([item["prompt"] for item in items], params, progress)
    return [
        {**item, "generation": g.texts[0].strip(), "correct": exact_match(g.texts[0], item["answer"])}
        for item, g in zip(items, generations)
    ]


def accuracy(samples: Sequence[dict[str, Any]]) -> float | None:
    return sum(s["correct"] for s in samples) / len(samples) if samples else None
