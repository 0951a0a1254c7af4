"""Skill accuracy: greedy exact match on each skill's items (the world's arithmetic, string
reversal and toy language, or any JSONL of prompt/answer/skill items)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmkit.evals.greedy import accuracy, answer_items
from llmkit.generation import Backend, Progress

MAX_NEW_TOKENS = 24


def evaluate_skills(
    backend: Backend, items: Sequence[dict[str, Any]], progress: Progress | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """accuracy[skill] on the given items (typically the test split) and per-item samples."""
    samples = answer_items(backend, items, MAX_NEW_TOKENS, progress)
    skills = sorted({s["skill"] for s in samples})
    return {"accuracy": {k: accuracy([s for s in samples if s["skill"] == k]) for k in skills}}, samples
