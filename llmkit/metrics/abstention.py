"""Abstention metrics: R-Tuning's confidence score and AP, accuracy on the questions a model is
willing to answer, abstention precision/recall/F1 against the true knowledge boundary, and the
risk-coverage curve."""

from __future__ import annotations

import math
from collections.abc import Sequence


def sure_probability(logprob_sure: float, logprob_unsure: float) -> float:
    """P(sure) = p(sure) / (p(sure) + p(unsure)) after "... I am", as a logistic of the log-ratio
    (no underflow when both are tiny)."""
    return 1 / (1 + math.exp(min(logprob_unsure - logprob_sure, 700.0)))


def rtuning_score(confidence: float, p_sure: float) -> float:
    """R-Tuning's ranking score, ½·conf + ½·P(sure) (results/calculate_ap.py)."""
    return 0.5 * confidence + 0.5 * p_sure


def average_precision(correct: Sequence[bool], scores: Sequence[float]) -> float | None:
    """AP = Σ_k (R_k − R_{k−1})·P_k over the ranking by score, correct answers as positives
    (scikit-learn's `average_precision_score`); None when no answer is correct."""
    from sklearn.metrics import average_precision_score

    if not any(correct):
        return None
    return float(average_precision_score([int(c) for c in correct], list(scores)))


def abstention_f1(abstained: Sequence[bool], unknown: Sequence[bool]) -> dict[str, float | None]:
    """Abstention as a detector of unknown questions: precision (of the abstentions, the share
    about unknowns), recall (of the unknowns, the share abstained on) and their F1; None where
    undefined (no abstentions, or no unknown questions)."""
    hits = sum(a and u for a, u in zip(abstained, unknown))
    precision = hits / sum(abstained) if any(abstained) else None
    recall = hits / sum(unknown) if any(unknown) else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def risk_coverage(correct: Sequence[bool], scores: Sequence[float]) -> tuple[list[float], list[float]]:
    """(coverage, risk): answering only the k most confident questions, k = 1..N, covers k/N of
    them at risk 1 − accuracy of those k (ties broken by the order given)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    coverage, risk, right = [], [], 0
    for k, i in enumerate(order, start=1):
        right += bool(correct[i])
        coverage.append(k / len(order))
        risk.append(1 - right / k)
    return coverage, risk
