"""`llmkit data forget-set | skill-set` from the command line on the micro world: what each set
holds, and a target that is not in the world."""

import json

import pytest

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records

pytestmark = pytest.mark.training  # the sets the unlearning tests train on, marked as those tests are


def test_forget_set_holds_the_target_facts_and_other_entities(world_forget_set, micro_world):
    target, out = world_forget_set
    forget = read_records(out / "forget.jsonl")
    retain = read_records(out / "retain.jsonl")
    summary = json.loads((out / "forget_set.json").read_text())
    assert len(forget) == 5 and all(target in r["prompt"] for r in forget)
    assert retain and not any(target in r["prompt"] for r in retain)
    assert summary["retain_records"] == len(retain) and target not in summary["retain_entities"]


def test_bio_forget_set_is_text_passages(micro_world, tmp_path):
    target = read_records(micro_world / "entities.jsonl")[0]["name"]
    result = llmkit(
        "data", "forget-set", "--world", micro_world, "--target", target, "--form", "bio", "--out", tmp_path / "bio"
    )
    assert result.exit_code == 0, result.output
    forget = read_records(tmp_path / "bio" / "forget.jsonl")
    assert forget and all(target in r["text"] and "prompt" not in r for r in forget)


def test_forget_set_of_an_unknown_target_is_bad_input(micro_world, tmp_path):
    out = tmp_path / "fs"
    assert_bad_input(
        llmkit("data", "forget-set", "--world", micro_world, "--target", "Nobody Atall", "--out", out),
        "no entity named",
        out,
    )


def test_skill_set_splits_one_skills_training_items_from_the_others(micro_world, skill_sets):
    forget = read_records(skill_sets["reversal"] / "forget.jsonl")
    retain = read_records(skill_sets["reversal"] / "retain.jsonl")
    train = [i for i in read_records(micro_world / "skills.jsonl") if i["split"] == "train"]
    assert {r["skill"] for r in forget} == {"reversal"} and "reversal" not in {r["skill"] for r in retain}
    assert len(forget) + len(retain) == len(train)
    assert not {r["prompt"] for r in forget} & {
        i["prompt"] for i in read_records(micro_world / "skills.jsonl") if i["split"] == "test"
    }
