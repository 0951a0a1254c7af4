"""`llmkit generate` from the command line: results and samples, JSON Lines on stdout, prompts
from stdin, sampling options, a KSD gate applied with `--intervention`, and bad and hostile input:
prompts that are not UTF-8 or start with a byte-order mark, empty prompts, damaged weights,
prompts past the model's context, outputs it must not write, a model that is neither here nor on
a reachable hub."""

import json
import os
import shutil
import subprocess
import time

import pytest
import safetensors.torch
import torch

from conftest import (
    BINARY,
    PROMPTS,
    REFUSAL,
    assert_bad_input,
    assert_process_refused,
    leftovers,
    llmkit,
    llmkit_env,
    ok,
    refused,
    run_llmkit,
    runner,
    write_jsonl,
)
from llmkit.commands.cli import app


def test_generate_writes_results_and_samples(llama_dir, prompts_file, tmp_path):
    out = tmp_path / "run"
    result = llmkit("generate", "-m", llama_dir, "-i", prompts_file, "-o", out, "--max-new-tokens", 6, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "results.json").read_text())
    assert printed["metrics"]["num_prompts"] == len(PROMPTS) and printed["config"]["max_new_tokens"] == 6
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == list(range(len(PROMPTS)))
    assert all(len(s["generations"]) == 1 and s["generations"][0] for s in samples)


def test_generate_without_output_path_streams_jsonl_to_stdout(llama_dir, prompts_file):
    result = llmkit("generate", "-m", llama_dir, "-i", prompts_file, "--max-new-tokens", 4, "--limit", 2)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["prompt"] for line in lines] == PROMPTS[:2]
    assert "num_prompts" in result.stderr  # the summary table stays off stdout


def test_generate_reads_prompts_from_stdin(llama_dir):
    lines = "".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3])
    result = runner.invoke(app, ["generate", "-m", str(llama_dir), "-i", "-", "--max-new-tokens", "3"], input=lines)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["prompt"] for line in result.stdout.splitlines()] == PROMPTS[:3]


def test_sampling_options_reach_the_backend(llama_dir, prompts_file):
    args = ["generate", "-m", llama_dir, "-i", prompts_file, "--limit", 1, "--max-new-tokens", 8]
    sampled = llmkit(*args, "--temperature", 1.0, "--num-samples", 3, "--seed", 3)
    assert sampled.exit_code == 0, sampled.output
    [line] = [json.loads(line) for line in sampled.stdout.splitlines()]
    assert len(line["generations"]) == 3
    assert llmkit(*args, "--temperature", 1.0, "--num-samples", 3, "--seed", 3).stdout == sampled.stdout


@pytest.mark.training
def test_generate_with_a_gate_answers_refused_prompts_with_the_refusal(micro_model, reversal_gate, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": "Reverse: a b c d =>"}, {"prompt": "Question: Where was"}])
    result = llmkit(
        "generate", "-m", micro_model, "-i", prompts, "--intervention", reversal_gate, "--max-new-tokens", 8
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["generations"] == [REFUSAL] and lines[1]["generations"] != [REFUSAL]


# --- bad input: one line, exit 2, nothing written ---------------------------------------------


def test_directory_that_is_not_a_model(prompts_file, tmp_path):
    out = tmp_path / "run"
    result = llmkit("generate", "-m", prompts_file.parent, "-i", prompts_file, "-o", out)
    assert_bad_input(result, "is not a model directory (no config.json in it)", out)


def test_broken_jsonl_line(llama_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": "b",}\n')
    out = tmp_path / "run"
    assert_bad_input(
        llmkit("generate", "-m", llama_dir, "-i", prompts, "-o", out), "prompts.jsonl line 2: not valid JSON", out
    )


def test_missing_prompt_field(llama_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    out = tmp_path / "run"
    result = llmkit("generate", "-m", llama_dir, "-i", prompts, "-o", out)
    assert_bad_input(result, "prompts.jsonl line 2: missing required field 'prompt'", out)


def test_empty_prompts_file(llama_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("")
    out = tmp_path / "run"
    assert_bad_input(llmkit("generate", "-m", llama_dir, "-i", prompts, "-o", out), "has no records", out)


def test_existing_output_without_overwrite(llama_dir, prompts_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    result = llmkit("generate", "-m", llama_dir, "-i", prompts_file, "-o", out)
    assert_bad_input(result, "already exists; pass --overwrite to replace it")
    assert (out / "results.json").read_text() == "{}"
    again = llmkit("generate", "-m", llama_dir, "-i", prompts_file, "-o", out, "--overwrite", "--max-new-tokens", 2)
    assert again.exit_code == 0 and json.loads((out / "results.json").read_text())["command"] == "generate"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer or 'auto', got '0'"),
        (["--num-samples", "2"], "several samples per prompt need sampling"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--json"], "--json needs --output-path"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
    ],
)
def test_bad_options(args, message, llama_dir, prompts_file):
    assert_bad_input(llmkit("generate", "-m", llama_dir, "-i", prompts_file, *args), message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(llama_dir, prompts_file):
    assert_bad_input(
        llmkit("generate", "-m", llama_dir, "-i", prompts_file, "--device", "cuda"), "CUDA is not available"
    )


def test_vllm_backend_missing_is_one_line(llama_dir, prompts_file, monkeypatch):
    monkeypatch.setattr("llmkit.generation.vllm_available", lambda: False)
    result = llmkit("generate", "-m", llama_dir, "-i", prompts_file, "--backend", "vllm")
    assert_bad_input(result, "pip install 'llmkit[vllm]'")


# --- hostile input: one test per defect -------------------------------------------------------


# Hostile input, defect 1: bytes that are not UTF-8.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    "name, content",
    [
        ("x.jsonl", BINARY),
        ("x.json", BINARY),
        ("x.csv", BINARY),
        ("latin1.csv", "prompt\ncafé crème\n".encode("latin-1")),
    ],
    ids=["binary-jsonl", "binary-json", "binary-csv", "latin1-csv"],
)
def test_non_utf8_prompts_are_one_line(name, content, llama_dir, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    refused(
        ("generate", "-m", llama_dir, "-i", path, "-o", tmp_path / "run"), "UTF-8", name, roots=(tmp_path, llama_dir)
    )


# Hostile input, defect 1: bytes that are not UTF-8.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_byte_order_mark_is_legal(suffix, llama_dir, tmp_path):
    text = {
        ".jsonl": '{"prompt": "Alice was born in"}\n',
        ".json": '[{"prompt": "Alice was born in"}]',
        ".csv": "prompt\nAlice was born in\n",
    }[suffix]
    path = tmp_path / f"bom{suffix}"
    path.write_bytes("\ufeff".encode("utf-8") + text.encode("utf-8"))
    result = ok(llmkit("generate", "-m", llama_dir, "-i", path, "--max-new-tokens", 2))
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["prompt"] == "Alice was born in" and "\ufeffprompt" not in line


# Hostile input, defect 2: an empty prompt, with a tokenizer that adds no BOS.
@pytest.mark.usefixtures("isolated")
def test_tiny_tokenizers_add_bos_but_the_no_bos_one_does_not(model_dirs, no_bos_dir):
    from transformers import AutoTokenizer

    assert all(AutoTokenizer.from_pretrained(path)("")["input_ids"] for path in model_dirs.values())
    assert AutoTokenizer.from_pretrained(no_bos_dir)("")["input_ids"] == []


# Hostile input, defect 2: an empty prompt, with a tokenizer that adds no BOS.
@pytest.mark.usefixtures("isolated")
def test_an_empty_prompt_is_one_line_for_generate(no_bos_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Alice"}, {"prompt": ""}])
    refused(
        ("generate", "-m", no_bos_dir, "-i", data, "-o", tmp_path / "run", "--max-new-tokens", 2),
        "empty",
        roots=(tmp_path, no_bos_dir),
    )


@pytest.fixture
def llama_copy(llama_dir, tmp_path):
    path = tmp_path / "model-copy"
    shutil.copytree(llama_dir, path)
    return path


# Hostile input, defects 3, 4: damaged weights.
@pytest.mark.usefixtures("isolated")
def test_truncated_weights_are_one_line(llama_copy, prompts, tmp_path):
    weights = llama_copy / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(min(100_000, weights.stat().st_size // 2))
    refused(("generate", "-m", llama_copy, "-i", prompts, "-o", tmp_path / "run"), str(llama_copy), roots=(tmp_path,))


# Hostile input, defects 3, 4: damaged weights.
@pytest.mark.usefixtures("isolated")
def test_a_missing_tensor_is_refused_by_name(llama_copy, prompts, tmp_path):
    weights = safetensors.torch.load_file(llama_copy / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    del weights[name]
    safetensors.torch.save_file(weights, llama_copy / "model.safetensors", metadata={"format": "pt"})
    refused(("generate", "-m", llama_copy, "-i", prompts, "-o", tmp_path / "run"), "missing", name, roots=(tmp_path,))


# Hostile input, defects 3, 4: damaged weights.
@pytest.mark.usefixtures("isolated")
def test_an_unexpected_tensor_is_refused(llama_copy, prompts, tmp_path):
    weights = safetensors.torch.load_file(llama_copy / "model.safetensors")
    weights["model.layers.1.mlp.surprise.weight"] = torch.zeros(4, 4)
    safetensors.torch.save_file(weights, llama_copy / "model.safetensors", metadata={"format": "pt"})
    refused(("generate", "-m", llama_copy, "-i", prompts, "-o", tmp_path / "run"), "unexpected", roots=(tmp_path,))


# Hostile input, defect 5: longer than the model's context.
@pytest.mark.usefixtures("isolated")
def test_a_prompt_longer_than_the_context_is_one_line(short_context_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one two three four five six seven " * 20}])
    refused(
        ("generate", "-m", short_context_dir, "-i", data, "-o", tmp_path / "run", "--max-new-tokens", 4),
        "context",
        roots=(tmp_path, short_context_dir),
    )


# Hostile input, defect 5: longer than the model's context.
@pytest.mark.usefixtures("isolated")
def test_generating_past_the_context_is_one_line(short_context_dir, prompts, tmp_path):
    refused(
        ("generate", "-m", short_context_dir, "-i", prompts, "-o", tmp_path / "run", "--max-new-tokens", 100),
        "context",
        roots=(tmp_path, short_context_dir),
    )


# Hostile input, defect 5: longer than the model's context.
@pytest.mark.usefixtures("isolated")
def test_an_absurd_max_new_tokens_is_one_line_at_once(llama_dir, prompts, tmp_path):
    started = time.monotonic()
    proc = run_llmkit(
        "generate",
        "-m",
        llama_dir,
        "-i",
        prompts,
        "--max-new-tokens",
        "100000000000000000000000",
        "-o",
        tmp_path / "run",
        timeout=60,
    )
    assert_process_refused(proc)
    assert time.monotonic() - started < 60 and leftovers(tmp_path, "run") == []


# Hostile input, defects 7, 8: where the output goes.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("output", [".", ".."])
def test_the_current_directory_is_never_the_output(output, llama_dir, prompts, tmp_path, monkeypatch):
    work = tmp_path / "d"
    work.mkdir()
    (work / "results.json").write_text("{}")  # looks like an llmkit run: only the cwd rule protects it
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    args = (
        "generate",
        "-m",
        os.path.relpath(llama_dir, work),
        "-i",
        "../prompts.jsonl",
        "-o",
        output,
        "--overwrite",
        "--max-new-tokens",
        2,
    )
    refused(args, roots=(tmp_path, llama_dir))
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt", "results.json"]


STARTUP_SLACK_S = 0
"""Seconds added to the 20 s budget for the interpreter's start (imports); 0 once it starts in ~1 s."""


HUB_SETTINGS = {
    "offline": {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    "unreachable": {"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"},
}


# Hostile input, defect 17: a model or data set that is neither here nor reachable.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("hub", list(HUB_SETTINGS))
@pytest.mark.parametrize("what", ["model", "dataset"])
def test_a_name_not_here_and_no_hub_is_one_line_at_once(what, hub, llama_dir, prompts, tmp_path):
    env = llmkit_env(HF_HOME=str(tmp_path / "hf-home"), **HUB_SETTINGS[hub])
    work = tmp_path / "work"
    work.mkdir()
    if what == "model":
        args, name = ("generate", "-m", "not/here", "-i", prompts, "-o", work / "run"), "not/here"
    else:
        args, name = (
            ("generate", "-m", llama_dir, "-i", "someuser/somedataset", "-o", work / "run"),
            "someuser/somedataset",
        )
    started = time.monotonic()
    try:
        proc = run_llmkit(*args, env=env, cwd=work, timeout=20 + STARTUP_SLACK_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"llmkit generate {name} with the hub {hub} did not answer within {20 + STARTUP_SLACK_S} s")
    assert_process_refused(proc, name)
    assert time.monotonic() - started < 20 + STARTUP_SLACK_S
    assert list(work.iterdir()) == []


# Hostile input: unfriendly, but not malicious.
@pytest.mark.usefixtures("isolated")
def test_overwrite_never_replaces_a_directory_of_the_users(llama_dir, prompts, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    refused(
        ("generate", "-m", llama_dir, "-i", prompts, "-o", mine, "--overwrite", "--max-new-tokens", 2),
        roots=(tmp_path, llama_dir),
    )
    assert (mine / "notes.txt").read_text() == "my notes"


# Hostile input: unfriendly, but not malicious.
@pytest.mark.usefixtures("isolated")
def test_the_output_may_not_be_the_model(llama_copy, prompts, tmp_path):
    refused(
        ("generate", "-m", llama_copy, "-i", prompts, "-o", llama_copy, "--overwrite", "--max-new-tokens", 2),
        roots=(tmp_path,),
    )
    assert (llama_copy / "model.safetensors").is_file() and (llama_copy / "config.json").is_file()


# Hostile input: unfriendly, but not malicious.
@pytest.mark.usefixtures("isolated")
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes through any permission")
def test_an_unwritable_parent_is_refused_before_any_work(llama_dir, prompts, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(
            ("generate", "-m", llama_dir, "-i", prompts, "-o", locked / "run"),
            "permission",
            roots=(tmp_path, llama_dir),
        )
    finally:
        locked.chmod(0o700)


# Hostile input: unfriendly, but not malicious.
@pytest.mark.usefixtures("isolated")
def test_an_empty_stop_string_is_refused(llama_dir, prompts, tmp_path):
    refused(
        ("generate", "-m", llama_dir, "-i", prompts, "--stop", "", "--max-new-tokens", 2),
        "--stop",
        roots=(tmp_path, llama_dir),
    )


# Hostile input: unfriendly, but not malicious.
@pytest.mark.usefixtures("isolated")
def test_an_error_names_the_flag_not_the_parameter(llama_dir, prompts, tmp_path):
    line = refused(("generate", "-m", llama_dir, "-i", prompts, "--top-p", 2), "--top-p", roots=(tmp_path, llama_dir))
    assert "top_p" not in line
