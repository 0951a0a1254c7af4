"""`llmkit unlearn ga|graddiff|npo|...` and `llmkit data forget-set` from the command line:
outputs, adapters evaluated by `eval ort`, torchrun, and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records

pytestmark = pytest.mark.training  # unlearns: the outcome depends on the CPU's kernels

QUESTIONS = [
    {"prompt": "Question: Where was Bob born? Answer:", "answer": "Lyon"},
    {"prompt": "Alice was born in", "answer": "Paris"},
    {"prompt": "What is the capital of France?", "answer": "Paris"},
    {"prompt": "12 + 34 =", "answer": "46"},
]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def forget_file(tmp_path):
    return write_jsonl(tmp_path / "forget.jsonl", QUESTIONS)


@pytest.fixture
def world_forget_set(micro_world, tmp_path):
    target = next(e for e in read_records(micro_world / "entities.jsonl") if e["exposure"] == 30)["name"]
    out = tmp_path / "forget_set"
    result = llmkit("data", "forget-set", "--world", micro_world, "--target", target, "--out", out)
    assert result.exit_code == 0, result.output
    return target, out


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


def test_full_model_run_writes_a_model_and_its_record(llama_dir, forget_file, tmp_path):
    out = tmp_path / "ga"
    result = llmkit(
        "unlearn",
        "ga",
        "--model",
        llama_dir,
        "--forget",
        forget_file,
        "--out",
        out,
        "--max-steps",
        3,
        "--batch-size",
        2,
        "--lr",
        1e-3,
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == json.loads((out / "unlearn.json").read_text())
    assert record["steps"] == 3 and record["method"] == "ga" and record["forget_records"] == 4
    assert record["final_loss"] < record["first_loss"]  # ascent: the NLL grew
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (tmp_path / "ga.checkpoints").exists()
    original = load_file(llama_dir / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert any(not torch.equal(original[k], trained[k]) for k in original)


def test_lora_writes_an_adapter_that_eval_ort_loads(micro_model, micro_world, world_forget_set, tmp_path, bound):
    target, data = world_forget_set
    adapter = tmp_path / "npo-lora"
    result = llmkit(
        "unlearn",
        "npo",
        "--model",
        micro_model,
        "--forget",
        data / "forget.jsonl",
        "--retain",
        data / "retain.jsonl",
        "--out",
        adapter,
        "--lora",
        "--lora-rank",
        4,
        "--max-steps",
        20,
        "--batch-size",
        5,
        "--lr",
        3e-3,
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    weights = load_file(adapter / "adapter_model.safetensors")
    assert all("lora_A" in k or "lora_B" in k for k in weights)
    assert record["trainable_parameters"] == sum(t.numel() for t in weights.values())

    base_run, adapter_run = tmp_path / "ort-base", tmp_path / "ort-adapter"
    assert (
        llmkit(
            "eval", "ort", "--model", micro_model, "--probes", micro_world, "--targets", target, "-o", base_run
        ).exit_code
        == 0
    )
    result = llmkit(
        "eval",
        "ort",
        "--model",
        adapter,
        "--probes",
        micro_world,
        "--targets",
        target,
        "-o",
        adapter_run,
        "--baseline",
        base_run,
        "--json",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    bound("forget_qa_drop", metrics["drop"]["forget"]["qa"], ">", 0.5)


@pytest.mark.parametrize(
    "recorded, message", [(json.dumps({"method": "npo"}), "different run"), ("{not json", "is damaged")]
)
def test_checkpoints_of_another_run_are_bad_input(recorded, message, llama_dir, forget_file, tmp_path):
    out = tmp_path / "ga"
    checkpoints = tmp_path / "ga.checkpoints"
    checkpoints.mkdir()
    (checkpoints / "llmkit_run.json").write_text(recorded)
    result = llmkit("unlearn", "ga", "--model", llama_dir, "--forget", forget_file, "--out", out, "--max-steps", 1)
    assert_bad_input(result, message, out)


@pytest.mark.parametrize(
    "method, args, records, message",
    [
        ("ga", [], [], "has no records"),
        ("graddiff", [], QUESTIONS, "graddiff needs retain data"),
        ("kl", [], QUESTIONS, "kl needs retain data"),
        ("ga", [], [{"question": "Who?", "reply": "Bob"}], "needs a 'text' string"),
        ("rt", [], [{"text": "Bob was born in Lyon."}], "needs questions"),
        ("npo", ["--beta", "0"], QUESTIONS, "--beta must be positive"),
        ("simnpo", ["--beta", "-1"], QUESTIONS, "--beta must be positive"),
        ("ga", ["--lora", "--lora-target", "no_such_proj"], QUESTIONS, "--lora-target"),
    ],
    ids=[
        "empty-forget",
        "graddiff-no-retain",
        "kl-no-retain",
        "no-text-no-prompt",
        "rt-passages",
        "beta-zero",
        "simnpo-beta-negative",
        "missing-lora-target",
    ],
)
def test_bad_input(method, args, records, message, llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", records)
    out = tmp_path / "out"
    result = llmkit("unlearn", method, "--model", llama_dir, "--forget", forget, "--out", out, "--max-steps", 1, *args)
    assert_bad_input(result, message, out)
    assert not (tmp_path / "out.checkpoints").exists()


def test_forget_set_of_an_unknown_target_is_bad_input(micro_world, tmp_path):
    out = tmp_path / "fs"
    assert_bad_input(
        llmkit("data", "forget-set", "--world", micro_world, "--target", "Nobody Atall", "--out", out),
        "no entity named",
        out,
    )


def test_torchrun_two_processes_match_one_with_the_same_global_batch(llama_dir, forget_file, tmp_path):
    """NPO without retain data averages per-sequence terms, so two processes of 2 give the mean
    one process of 4 gives; DDP averages their gradients. Float32 sums in another order differ by
    rounding only: weights agree within 1e-5."""
    llmkit_script = shutil.which("llmkit", path=str(Path(sys.executable).parent))
    common = [
        "unlearn",
        "npo",
        "--model",
        str(llama_dir),
        "--forget",
        str(forget_file),
        "--max-steps",
        "3",
        "--lr",
        "1e-3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, llmkit_script, *common, "--batch-size", "4", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            llmkit_script,
            *common,
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "two"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert json.loads(double.stdout)["processes"] == 2
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    original = load_file(llama_dir / "model.safetensors")
    assert any(not torch.equal(one[k], original[k]) for k in one)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5), name


@pytest.mark.parametrize(
    "config, message",
    [("{broken", "not valid JSON"), (json.dumps({"peft_type": "LORA"}), "names no base_model_name_or_path")],
    ids=["damaged", "no-base"],
)
def test_a_broken_adapter_directory_is_bad_input(config, message, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(config)
    assert_bad_input(llmkit("model", "inspect", "-m", adapter, "--device", "cpu"), message)
