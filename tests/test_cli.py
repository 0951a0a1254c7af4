import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig

from conftest import PROMPTS, assert_bad_input, llmkit, runner
from llmkit.commands.cli import app
from tiny import build_tokenizer


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


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


def test_model_inspect_reports_the_map(model_dirs):
    result = llmkit("model", "inspect", "-m", model_dirs["gpt2"], "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["family"] == "gpt2" and report["num_layers"] == 2
    points = {p["point"]: p for p in report["points"]}
    assert points["mlp_key"]["module"] == "transformer.h.{i}.mlp.c_proj"
    assert points["mlp_out_weight"]["shape"] == [64, 128]
    assert points["resid_out"]["shape"] == ["batch", "seq", 64]
    table = llmkit("model", "inspect", "-m", model_dirs["llama"], "--device", "cpu")
    assert table.exit_code == 0 and "model.layers.{i}.mlp.gate_proj" in table.stdout


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


def test_model_path_that_does_not_exist(prompts_file, tmp_path):
    out = tmp_path / "run"
    result = llmkit("generate", "-m", tmp_path / "missing", "-i", prompts_file, "-o", out)
    assert_bad_input(result, "does not exist", out)
    assert_bad_input(llmkit("model", "inspect", "-m", "./missing-model"), "model path ./missing-model does not exist")


def test_directory_that_is_not_a_model(prompts_file, tmp_path):
    out = tmp_path / "run"
    result = llmkit("generate", "-m", prompts_file.parent, "-i", prompts_file, "-o", out)
    assert_bad_input(result, "is not a model directory (no config.json in it)", out)


def test_model_inspect_on_an_unsupported_family(tmp_path):
    config = OPTConfig(
        hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, vocab_size=409, word_embed_proj_dim=16
    )
    model_dir = tmp_path / "opt"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    result = llmkit("model", "inspect", "-m", model_dir, "--device", "cpu")
    assert_bad_input(result, "model family 'opt' is not supported by llmkit's hooks; supported families: gemma")


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


def test_debug_shows_the_traceback(prompts_file, tmp_path):
    result = llmkit("generate", "-m", tmp_path / "missing", "-i", prompts_file, "--debug")
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


def test_console_script_runs_in_a_fresh_process(llama_dir, prompts_file):
    """The installed `llmkit` entry point, end to end, as a user's shell runs it."""
    exe = shutil.which("llmkit", path=os.path.dirname(sys.executable)) or "llmkit"
    ok = subprocess.run(
        [exe, "generate", "-m", llama_dir, "-i", prompts_file, "--max-new-tokens", "3"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == len(PROMPTS)
    if importlib.util.find_spec("vllm") is None:
        missing = subprocess.run(
            [exe, "generate", "-m", llama_dir, "-i", prompts_file, "--backend", "vllm"], capture_output=True, text=True
        )
        assert missing.returncode == 2
        assert missing.stderr.strip().splitlines() == [
            "error: the vllm backend needs vllm, which is not installed: pip install 'llmkit[vllm]'"
        ]
