"""`llmkit train sft | send` from the command line: SeND on the HELM files as shipped, the
EigenScore of held-out prompts logged each epoch, torchrun, bad inputs, and eval prompts that are
not UTF-8."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import SEND_TEXTS as TEXTS
from conftest import assert_bad_input, leftovers, llmkit, refused

HELM = Path(__file__).parent / "data" / "send_helm"  # 20-record slices of SeND's files (tests/data/README.md)


@pytest.mark.training
def test_train_send_reads_the_helm_files_as_shipped(llama_dir, tmp_path):
    helm, wiki = HELM / "helm_validate.jsonl", HELM / "wiki_test.json"
    common = (
        "--model",
        llama_dir,
        "--epochs",
        2,
        "--window",
        2,
        "--drop-epochs",
        2,
        "--track-fraction",
        0.2,
        "--eval-samples",
        0,
        "--max-length",
        48,
        "--json",
    )
    result = llmkit("train", "send", "--data", helm, "--out", tmp_path / "helm", *common)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["texts"] == {"train": 14, "tracking": 4, "test": 2}
    assert record["selections"][0]["epoch"] == 2 and len(record["selections"][0]["indices"]) == int(0.2 * 64)
    assert (tmp_path / "helm" / "model.safetensors").is_file() and (tmp_path / "helm" / "train.json").is_file()
    result = llmkit("train", "send", "--data", wiki, "--text-field", "sentences", "--out", tmp_path / "wiki", *common)
    assert result.exit_code == 0, result.output


@pytest.mark.training
def test_train_logs_the_eigenscore_of_held_out_prompts_each_epoch(llama_dir, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    result = llmkit(
        "train",
        "sft",
        "--model",
        llama_dir,
        "--data",
        data,
        "--out",
        tmp_path / "sft",
        "--epochs",
        2,
        "--eval-samples",
        3,
        "--test-fraction",
        0.2,
        "--json",
    )
    assert result.exit_code == 0, result.output
    evaluations = json.loads(result.stdout)["evaluations"]
    assert [e["epoch"] for e in evaluations] == [1, 2]
    assert all(e["evaluation"]["num_prompts"] == 4 and e["evaluation"]["eigenscore"]["mean"] < 10 for e in evaluations)


@pytest.mark.training
def test_torchrun_selects_the_same_indices_on_every_process(llama_dir, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    llmkit_script = shutil.which("llmkit", path=str(Path(sys.executable).parent))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            llmkit_script,
            "train",
            "send",
            "--model",
            str(llama_dir),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "two"),
            "--epochs",
            "2",
            "--window",
            "2",
            "--drop-epochs",
            "2",
            "--eval-samples",
            "0",
            "--batch-size",
            "2",
            "--track-fraction",
            "0.2",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads(run.stdout)
    assert record["processes"] == 2
    # Each process compared its selection with every other's (all_gather); a mismatch fails the run.
    assert record["selections"] and all(s["processes_agree"] for s in record["selections"])
    assert load_file(tmp_path / "two" / "model.safetensors")


@pytest.mark.training
@pytest.mark.parametrize(
    "args, message",
    [
        (("--drop-fraction", 0), "--drop-fraction must be in (0, 1)"),
        (("--drop-fraction", 1), "--drop-fraction must be in (0, 1)"),
        (("--track-fraction", 0.01), "leaves no tracking samples"),
        (("--eval-samples", 1), "--eval-samples must be 0"),
        (("--window", 1), "--window must be at least 2"),
        (("--eval-limit", -1), "--eval-limit at least 0"),
    ],
    ids=["fraction-0", "fraction-1", "no-tracking", "one-sample", "window", "eval-limit"],
)
def test_bad_send_inputs_are_one_line(args, message, llama_dir, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "out"
    assert_bad_input(llmkit("train", "send", "--model", llama_dir, "--data", data, "--out", out, *args), message, out)


@pytest.mark.training
def test_texts_missing_their_field_are_bad_input(llama_dir, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text(json.dumps({"body": "x"}) + "\n")
    out = tmp_path / "out"
    assert_bad_input(llmkit("train", "sft", "--model", llama_dir, "--data", data, "--out", out), "--text-field", out)


# --- hostile input: one test per defect -------------------------------------------------------


# Hostile input, defect 1: bytes that are not UTF-8.
@pytest.mark.usefixtures("isolated")
def test_non_utf8_eval_prompts_are_one_line(llama_dir, texts, binary_jsonl, tmp_path):
    args = (
        "train",
        "send",
        "-m",
        llama_dir,
        "--data",
        texts,
        "--eval-prompts",
        binary_jsonl,
        "--out",
        tmp_path / "s",
        "--epochs",
        1,
        "--window",
        2,
        "--drop-epochs",
        1,
        "--eval-samples",
        2,
        "--track-fraction",
        0.2,
    )
    refused(args, "UTF-8", roots=(tmp_path, llama_dir))
    assert leftovers(tmp_path, "s") == []
