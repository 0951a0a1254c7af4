"""The hallucination evaluation (llmkit/evals/hallucination.py): AUROC, and the summary of scored
answers."""

import pytest

from llmkit.evals.hallucination import auroc, summarize


@pytest.mark.training
def test_auroc_is_none_when_every_answer_is_right():
    assert auroc([False, False], [0.1, 0.2]) is None
    assert auroc([True, False], [0.9, 0.1]) == 1.0
    metrics = summarize(
        [
            {"eigenscore": -1.0, "correct": False, "sample_accuracy": 0.0},
            {"eigenscore": -5.0, "correct": True, "sample_accuracy": 1.0},
        ],
        True,
    )
    assert metrics["auroc"] == 1.0 and metrics["accuracy"] == 0.5
