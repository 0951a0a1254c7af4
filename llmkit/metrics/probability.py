"""The probability a model gives an answer under teacher forcing."""

from __future__ import annotations

import math
from collections.abc import Sequence


def answer_probability(logprobs: Sequence[float]) -> float:
    """Per-token geometric-mean probability of the answer tokens a_1..a_n after prompt x:
    exp((1/n) Σ_j log p(a_j | x, a_<j)), ORT's (and RWKU's) answer probability. Unlike the
    product, it does not shrink with the answer's length, so forms compare."""
    if not logprobs:
        raise ValueError("an answer of no tokens has no probability")
    return math.exp(sum(logprobs) / len(logprobs))
