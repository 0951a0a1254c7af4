"""The hallucination evaluation (llmkit/evals/hallucination.py): AUROC, and the summary of scored
answers."""

import pytest

from llmkit.data import write_jsonl
from llmkit.evals.hallucination import auroc, summarize, world_items


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


def test_a_first_edition_world_reads_as_trained_phrasings(tmp_path):
    # Its probes carry no `template`: every one was a trained phrasing, and none is dropped or fails.
    probes = [
        {"prompt": "Question: Where was A born?\nAnswer:", "answer": "X", "form": "qa", "exposure": 30},
        {"prompt": "Fill in the blank: A was born in ___.\nAnswer:", "answer": "X", "form": "cloze", "exposure": 30},
        {"prompt": "Question: Where was B born?\nAnswer:", "answer": "Y", "form": "qa", "exposure": 0},
    ]
    write_jsonl(tmp_path / "probes.jsonl", probes)
    items = world_items(tmp_path)
    assert [(i["prompt"], i["group"]) for i in items] == [
        (probes[0]["prompt"], "exposure 30"),
        (probes[2]["prompt"], "exposure 0"),
    ]
