"""Which token of a name carries identity (llmkit/evals/identity.py), on the shipped micro model."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit.data import read_records
from llmkit.evals.identity import subject_patching, world_pairs


@pytest.fixture(scope="module")
def patching(micro_world, micro_model):
    model = AutoModelForCausalLM.from_pretrained(micro_model)
    tokenizer = AutoTokenizer.from_pretrained(micro_model)
    # Demonstration entities: the micro model answers them (it extracts little from biographies alone).
    demonstration = [e for e in read_records(micro_world / "entities.jsonl") if e["demonstration"]]
    pairs = world_pairs(demonstration, "birthplace", 30, 8)
    return subject_patching(model.eval(), tokenizer, pairs, "Question: Where was {} born?\n")


def test_some_subject_token_carries_the_entity(patching, bound):
    rates = patching["switch_rate"]
    assert set(rates) == {"first", "last"} and all(len(r) == 2 for r in rates.values())
    assert patching["pairs"] >= 4 and 0 <= min(min(r) for r in rates.values())
    # Replacing the vector that says who the question is about answers for the source entity.
    bound("identity_switch_rate_max", max(max(r) for r in rates.values()), ">=", 0.5)


def test_the_last_layer_at_the_subject_is_read_by_nothing(patching):
    # Block outputs of the final layer reach only their own position's prediction, so patching
    # them at the subject cannot move the answer: a check that the patch lands where it should.
    assert all(r[-1] <= 1 / patching["pairs"] for r in patching["switch_rate"].values())
