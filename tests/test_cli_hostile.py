"""Hostile input, one test per defect: bytes that are not UTF-8, empty prompts, damaged and
mismatched weights, prompts longer than the model's context, damaged baselines, the current
directory as the output, names too long for the file system, non-finite numbers, diverging
training, damaged ROCR files and caches, concurrent runs on one output, usage errors, an
unreachable hub.

Every refusal is the bad-input contract of the README: exit code 2, exactly one stderr line
starting `error: `, no traceback, nothing on stdout, and the file system exactly as it was (no
output, no `.NAME.tmp-*` staging directory, no `NAME.checkpoints`, nothing replaced)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from conftest import (
    TINY_RECIPE,
    assert_process_refused,
    assert_refused,
    leftovers,
    llmkit,
    llmkit_env,
    run_llmkit,
    start_llmkit,
    tree_snapshot,
)
from llmkit.data import read_records
from test_ort_probes import probe, write_target
from tiny import CORPUS

BINARY = b"\xff\xfe\x00bad\x80\n"
"""Not UTF-8 anywhere: a UTF-16 byte-order mark, a NUL, a stray continuation byte."""

TEXTS = [f"{line} ({i})" for i, line in enumerate(CORPUS[:6] * 4)]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def refused(args, *needles, roots):
    """Run `llmkit *args` in-process and assert the bad-input contract, with nothing under
    `roots` written, replaced or removed."""
    before = tree_snapshot(*roots)
    return assert_refused(llmkit(*args), *needles, before=before, roots=roots)


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test works in its tmp_path (so a relative write would show in the snapshot), with
    llmkit's cache there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "llmkit-cache"))


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Alice was born in"}, {"prompt": "12 +"}])


@pytest.fixture
def texts(tmp_path):
    return write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def binary_jsonl(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(BINARY)
    return path


@pytest.fixture
def llama_copy(llama_dir, tmp_path):
    path = tmp_path / "model-copy"
    shutil.copytree(llama_dir, path)
    return path


def rocr_args(model, out, corpus, cache, *extra):
    return (
        "unlearn",
        "rocr",
        "-m",
        model,
        "--target",
        "Alice",
        "--redirect",
        "Bob",
        "--out",
        out,
        "--layers",
        "0,1",
        "--stats-corpus",
        corpus,
        "--stats-cache",
        cache,
        "--device",
        "cpu",
        *extra,
    )


# --- 1. bytes that are not UTF-8 ------------------------------------------------------------------


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


def test_non_utf8_forget_set_is_one_line(llama_dir, binary_jsonl, tmp_path):
    refused(
        ("unlearn", "ga", "-m", llama_dir, "--forget", binary_jsonl, "--out", tmp_path / "g", "--max-steps", 1),
        "UTF-8",
        roots=(tmp_path, llama_dir),
    )
    assert leftovers(tmp_path, "g") == []


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


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_non_utf8_stats_corpus_is_one_line(suffix, llama_dir, tmp_path):
    corpus = tmp_path / f"corpus{suffix}"
    corpus.write_bytes(BINARY * 3)
    refused(rocr_args(llama_dir, tmp_path / "edited", corpus, tmp_path / "stats"), "UTF-8", roots=(tmp_path, llama_dir))


def test_a_world_with_garbage_probes_is_one_line(micro_model, micro_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(micro_world, world)
    (world / "probes.jsonl").write_bytes(BINARY * 50)
    target = read_records(world / "entities.jsonl")[0]["id"]
    refused(
        ("eval", "ort", "-m", micro_model, "--probes", world, "--targets", target, "-o", tmp_path / "run"),
        "UTF-8",
        roots=(tmp_path, micro_model),
    )


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


# --- 2. an empty prompt, with a tokenizer that adds no BOS -----------------------------------------


def test_tiny_tokenizers_add_bos_but_the_no_bos_one_does_not(model_dirs, no_bos_dir):
    from transformers import AutoTokenizer

    assert all(AutoTokenizer.from_pretrained(path)("")["input_ids"] for path in model_dirs.values())
    assert AutoTokenizer.from_pretrained(no_bos_dir)("")["input_ids"] == []


def test_an_empty_prompt_is_one_line_for_generate(no_bos_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Alice"}, {"prompt": ""}])
    refused(
        ("generate", "-m", no_bos_dir, "-i", data, "-o", tmp_path / "run", "--max-new-tokens", 2),
        "empty",
        roots=(tmp_path, no_bos_dir),
    )


def test_an_empty_prompt_is_one_line_for_eval_skills(no_bos_dir, tmp_path):
    items = write_jsonl(tmp_path / "items.jsonl", [{"prompt": "12 +", "answer": "34"}, {"prompt": "", "answer": "x"}])
    refused(
        ("eval", "skills", "-m", no_bos_dir, "--skill", f"s={items}", "-o", tmp_path / "run"),
        "empty",
        roots=(tmp_path, no_bos_dir),
    )


def test_an_empty_query_is_one_line_for_ksd(no_bos_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"prompt": "12 +", "answer": "34"}, {"prompt": "", "answer": "x"}])
    refused(
        ("unlearn", "ksd", "-m", no_bos_dir, "--forget", forget, "--out", tmp_path / "k", "--device", "cpu"),
        "empty",
        roots=(tmp_path, no_bos_dir),
    )


def test_an_empty_forget_text_leaves_no_checkpoints(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": "Bob was born in Lyon."}, {"text": ""}])
    refused(
        ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", tmp_path / "g", "--max-steps", 1),
        "empty",
        roots=(tmp_path, llama_dir),
    )
    assert leftovers(tmp_path, "g") == []


# --- 3, 4. damaged weights ----------------------------------------------------------------------------


def test_truncated_weights_are_one_line(llama_copy, prompts, tmp_path):
    weights = llama_copy / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.truncate(min(100_000, weights.stat().st_size // 2))
    refused(("generate", "-m", llama_copy, "-i", prompts, "-o", tmp_path / "run"), str(llama_copy), roots=(tmp_path,))


def test_a_missing_tensor_is_refused_by_name(llama_copy, prompts, tmp_path):
    weights = safetensors.torch.load_file(llama_copy / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    del weights[name]
    safetensors.torch.save_file(weights, llama_copy / "model.safetensors", metadata={"format": "pt"})
    refused(("generate", "-m", llama_copy, "-i", prompts, "-o", tmp_path / "run"), "missing", name, roots=(tmp_path,))


def test_an_unexpected_tensor_is_refused(llama_copy, prompts, tmp_path):
    weights = safetensors.torch.load_file(llama_copy / "model.safetensors")
    weights["model.layers.1.mlp.surprise.weight"] = torch.zeros(4, 4)
    safetensors.torch.save_file(weights, llama_copy / "model.safetensors", metadata={"format": "pt"})
    refused(("generate", "-m", llama_copy, "-i", prompts, "-o", tmp_path / "run"), "unexpected", roots=(tmp_path,))


# --- 5. longer than the model's context -------------------------------------------------------------


def test_a_prompt_longer_than_the_context_is_one_line(short_context_dir, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "one two three four five six seven " * 20}])
    refused(
        ("generate", "-m", short_context_dir, "-i", data, "-o", tmp_path / "run", "--max-new-tokens", 4),
        "context",
        roots=(tmp_path, short_context_dir),
    )


def test_generating_past_the_context_is_one_line(short_context_dir, prompts, tmp_path):
    refused(
        ("generate", "-m", short_context_dir, "-i", prompts, "-o", tmp_path / "run", "--max-new-tokens", 100),
        "context",
        roots=(tmp_path, short_context_dir),
    )


def test_a_probe_longer_than_the_context_is_one_line(short_context_dir, tmp_path):
    root = tmp_path / "ort"
    write_target(
        root,
        1,
        "Ada Lovelace",
        {
            "forget_level2": [
                probe(
                    "What did Ada Lovelace write in the year she was born? " * 12,
                    "a program",
                    "Ada Lovelace",
                    "qa",
                    "2",
                )
            ]
        },
    )
    refused(
        ("eval", "ort", "-m", short_context_dir, "--probes", root, "-o", tmp_path / "run", "--forms", "qa"),
        "context",
        roots=(tmp_path, short_context_dir),
    )


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


# --- 6. damaged baselines -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baselines(micro_model, micro_world, tmp_path_factory):
    """Real baseline runs of `eval ort` and `eval skills`, and the arguments that compare with them."""
    root = tmp_path_factory.mktemp("baselines")
    target = read_records(micro_world / "entities.jsonl")[0]["id"]
    items = write_jsonl(
        root / "items.jsonl", [{"prompt": "Reverse: a b =>", "answer": "b a"}, {"prompt": "12 +", "answer": "34"}]
    )
    commands = {
        "ort": (
            "eval",
            "ort",
            "-m",
            micro_model,
            "--probes",
            micro_world,
            "--targets",
            target,
            "--forms",
            "qa",
            "--limit",
            1,
        ),
        "skills": ("eval", "skills", "-m", micro_model, "--skill", f"s={items}"),
    }
    for name, args in commands.items():
        ok(llmkit(*args, "-o", root / name))
    return root, commands


def _strings(metrics):
    return {k: _strings(v) if isinstance(v, dict) else str(v) for k, v in metrics.items()}


@pytest.mark.parametrize("command", ["ort", "skills"])
@pytest.mark.parametrize("damage", ["a-list", "no-metrics", "string-metrics"])
def test_a_damaged_baseline_is_one_line(command, damage, baselines, micro_model, tmp_path):
    root, commands = baselines
    baseline = tmp_path / "baseline"
    shutil.copytree(root / command, baseline)
    results = json.loads((baseline / "results.json").read_text())
    if damage == "a-list":
        results = [1, 2, 3]
    elif damage == "no-metrics":
        del results["metrics"]
    else:
        results["metrics"] = _strings(results["metrics"])
    (baseline / "results.json").write_text(json.dumps(results))
    refused(
        (*commands[command], "--baseline", baseline, "-o", tmp_path / "run"), "baseline", roots=(tmp_path, micro_model)
    )


# --- 7, 8. where the output goes -----------------------------------------------------------------------


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


def test_an_output_name_too_long_is_one_line(llama_dir, prompts, tmp_path):
    name = "x" * 300
    refused(
        ("generate", "-m", llama_dir, "-i", prompts, "-o", tmp_path / "outs" / name),
        "too long",
        roots=(tmp_path, llama_dir),
    )
    refused(("world", "build", "--out", tmp_path / "outs" / name, "--entities", 5), "too long", roots=(tmp_path,))


def test_a_245_character_output_name_is_fine(llama_dir, prompts, tmp_path):
    name = "x" * 245
    ok(llmkit("generate", "-m", llama_dir, "-i", prompts, "-o", tmp_path / "outs" / name, "--max-new-tokens", 2))
    assert (tmp_path / "outs" / name / "results.json").is_file()
    ok(llmkit("world", "build", "--out", tmp_path / "worlds" / name, "--entities", 5))
    assert (tmp_path / "worlds" / name / "world.json").is_file()
    assert [p.name for p in (tmp_path / "outs").iterdir()] == [name]  # no staging sibling left


def test_a_training_output_name_too_long_for_its_checkpoints_needs_a_checkpoint_dir(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:4]])
    out = tmp_path / ("g" * 245)
    common = ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", out, "--max-steps", 1, "--batch-size", 2)
    refused(common, "pass --checkpoint-dir", roots=(tmp_path, llama_dir))
    ok(llmkit(*common, "--checkpoint-dir", tmp_path / "ckpt"))
    assert (out / "unlearn.json").is_file() and not (tmp_path / "ckpt").exists()


# --- 9, 10. numbers that are not finite, training that diverges ---------------------------------------


def test_a_nan_learning_rate_is_refused_and_a_correct_rerun_works(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:4]])
    out = tmp_path / "g"
    common = ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", out, "--max-steps", 2, "--batch-size", 2)
    refused((*common, "--lr", "nan"), "finite", roots=(tmp_path, llama_dir))
    assert leftovers(tmp_path, "g") == []
    ok(llmkit(*common, "--lr", "1e-3"))
    assert (out / "unlearn.json").is_file() and leftovers(tmp_path, "g") == ["g"]


def test_a_nan_pretraining_rate_is_refused_and_a_correct_rerun_works(micro_world, tmp_path):
    out = tmp_path / "m"
    common = ("world", "pretrain", micro_world, "--out", out, *TINY_RECIPE, "--steps", 2)
    refused((*common, "--learning-rate", "nan"), "finite", roots=(tmp_path, micro_world))
    ok(llmkit(*common))
    assert (out / "config.json").is_file() and leftovers(tmp_path, "m") == ["m"]


@pytest.mark.parametrize(
    "case",
    [
        "ga-lr-inf",
        "sft-lr-inf",
        "pretrain-lr-inf",
        "task-vector-alpha-nan",
        "rocr-lambda-nan",
        "ksd-alpha-nan",
        "simnpo-gamma-inf",
    ],
)
def test_non_finite_numbers_are_refused(case, llama_dir, micro_world, texts, corpus, tmp_path):
    forget = write_jsonl(
        tmp_path / "forget.jsonl",
        [
            {"prompt": "Where was Bob born?", "answer": "Lyon"},
            {"prompt": "12 +", "answer": "34"},
            {"prompt": "7 *", "answer": "8"},
        ],
    )
    out = tmp_path / "out"
    steps = ("--max-steps", 1)  # small budgets, so that a run that is not refused ends soon
    args = {
        "ga-lr-inf": ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", out, *steps, "--lr", "inf"),
        "sft-lr-inf": (
            "train",
            "sft",
            "-m",
            llama_dir,
            "--data",
            texts,
            "--out",
            out,
            "--epochs",
            1,
            "--eval-samples",
            0,
            "--lr",
            "inf",
        ),
        "pretrain-lr-inf": (
            "world",
            "pretrain",
            micro_world,
            "--out",
            out,
            *TINY_RECIPE,
            "--steps",
            2,
            "--learning-rate",
            "inf",
        ),
        "task-vector-alpha-nan": (
            "unlearn",
            "task-vector",
            "-m",
            llama_dir,
            "--forget",
            forget,
            "--out",
            out,
            *steps,
            "--alpha",
            "nan",
        ),
        "rocr-lambda-nan": rocr_args(llama_dir, out, corpus, tmp_path / "stats", "--lambda", "nan"),
        "ksd-alpha-nan": ("unlearn", "ksd", "-m", llama_dir, "--forget", forget, "--out", out, "--alpha", "nan"),
        "simnpo-gamma-inf": (
            "unlearn",
            "simnpo",
            "-m",
            llama_dir,
            "--forget",
            forget,
            "--out",
            out,
            *steps,
            "--gamma",
            "inf",
        ),
    }[case]
    refused(args, "finite", roots=(tmp_path, llama_dir, micro_world))
    assert leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("command", ["ga", "sft"])
def test_training_that_diverges_stops_and_writes_nothing(command, llama_dir, texts, tmp_path):
    """A finite but absurd learning rate: after one AdamW step the weights are ~1e30 and the
    loss is no longer finite. The run stops there and writes neither a model nor checkpoints."""
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:4]])
    out = tmp_path / "out"
    if command == "ga":
        args = (
            "unlearn",
            "ga",
            "-m",
            llama_dir,
            "--forget",
            forget,
            "--out",
            out,
            "--lr",
            "1e30",
            "--max-steps",
            8,
            "--batch-size",
            2,
            "--save-steps",
            1,
        )
    else:
        args = (
            "train",
            "sft",
            "-m",
            llama_dir,
            "--data",
            texts,
            "--out",
            out,
            "--lr",
            "1e30",
            "--epochs",
            3,
            "--batch-size",
            4,
            "--save-steps",
            1,
            "--eval-samples",
            0,
        )
    before = tree_snapshot(llama_dir)
    result = llmkit(*args)
    assert_refused(result, "diverged", before=before, roots=(llama_dir,))
    assert leftovers(tmp_path, "out") == []


def test_the_library_reports_divergence_as_bad_input(llama_dir, tmp_path):
    from llmkit.errors import BadInputError
    from llmkit.methods import gradient
    from llmkit.models import load_model
    from llmkit.training import TrainingBudget

    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    forget = [{"text": t} for t in TEXTS[:4]]
    budget = TrainingBudget(epochs=1, learning_rate=1e30, batch_size=2, max_steps=8, save_steps=1)
    with pytest.raises(BadInputError, match="diverged"):
        gradient.unlearn(model, tokenizer, "ga", forget, None, tmp_path / "checkpoints", budget)


# --- 11, 12, 13. ROCR's files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rocr_edit(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rocr")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    ok(llmkit(*rocr_args(llama_dir, root / "edited", corpus, root / "stats")))
    return root / "edited"


def test_a_truncated_edit_file_is_one_line(rocr_edit, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(rocr_edit, edited)
    with open(edited / "rocr_edit.safetensors", "r+b") as handle:
        handle.truncate(1000)
    refused(("unlearn", "revert", edited, "--out", tmp_path / "restored"), "damaged", roots=(tmp_path,))


def test_a_damaged_statistics_cache_is_recomputed(llama_dir, corpus, tmp_path):
    cache = tmp_path / "stats"
    ok(llmkit(*rocr_args(llama_dir, tmp_path / "a", corpus, cache)))
    cached = sorted(p for p in cache.rglob("*") if p.is_file())
    assert cached, "ROCR wrote no statistics cache"
    for path in cached:
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    result = ok(llmkit(*rocr_args(llama_dir, tmp_path / "b", corpus, cache)))
    assert "recomput" in result.stderr.lower(), result.stderr
    first = safetensors.torch.load_file(tmp_path / "a" / "rocr_edit.safetensors")
    second = safetensors.torch.load_file(tmp_path / "b" / "rocr_edit.safetensors")
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)


def test_a_statistics_cache_that_is_a_file_is_one_line(llama_dir, corpus, tmp_path):
    (tmp_path / "stats").write_text("not a directory")
    refused(
        rocr_args(llama_dir, tmp_path / "edited", corpus, tmp_path / "stats"),
        "--stats-cache",
        roots=(tmp_path, llama_dir),
    )


# --- 15. two runs writing the same output at once -------------------------------------------------------


def one_wins(procs: dict[int, subprocess.Popen]) -> int:
    """Of two concurrent runs by seed, exactly one succeeds and the other is refused in one line;
    returns the winner's seed."""
    done = {seed: (proc.communicate(timeout=300), proc.returncode) for seed, proc in procs.items()}
    codes = sorted(code for _, code in done.values())
    assert codes == [0, 2], {seed: (code, err[-2000:]) for seed, ((_, err), code) in done.items()}
    [winner] = [seed for seed, (_, code) in done.items() if code == 0]
    [((loser_out, loser_err), _)] = [v for seed, v in done.items() if seed != winner]
    assert_process_refused(subprocess.CompletedProcess([], 2, loser_out, loser_err))
    return winner


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_concurrent_world_builds_one_wins_whole(attempt, tmp_path):
    out = tmp_path / "world"
    winner = one_wins(
        {seed: start_llmkit("world", "build", "--out", out, "--seed", seed, cwd=tmp_path) for seed in (1, 2)}
    )
    assert json.loads((out / "world.json").read_text())["config"]["seed"] == winner
    assert len(read_records(out / "entities.jsonl")) == 200
    assert leftovers(tmp_path, "world") == ["world"]


def test_concurrent_unlearning_runs_one_wins(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:8]])
    out = tmp_path / "g"
    winner = one_wins(
        {
            seed: start_llmkit(
                "unlearn",
                "ga",
                "-m",
                llama_dir,
                "--forget",
                forget,
                "--out",
                out,
                "--max-steps",
                4,
                "--batch-size",
                2,
                "--lr",
                "1e-3",
                "--seed",
                seed,
                cwd=tmp_path,
            )
            for seed in (0, 1)
        }
    )
    record = json.loads((out / "unlearn.json").read_text())
    assert record["budget"]["seed"] == winner and (out / "model.safetensors").is_file()
    assert not [name for name in leftovers(tmp_path, "g") if name.startswith(".")]


# --- 16. usage errors -------------------------------------------------------------------------------


USAGE_ERRORS = {
    "no-input": (("generate", "-m", "MODEL"), "--input"),
    "not-a-number": (("generate", "-m", "MODEL", "-i", "PROMPTS", "--max-new-tokens", "two"), "--max-new-tokens"),
    "unknown-command": (("bogus-command",), "bogus-command"),
    "unknown-subcommand": (("unlearn", "bogus"), "bogus"),
}


def _usage_args(args, llama_dir, prompts):
    return [str(llama_dir) if a == "MODEL" else str(prompts) if a == "PROMPTS" else a for a in args]


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_are_one_line(case, llama_dir, prompts, tmp_path):
    args, needle = USAGE_ERRORS[case]
    refused(_usage_args(args, llama_dir, prompts), needle, roots=(tmp_path, llama_dir))


def test_usage_errors_are_one_line_from_the_entry_point(llama_dir, prompts, tmp_path):
    procs = {
        case: start_llmkit(*_usage_args(args, llama_dir, prompts), cwd=tmp_path)
        for case, (args, _) in USAGE_ERRORS.items()
    }
    for case, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert_process_refused(
            subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), USAGE_ERRORS[case][1]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


# --- 17. a model or data set that is neither here nor reachable ---------------------------------------


STARTUP_SLACK_S = 0
"""Seconds added to the 20 s budget for the interpreter's start (imports); 0 once it starts in ~1 s."""

HUB_SETTINGS = {
    "offline": {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    "unreachable": {"HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"},
}


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


# --- unfriendly, but not malicious --------------------------------------------------------------------


def test_overwrite_never_replaces_a_directory_of_the_users(llama_dir, prompts, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    refused(
        ("generate", "-m", llama_dir, "-i", prompts, "-o", mine, "--overwrite", "--max-new-tokens", 2),
        roots=(tmp_path, llama_dir),
    )
    assert (mine / "notes.txt").read_text() == "my notes"


def test_the_output_may_not_be_the_model(llama_copy, prompts, tmp_path):
    refused(
        ("generate", "-m", llama_copy, "-i", prompts, "-o", llama_copy, "--overwrite", "--max-new-tokens", 2),
        roots=(tmp_path,),
    )
    assert (llama_copy / "model.safetensors").is_file() and (llama_copy / "config.json").is_file()


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


def test_an_empty_stop_string_is_refused(llama_dir, prompts, tmp_path):
    refused(
        ("generate", "-m", llama_dir, "-i", prompts, "--stop", "", "--max-new-tokens", 2),
        "--stop",
        roots=(tmp_path, llama_dir),
    )


def test_an_error_names_the_flag_not_the_parameter(llama_dir, prompts, tmp_path):
    line = refused(("generate", "-m", llama_dir, "-i", prompts, "--top-p", 2), "--top-p", roots=(tmp_path, llama_dir))
    assert "top_p" not in line
