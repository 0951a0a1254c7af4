"""`llmkit world build | pretrain` from the command line, and hostile input: a learning rate that
is not finite, and concurrent builds of one world."""

import json
import subprocess
import sys

import pytest

from conftest import TINY_RECIPE, assert_bad_input, leftovers, llmkit, ok, one_wins, refused, start_llmkit
from llmkit.data import read_records
from llmkit.world.cache import preset


def test_world_build_writes_the_files(tmp_path):
    out = tmp_path / "world"
    result = llmkit("world", "build", "--out", out, "--entities", 12, "--exposures", "0,4", "--seed", 5, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["metrics"]
    entities = read_records(out / "entities.jsonl")
    married = sum(e["spouse"] is not None for e in entities)
    assert counts["entities.jsonl"] == 12 and counts["facts.jsonl"] == 4 * 12 + married
    assert sorted({e["exposure"] for e in entities}) == [0, 4]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--entities", "0"], "--entities must be at least 1, got 0"),
        (["--exposures", "0,x,3"], "--exposures must be comma-separated non-negative integers"),
        (["--exposures", "-1,3"], "--exposures must be comma-separated non-negative integers"),
    ],
)
def test_world_build_bad_input(args, message, tmp_path):
    out = tmp_path / "world"
    assert_bad_input(llmkit("world", "build", "--out", out, *args), message, out)


def test_world_build_refuses_an_existing_directory(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    assert_bad_input(llmkit("world", "build", "--out", out), "already exists; pass --overwrite")
    assert list(out.iterdir()) == []
    assert llmkit("world", "build", "--out", out, "--entities", 5, "--overwrite").exit_code == 0
    assert (out / "world.json").is_file()


def test_pretrain_on_a_folder_that_is_not_a_world(tmp_path):
    out = tmp_path / "model"
    (tmp_path / "notes").mkdir()
    result = llmkit("world", "pretrain", tmp_path / "notes", "--out", out)
    assert_bad_input(result, "is not a world directory (no world.json); create one with `llmkit world build`", out)


def test_pretrain_on_a_broken_world_json(tmp_path):
    world = tmp_path / "world"
    world.mkdir()
    (world / "world.json").write_text('{"config": {"seed": 0, "colour": "red"}}')
    assert_bad_input(llmkit("world", "pretrain", world, "--out", tmp_path / "m"), "is not a valid world.json")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--family", "gpt2"], "--family must be one of llama, gpt_neox"),
        (["--d-model", "30", "--heads", "4"], "--d-model (30) must be divisible by --heads (4)"),
        (["--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_pretrain_bad_recipe(args, message, micro_world, tmp_path):
    out = tmp_path / "model"
    assert_bad_input(llmkit("world", "pretrain", micro_world, "--out", out, *args), message, out)


def test_pretrain_command_writes_a_model_directory_loadable_without_llmkit(micro_world, tmp_path):
    out = tmp_path / "model"
    args = ["world", "pretrain", micro_world, "--out", out, "--family", "gpt_neox", *TINY_RECIPE, "--steps", 3]
    result = llmkit(*args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["final_loss"] > 0
    card = (out / "README.md").read_text()
    assert f"world seed {preset('micro')[0].seed}" in card and "gpt_neox" in card
    assert_bad_input(llmkit(*args), "already exists; pass --overwrite")
    # A fresh interpreter that never imports llmkit loads and runs it with transformers alone.
    script = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(out)!r}); t = AutoTokenizer.from_pretrained({str(out)!r})\n"
        "ids = t('Question:', return_tensors='pt')\n"
        "print(m.config.model_type, m.generate(**ids, max_new_tokens=2).shape[1] > ids['input_ids'].shape[1])\n"
        "assert 'llmkit' not in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["gpt_neox", "True"]


def test_world_build_into_an_unwritable_place(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "world"
    assert_bad_input(llmkit("world", "build", "--out", out), "choose another output path")


# --- hostile input: one test per defect -------------------------------------------------------


# Hostile input, defects 9, 10: numbers that are not finite, training that diverges.
@pytest.mark.usefixtures("isolated")
def test_a_nan_pretraining_rate_is_refused_and_a_correct_rerun_works(micro_world, tmp_path):
    out = tmp_path / "m"
    common = ("world", "pretrain", micro_world, "--out", out, *TINY_RECIPE, "--steps", 2)
    refused((*common, "--learning-rate", "nan"), "finite", roots=(tmp_path, micro_world))
    ok(llmkit(*common))
    assert (out / "config.json").is_file() and leftovers(tmp_path, "m") == ["m"]


# Hostile input, defect 15: two runs writing the same output at once.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_concurrent_world_builds_one_wins_whole(attempt, tmp_path):
    out = tmp_path / "world"
    winner = one_wins(
        {seed: start_llmkit("world", "build", "--out", out, "--seed", seed, cwd=tmp_path) for seed in (1, 2)}
    )
    assert json.loads((out / "world.json").read_text())["config"]["seed"] == winner
    assert len(read_records(out / "entities.jsonl")) == 200
    assert leftovers(tmp_path, "world") == ["world"]
