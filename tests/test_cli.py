"""The `llmkit` app as a whole (commands/cli.py, commands/_common.py): what every command shares.

Start-up: parsing arguments, a usage error and every `--help` load none of the heavy libraries
(torch alone takes over a second to import); a command imports them when it runs. The installed
entry point, `--debug`, usage errors, and the checks every command makes on what it is given and
where it writes: a model path that does not exist, output names too long, numbers that are not
finite, training that diverges.

Bad input to every command, one thing broken per case: exit code 2, exactly one stderr line
starting `error: ` (naming what is wrong), nothing on stdout, and the file system exactly as it
was, the models, the world and the cache included. Each case starts from a valid, small invocation
of its command (`BASE`) and breaks one thing: an option's value (negative, zero, out of range, nan,
inf, the wrong type), a missing required option, a missing, empty, non-UTF-8 or wrongly shaped
file, an output that exists. Every case is detected before any slow work, so the whole matrix runs
in well under a minute.

SIGTERM (what `timeout`, schedulers and CI send) while a command works: exit code 143, one stderr
line saying it was terminated, no staging directory and no output left; a training run keeps its
checkpoints, and the same command run again resumes from them."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from conftest import (
    PROMPTS,
    TEXTS,
    TINY_RECIPE,
    assert_bad_input,
    assert_process_refused,
    assert_refused,
    leftovers,
    llmkit,
    ok,
    refused,
    rocr_args,
    start_llmkit,
    tree_snapshot,
    write_jsonl,
)
from llmkit import configs
from llmkit.commands._common import NO_JSON, Options, OutputOptions, cli_command
from llmkit.commands.cli import app
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.training import COMPLETE_FILE
from tiny import CORPUS

# --- start-up and help ------------------------------------------------------------------------


HEAVY = (
    "torch",
    "transformers",
    "datasets",
    "peft",
    "trl",
    "accelerate",
    "safetensors",
    "sklearn",
    "matplotlib",
    "vllm",
)


# Run in a fresh interpreter: this test process has imported torch long ago (conftest).
STARTUP = f"""
import sys

import typer
from typer.testing import CliRunner

from llmkit.commands.cli import app

typer.main.get_command(app)
runner = CliRunner()
for args, code in ((["--help"], 0), (["unlearn", "npo", "--help"], 0), (["generate", "-m", "x"], 2)):
    result = runner.invoke(app, args)
    assert result.exit_code == code, (args, result.exit_code, result.output)
print(" ".join(name for name in {HEAVY!r} if name in sys.modules))
"""


def test_help_and_usage_errors_import_no_heavy_library():
    result = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"imported at start-up: {result.stdout.strip()}"


def command_paths(command, path=()):
    """The path of `command` and of every command below it."""
    yield path
    if isinstance(command, TyperGroup):
        for name, sub in sorted(command.commands.items()):
            yield from command_paths(sub, (*path, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def test_the_walk_reaches_every_group():
    assert {("unlearn", "npo"), ("eval", "ort"), ("train", "send"), ("world", "pretrain"), ("quickstart",)} <= set(
        PATHS
    )


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "llmkit")
def test_every_command_renders_its_help(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


# --- the entry point, --debug, usage errors ---------------------------------------------------


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


def test_debug_shows_the_traceback(prompts_file, tmp_path):
    result = llmkit("generate", "-m", tmp_path / "missing", "-i", prompts_file, "--debug")
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


USAGE_ERRORS = {
    "no-input": (("generate", "-m", "MODEL"), "--input"),
    "not-a-number": (("generate", "-m", "MODEL", "-i", "PROMPTS", "--max-new-tokens", "two"), "--max-new-tokens"),
    "unknown-command": (("bogus-command",), "bogus-command"),
    "unknown-subcommand": (("unlearn", "bogus"), "bogus"),
}


def _usage_args(args, llama_dir, prompts):
    return [str(llama_dir) if a == "MODEL" else str(prompts) if a == "PROMPTS" else a for a in args]


# Hostile input, defect 16: usage errors.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_are_one_line(case, llama_dir, prompts, tmp_path):
    args, needle = USAGE_ERRORS[case]
    refused(_usage_args(args, llama_dir, prompts), needle, roots=(tmp_path, llama_dir))


# Hostile input, defect 16: usage errors.
@pytest.mark.usefixtures("isolated")
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


# --- what every command checks: the model, the output, numbers, training ----------------------


@dataclass(frozen=True)
class Recipe:
    """A config as the library declares one: option fields, a field that is not an option, a check."""

    steps: float = configs.option(1.0, "Steps to take.")
    rate: float = configs.option(0.1, "Learning rate.", flag="--lr")
    seed: int = configs.option(0, "Seed.")
    width: int = 3

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise BadInputError(f"--lr must be positive, got {self.rate}")


RECIPE_OPTIONS = Options(defaults={"steps": 4}, types={"steps": int}, help={"rate": "How fast."}, exclude=("seed",))


def test_an_options_dataclass_is_offered_as_its_fields():
    """A command parameter typed as a dataclass becomes the options its fields declare, with
    `Options` changing a default, a type and a help and leaving a field out; the command receives
    the config built from them, and the config's own check is the one-line bad-input error."""
    received = []

    @cli_command
    def run(recipe: Annotated[Recipe, RECIPE_OPTIONS], *, output: Annotated[OutputOptions, NO_JSON]) -> None:
        received.append((recipe, output))

    command = typer.Typer()
    command.command()(run)
    runner = CliRunner()
    assert runner.invoke(command, []).exit_code == 0
    assert received[-1][0] == Recipe(steps=4) and type(received[-1][0].steps) is int
    assert runner.invoke(command, ["--steps", "7", "--lr", "0.5", "--overwrite"]).exit_code == 0
    assert received[-1] == (Recipe(steps=7, rate=0.5), OutputOptions(overwrite=True))
    help_text = runner.invoke(command, ["--help"], terminal_width=200).output
    assert "How fast." in help_text and "[default: 4]" in help_text and "--json" not in help_text
    for excluded in (["--seed", "1"], ["--width", "1"], ["--rate", "1"]):
        assert runner.invoke(command, excluded).exit_code == 2
    refused = runner.invoke(command, ["--lr", "-1"])
    assert (refused.exit_code, refused.stderr) == (2, "error: --lr must be positive, got -1.0\n")
    refused = runner.invoke(command, ["--lr", "nan"])
    assert (refused.exit_code, refused.stderr) == (2, "error: --lr must be a finite number, got nan\n")
    assert len(received) == 2


def test_model_path_that_does_not_exist(prompts_file, tmp_path):
    out = tmp_path / "run"
    result = llmkit("generate", "-m", tmp_path / "missing", "-i", prompts_file, "-o", out)
    assert_bad_input(result, "does not exist", out)
    assert_bad_input(llmkit("model", "inspect", "-m", "./missing-model"), "model path ./missing-model does not exist")


# Hostile input, defects 7, 8: where the output goes.
@pytest.mark.usefixtures("isolated")
def test_an_output_name_too_long_is_one_line(llama_dir, prompts, tmp_path):
    name = "x" * 300
    refused(
        ("generate", "-m", llama_dir, "-i", prompts, "-o", tmp_path / "outs" / name),
        "too long",
        roots=(tmp_path, llama_dir),
    )
    refused(("world", "build", "--out", tmp_path / "outs" / name, "--entities", 5), "too long", roots=(tmp_path,))


# Hostile input, defects 7, 8: where the output goes.
@pytest.mark.usefixtures("isolated")
def test_a_245_character_output_name_is_fine(llama_dir, prompts, tmp_path):
    name = "x" * 245
    ok(llmkit("generate", "-m", llama_dir, "-i", prompts, "-o", tmp_path / "outs" / name, "--max-new-tokens", 2))
    assert (tmp_path / "outs" / name / "results.json").is_file()
    ok(llmkit("world", "build", "--out", tmp_path / "worlds" / name, "--entities", 5))
    assert (tmp_path / "worlds" / name / "world.json").is_file()
    assert [p.name for p in (tmp_path / "outs").iterdir()] == [name]  # no staging sibling left


# Hostile input, defects 9, 10: numbers that are not finite, training that diverges.
@pytest.mark.usefixtures("isolated")
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


# Hostile input, defects 9, 10: numbers that are not finite, training that diverges.
@pytest.mark.usefixtures("isolated")
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


# --- bad input to every command: one thing broken per case ------------------------------------


BASE = {
    "generate": ["generate", "-m", "@llama", "-i", "@prompts", "-o", "@out", "--max-new-tokens", "2"],
    "inspect": ["model", "inspect", "-m", "@llama", "--device", "cpu"],
    "build": ["world", "build", "--out", "@out", "--entities", "5"],
    "pretrain": ["world", "pretrain", "@world", "--out", "@out", *TINY_RECIPE, "--steps", "2"],
    "forget-set": ["data", "forget-set", "--world", "@world", "--target", "@target", "--out", "@out"],
    "skill-set": ["data", "skill-set", "--world", "@world", "--skill", "@skill", "--out", "@out"],
    "sft": [
        "train",
        "sft",
        "-m",
        "@llama",
        "--data",
        "@texts",
        "--out",
        "@out",
        "--epochs",
        "1",
        "--eval-samples",
        "0",
        "--batch-size",
        "4",
    ],
    "send": [
        "train",
        "send",
        "-m",
        "@llama",
        "--data",
        "@texts",
        "--out",
        "@out",
        "--epochs",
        "2",
        "--window",
        "2",
        "--drop-epochs",
        "1",
        "--eval-samples",
        "0",
        "--track-fraction",
        "0.2",
        "--batch-size",
        "4",
    ],
    "rocr": [
        "unlearn",
        "rocr",
        "-m",
        "@llama",
        "--target",
        "Alice",
        "--redirect",
        "Bob",
        "--out",
        "@out",
        "--layers",
        "0,1",
        "--stats-corpus",
        "@corpus",
        "--stats-cache",
        "@stats",
        "--device",
        "cpu",
    ],
    "revert": ["unlearn", "revert", "@edited", "--out", "@out"],
    "ksd": ["unlearn", "ksd", "-m", "@llama", "--forget", "@forget", "--out", "@out", "--device", "cpu"],
    "neuron-adjust": [
        "unlearn",
        "neuron-adjust",
        "-m",
        "@llama",
        "--forget",
        "@forget",
        "--retain",
        "@retain",
        "--out",
        "@out",
        "--device",
        "cpu",
    ],
    "ort": [
        "eval",
        "ort",
        "-m",
        "@micro",
        "--probes",
        "@world",
        "--targets",
        "@target",
        "--forms",
        "qa",
        "--limit",
        "1",
        "-o",
        "@out",
    ],
    "skills": ["eval", "skills", "-m", "@llama", "--skill", "s=@items", "--limit", "1", "-o", "@out"],
    "hallucination": [
        "eval",
        "hallucination",
        "-m",
        "@llama",
        "--data",
        "@items",
        "--samples",
        "2",
        "--max-new-tokens",
        "2",
        "--limit",
        "1",
        "-o",
        "@out",
        "--device",
        "cpu",
    ],
    "quickstart": ["quickstart", "--preset", "micro", "--cache-dir", "@cache", "-o", "@out"],
}


for _method in ("ga", "graddiff", "npo", "simnpo", "kl", "rt", "dpo", "task-vector"):
    BASE[_method] = [
        "unlearn",
        _method,
        "-m",
        "@llama",
        "--forget",
        "@forget",
        "--out",
        "@out",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        *(["--retain", "@retain"] if _method in ("graddiff", "kl") else []),
    ]


@dataclass
class Case:
    id: str
    base: str
    extra: list[str] = field(default_factory=list)
    needle: str | None = None
    """A fragment the error line must hold (case-insensitive): the option or the file at fault."""
    drop: list[str] = field(default_factory=list)
    """Options (with their value) or positional placeholders removed from the base first."""
    swap: dict[str, str] = field(default_factory=dict)
    """Placeholders of the base replaced by others (a positional argument's value)."""


def C(id, base, extra=(), needle=None, drop=(), swap=None):
    return Case(id, base, list(extra), needle, list(drop), dict(swap or {}))


CASES = [
    # generate
    C("generate-max-new-tokens-zero", "generate", ["--max-new-tokens", "0"], "--max-new-tokens"),
    C("generate-max-new-tokens-negative", "generate", ["--max-new-tokens", "-5"], "--max-new-tokens"),
    C("generate-max-new-tokens-word", "generate", ["--max-new-tokens", "two"], "--max-new-tokens"),
    C("generate-temperature-negative", "generate", ["--temperature", "-1"], "--temperature"),
    C("generate-temperature-nan", "generate", ["--temperature", "nan"], "--temperature"),
    C("generate-top-p-zero", "generate", ["--temperature", "1", "--top-p", "0"], "--top-p"),
    C("generate-top-p-two", "generate", ["--top-p", "2"], "--top-p"),
    C("generate-top-p-inf", "generate", ["--top-p", "inf"], "--top-p"),
    C("generate-num-samples-zero", "generate", ["--num-samples", "0"], "--num-samples"),
    C("generate-batch-size-zero", "generate", ["--batch-size", "0"], "--batch-size"),
    C("generate-batch-size-word", "generate", ["--batch-size", "many"], "--batch-size"),
    C("generate-limit-negative", "generate", ["--limit", "-1"], "--limit"),
    C("generate-dtype-unknown", "generate", ["--dtype", "float8"], "float8"),
    C("generate-device-unknown", "generate", ["--device", "tpu"], "tpu"),
    C("generate-backend-unknown", "generate", ["--backend", "onnx"], "onnx"),
    C("generate-stop-empty", "generate", ["--stop", ""], "--stop"),
    C("generate-seed-word", "generate", ["--seed", "x"], "--seed"),
    C("generate-input-missing", "generate", ["-i", "@missing_jsonl"], "missing.jsonl"),
    C("generate-input-empty", "generate", ["-i", "@empty"], "empty.jsonl"),
    C("generate-input-binary", "generate", ["-i", "@binary"], "UTF-8"),
    C("generate-input-latin1-csv", "generate", ["-i", "@latin1"], "UTF-8"),
    C("generate-input-records-not-objects", "generate", ["-i", "@notobj"], "notobj.jsonl"),
    C("generate-input-prompt-not-a-string", "generate", ["-i", "@wrongtype"], "'prompt'"),
    C("generate-input-json-not-a-list", "generate", ["-i", "@dictjson"], "dict.json"),
    C("generate-input-no-prompt-field", "generate", ["-i", "@nofield"], "'prompt'"),
    C("generate-input-unknown-suffix", "generate", ["-i", "@xml"], ".xml"),
    C("generate-prompt-field-absent", "generate", ["--prompt-field", "question"], "'question'"),
    C("generate-model-missing", "generate", ["-m", "@missing_dir"], "does not exist"),
    C("generate-model-not-a-model", "generate", ["-m", "@emptydir"], "config.json"),
    C("generate-model-a-file", "generate", ["-m", "@afile"], "a_file.txt"),
    C("generate-output-exists", "generate", ["-o", "@existing"], "--overwrite"),
    C("generate-output-a-file", "generate", ["-o", "@afile"], "a_file.txt"),
    C("generate-output-users-directory", "generate", ["-o", "@mine", "--overwrite"], "mine"),
    C("generate-json-without-output", "generate", ["--json"], "--json", drop=["-o"]),
    C("generate-intervention-missing", "generate", ["--intervention", "@missing_dir"], "nowhere"),
    C("generate-intervention-not-an-artifact", "generate", ["--intervention", "@emptydir"], "intervention"),
    C("generate-no-model", "generate", needle="--model", drop=["-m"]),
    C("generate-no-input", "generate", needle="--input", drop=["-i"]),
    C("generate-unknown-option", "generate", ["--bogus"], "--bogus"),
    # model inspect
    C("inspect-model-missing", "inspect", ["-m", "@missing_dir"], "does not exist"),
    C("inspect-model-a-file", "inspect", ["-m", "@afile"], "a_file.txt"),
    C("inspect-dtype-unknown", "inspect", ["--dtype", "int3"], "int3"),
    C("inspect-no-model", "inspect", needle="--model", drop=["-m"]),
    # world build
    C("build-entities-zero", "build", ["--entities", "0"], "--entities"),
    C("build-entities-negative", "build", ["--entities", "-3"], "--entities"),
    C("build-entities-word", "build", ["--entities", "many"], "--entities"),
    C("build-exposures-word", "build", ["--exposures", "0,x"], "--exposures"),
    C("build-exposures-negative", "build", ["--exposures", "-1,3"], "--exposures"),
    C("build-exposures-empty", "build", ["--exposures", ""], "--exposures"),
    C("build-seed-word", "build", ["--seed", "x"], "--seed"),
    C("build-out-exists", "build", ["--out", "@existing"], "--overwrite"),
    C("build-out-a-file", "build", ["--out", "@afile"], "a_file.txt"),
    C("build-no-out", "build", needle="--out", drop=["--out"]),
    # world pretrain
    C("pretrain-not-a-world", "pretrain", needle="world.json", swap={"@world": "@emptydir"}),
    C("pretrain-world-missing", "pretrain", needle="nowhere", swap={"@world": "@missing_dir"}),
    C("pretrain-no-world", "pretrain", needle="world", drop=["@world"]),
    C("pretrain-steps-zero", "pretrain", ["--steps", "0"], "--steps"),
    C("pretrain-layers-zero", "pretrain", ["--layers", "0"], "--layers"),
    C("pretrain-heads-zero", "pretrain", ["--heads", "0"], "--heads"),
    C("pretrain-d-model-indivisible", "pretrain", ["--d-model", "30", "--heads", "4"], "--d-model"),
    C("pretrain-d-mlp-zero", "pretrain", ["--d-mlp", "0"], "--d-mlp"),
    C("pretrain-batch-size-zero", "pretrain", ["--batch-size", "0"], "--batch-size"),
    C("pretrain-learning-rate-negative", "pretrain", ["--learning-rate", "-0.1"], "--learning-rate"),
    C("pretrain-learning-rate-nan", "pretrain", ["--learning-rate", "nan"], "--learning-rate"),
    C("pretrain-family-unknown", "pretrain", ["--family", "gpt2"], "--family"),
    C("pretrain-out-exists", "pretrain", ["--out", "@existing"], "--overwrite"),
    # data forget-set, skill-set
    C("forget-set-unknown-target", "forget-set", ["--target", "Nobody Atall"], "Nobody Atall"),
    C("forget-set-unknown-form", "forget-set", ["--form", "essay"], "essay"),
    C("forget-set-not-a-world", "forget-set", ["--world", "@emptydir"], "empty-dir"),
    C("forget-set-out-exists", "forget-set", ["--out", "@existing"], "--overwrite"),
    C("forget-set-no-target", "forget-set", needle="--target", drop=["--target"]),
    C("skill-set-unknown-skill", "skill-set", ["--skill", "juggling"], "juggling"),
    C("skill-set-not-a-world", "skill-set", ["--world", "@emptydir"], "empty-dir"),
    C("skill-set-out-exists", "skill-set", ["--out", "@existing"], "--overwrite"),
    # train sft, send
    C("sft-data-missing", "sft", ["--data", "@missing_jsonl"], "missing.jsonl"),
    C("sft-data-empty", "sft", ["--data", "@empty"], "empty.jsonl"),
    C("sft-data-binary", "sft", ["--data", "@binary"], "UTF-8"),
    C("sft-text-field-absent", "sft", ["--text-field", "body"], "--text-field"),
    C("sft-epochs-zero", "sft", ["--epochs", "0"], "--epochs"),
    C("sft-lr-nan", "sft", ["--lr", "nan"], "--lr"),
    C("sft-batch-size-zero", "sft", ["--batch-size", "0"], "--batch-size"),
    C("sft-max-length-one", "sft", ["--max-length", "1"], "--max-length"),
    C("sft-eval-samples-one", "sft", ["--eval-samples", "1"], "--eval-samples"),
    C("sft-eval-prompts-missing", "sft", ["--eval-samples", "2", "--eval-prompts", "@missing_jsonl"], "missing.jsonl"),
    C("sft-save-steps-zero", "sft", ["--save-steps", "0"], "--save-steps"),
    C("sft-track-fraction-above-one", "sft", ["--track-fraction", "1.5"], "--track-fraction"),
    C("sft-test-fraction-negative", "sft", ["--test-fraction", "-0.1"], "--test-fraction"),
    C("sft-lora-rank-zero", "sft", ["--lora", "--lora-rank", "0"], "--lora-rank"),
    C("sft-out-exists", "sft", ["--out", "@existing"], "--overwrite"),
    C("sft-no-data", "sft", needle="--data", drop=["--data"]),
    C("send-drop-fraction-zero", "send", ["--drop-fraction", "0"], "--drop-fraction"),
    C("send-drop-fraction-above-one", "send", ["--drop-fraction", "1.5"], "--drop-fraction"),
    C("send-window-one", "send", ["--window", "1"], "--window"),
    C("send-drop-epochs-zero", "send", ["--drop-epochs", "0"], "--drop-epochs"),
    C("send-drop-target-unknown", "send", ["--drop-target", "attn"], "--drop-target"),
    C("send-eval-prompts-binary", "send", ["--eval-samples", "2", "--eval-prompts", "@binary"], "UTF-8"),
    C("send-prompt-tokens-zero", "send", ["--prompt-tokens", "0"], "--prompt-tokens"),
    # unlearn rocr, revert
    C("rocr-target-is-the-redirect", "rocr", ["--redirect", "Alice"], "Alice", drop=["--redirect"]),
    C("rocr-layers-out-of-range", "rocr", ["--layers", "5,6"], "--layers"),
    C("rocr-layers-word", "rocr", ["--layers", "a-b"], "--layers"),
    C("rocr-lambda-negative", "rocr", ["--lambda", "-1"], "--lambda"),
    C("rocr-lambda-inf", "rocr", ["--lambda", "inf"], "--lambda"),
    C("rocr-preserve-unknown", "rocr", ["--preserve", "rome"], "rome"),
    C("rocr-stats-tokens-zero", "rocr", ["--stats-tokens", "0"], "--stats-tokens"),
    C("rocr-stats-corpus-missing", "rocr", ["--stats-corpus", "@missing_txt"], "missing.txt"),
    C("rocr-stats-corpus-blank", "rocr", ["--stats-corpus", "@blank"], "no text"),
    C("rocr-stats-corpus-binary", "rocr", ["--stats-corpus", "@binary_txt"], "UTF-8"),
    C("rocr-stats-cache-a-file", "rocr", ["--stats-cache", "@afile"], "--stats-cache"),
    C("rocr-contexts-missing", "rocr", ["--contexts", "@missing_txt"], "--contexts"),
    C("rocr-contexts-without-placeholder", "rocr", ["--contexts", "@badcontexts"], "--contexts"),
    C("rocr-chat-template-unknown", "rocr", ["--chat-template", "yes"], "--chat-template"),
    C("rocr-subject-token-unknown", "rocr", ["--subject-token", "middle"], "--subject-token"),
    C("rocr-nullspace-threshold-negative", "rocr", ["--nullspace-threshold", "-1"], "--nullspace-threshold"),
    C("rocr-out-exists", "rocr", ["--out", "@existing"], "--overwrite"),
    C("rocr-no-target", "rocr", needle="--target", drop=["--target"]),
    C("revert-not-an-edit", "revert", needle="rocr", swap={"@edited": "@llama"}),
    C("revert-edit-missing", "revert", needle="nowhere", swap={"@edited": "@missing_dir"}),
    C("revert-damaged-record", "revert", needle="rocr.json", swap={"@edited": "@badedit"}),
    C("revert-out-exists", "revert", ["--out", "@existing"], swap={"@edited": "@badedit"}),
    C("revert-no-out", "revert", needle="--out", drop=["--out"], swap={"@edited": "@badedit"}),
    # unlearn ksd, neuron-adjust
    C("ksd-alpha-negative", "ksd", ["--alpha", "-1"], "--alpha"),
    C("ksd-alpha-nan", "ksd", ["--alpha", "nan"], "--alpha"),
    C("ksd-layer-out-of-range", "ksd", ["--layer", "9"], "--layer"),
    C("ksd-positions-unknown", "ksd", ["--positions", "middle"], "--positions"),
    C("ksd-batch-size-zero", "ksd", ["--batch-size", "0"], "--batch-size"),
    C("ksd-chat-template-unknown", "ksd", ["--chat-template", "yes"], "--chat-template"),
    C("ksd-forget-empty", "ksd", ["--forget", "@empty"], "empty.jsonl"),
    C("ksd-forget-missing", "ksd", ["--forget", "@missing_jsonl"], "missing.jsonl"),
    C("ksd-forget-binary", "ksd", ["--forget", "@binary"], "UTF-8"),
    C("ksd-no-forget", "ksd", needle="--forget", drop=["--forget"]),
    C("neuron-adjust-fraction-zero", "neuron-adjust", ["--fraction", "0"], "--fraction"),
    C("neuron-adjust-fraction-above-one", "neuron-adjust", ["--fraction", "1.5"], "--fraction"),
    C("neuron-adjust-fraction-nan", "neuron-adjust", ["--fraction", "nan"], "--fraction"),
    C("neuron-adjust-batch-size-zero", "neuron-adjust", ["--batch-size", "0"], "--batch-size"),
    C("neuron-adjust-no-retain", "neuron-adjust", needle="--retain", drop=["--retain"]),
    C("neuron-adjust-retain-empty", "neuron-adjust", ["--retain", "@empty"], "empty.jsonl"),
    # the gradient methods
    C("ga-lr-nan", "ga", ["--lr", "nan"], "--lr"),
    C("ga-lr-inf", "ga", ["--lr", "inf"], "--lr"),
    C("ga-epochs-zero", "ga", ["--epochs", "0"], "--epochs", drop=["--max-steps"]),
    C("ga-epochs-negative", "ga", ["--epochs", "-1"], "--epochs", drop=["--max-steps"]),
    C("ga-epochs-nan", "ga", ["--epochs", "nan"], "--epochs"),
    C("ga-batch-size-zero", "ga", ["--batch-size", "0"], "--batch-size"),
    C("ga-max-steps-zero", "ga", ["--max-steps", "0"], "--max-steps"),
    C("ga-save-steps-zero", "ga", ["--save-steps", "0"], "--save-steps"),
    C("ga-lora-rank-zero", "ga", ["--lora", "--lora-rank", "0"], "--lora-rank"),
    C("ga-forget-missing", "ga", ["--forget", "@missing_jsonl"], "missing.jsonl"),
    C("ga-forget-binary", "ga", ["--forget", "@binary"], "UTF-8"),
    C("ga-forget-empty", "ga", ["--forget", "@empty"], "empty.jsonl"),
    C("ga-forget-no-text", "ga", ["--forget", "@nofield"], "'text'"),
    C("ga-out-exists", "ga", ["--out", "@existing"], "--overwrite"),
    C("ga-checkpoint-dir-a-file", "ga", ["--checkpoint-dir", "@afile"], "a_file.txt"),
    C("ga-has-no-alpha", "ga", ["--alpha", "1"], "--alpha"),
    C("ga-no-forget", "ga", needle="--forget", drop=["--forget"]),
    C("graddiff-no-retain", "graddiff", needle="--retain", drop=["--retain"]),
    C("graddiff-alpha-negative", "graddiff", ["--alpha", "-1"], "--alpha"),
    C("graddiff-alpha-nan", "graddiff", ["--alpha", "nan"], "--alpha"),
    C("kl-no-retain", "kl", needle="--retain", drop=["--retain"]),
    C("npo-beta-zero", "npo", ["--beta", "0"], "--beta"),
    C("npo-beta-negative", "npo", ["--beta", "-0.1"], "--beta"),
    C("simnpo-beta-inf", "simnpo", ["--beta", "inf"], "--beta"),
    C("simnpo-gamma-nan", "simnpo", ["--gamma", "nan"], "--gamma"),
    C("rt-passages", "rt", ["--forget", "@texts"], "questions"),
    C("dpo-passages", "dpo", ["--forget", "@texts"], "questions"),
    C("dpo-beta-zero", "dpo", ["--beta", "0"], "--beta"),
    C("task-vector-alpha-inf", "task-vector", ["--alpha", "inf"], "--alpha"),
    # eval ort, skills, hallucination
    C("ort-probes-missing", "ort", ["--probes", "@missing_dir"], "nowhere"),
    C("ort-world-without-targets", "ort", needle="--targets", drop=["--targets"]),
    C("ort-target-unknown", "ort", ["--targets", "Nobody Atall"], "Nobody Atall", drop=["--targets"]),
    C("ort-form-unknown", "ort", ["--forms", "qa,essay"], "essay"),
    C("ort-limit-zero", "ort", ["--limit", "0"], "--limit"),
    C("ort-baseline-missing", "ort", ["--baseline", "@missing_dir"], "--baseline"),
    C("ort-baseline-a-list", "ort", ["--baseline", "@junkbaseline"], "--baseline"),
    C("ort-fail-over-without-value", "ort", ["--fail-over", "forget.qa.prob"], "--fail-over"),
    C("ort-fail-under-not-a-number", "ort", ["--fail-under", "forget.qa.prob=high"], "--fail-under"),
    C("ort-chat-template-unknown", "ort", ["--chat-template", "yes"], "--chat-template"),
    C("ort-plot-without-output", "ort", ["--plot"], "--plot", drop=["-o"]),
    C("ort-batch-size-zero", "ort", ["--batch-size", "0"], "--batch-size"),
    C("ort-backend-unknown", "ort", ["--backend", "onnx"], "onnx"),
    C("ort-out-exists", "ort", ["-o", "@existing"], "--overwrite"),
    C("ort-intervention-not-an-artifact", "ort", ["--intervention", "@emptydir"], "intervention"),
    C("skills-no-items", "skills", needle="--world", drop=["--skill"]),
    C("skills-world-and-skill", "skills", ["--world", "@world"], "--world"),
    C("skills-skill-without-file", "skills", ["--skill", "nofile"], "NAME=FILE", drop=["--skill"]),
    C("skills-skill-file-missing", "skills", ["--skill", "s=@missing_jsonl"], "missing.jsonl", drop=["--skill"]),
    C("skills-skill-file-binary", "skills", ["--skill", "s=@binary"], "UTF-8", drop=["--skill"]),
    C("skills-skill-without-answers", "skills", ["--skill", "s=@prompts"], "answer", drop=["--skill"]),
    C("skills-limit-zero", "skills", ["--limit", "0"], "--limit"),
    C("skills-baseline-a-list", "skills", ["--baseline", "@junkbaseline"], "--baseline"),
    C("skills-out-exists", "skills", ["-o", "@existing"], "--overwrite"),
    C("skills-plot-without-output", "skills", ["--plot"], "--plot", drop=["-o"]),
    C("hallucination-one-sample", "hallucination", ["--samples", "1"], "--samples"),
    C("hallucination-method-unknown", "hallucination", ["--method", "svd"], "svd"),
    C("hallucination-temperature-nan", "hallucination", ["--temperature", "nan"], "--temperature"),
    C("hallucination-temperature-negative", "hallucination", ["--temperature", "-0.5"], "--temperature"),
    C("hallucination-top-p-two", "hallucination", ["--top-p", "2"], "--top-p"),
    C("hallucination-top-k-negative", "hallucination", ["--top-k", "-1"], "--top-k"),
    C("hallucination-max-new-tokens-zero", "hallucination", ["--max-new-tokens", "0"], "--max-new-tokens"),
    C("hallucination-no-prompts", "hallucination", needle="--data", drop=["--data"]),
    C("hallucination-data-and-world", "hallucination", ["--world", "@world"], "--world"),
    C("hallucination-data-binary", "hallucination", ["--data", "@binary"], "UTF-8"),
    C("hallucination-data-without-answers", "hallucination", ["--data", "@prompts"], "answer"),
    C(
        "hallucination-exposures-word",
        "hallucination",
        ["--world", "@world", "--exposures", "x"],
        "--exposures",
        drop=["--data"],
    ),
    C("hallucination-out-exists", "hallucination", ["-o", "@existing"], "--overwrite"),
    # quickstart
    C("quickstart-preset-unknown", "quickstart", ["--preset", "huge"], "huge"),
    C("quickstart-out-exists", "quickstart", ["-o", "@existing"], "--overwrite"),
    C("quickstart-output-users-directory", "quickstart", ["-o", "@mine", "--overwrite"], "mine"),
    C("quickstart-cache-dir-a-file", "quickstart", ["--cache-dir", "@afile"], "a_file.txt"),
]


def jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def places(tmp_path, llama_dir, micro_world, micro_model, world_cache):
    """Placeholder -> value: the session's models and world, and small files made here."""
    binary = b"\xff\xfe\x00bad\x80\n"
    (tmp_path / "binary.jsonl").write_bytes(binary)
    (tmp_path / "binary.txt").write_bytes(binary * 3)
    (tmp_path / "latin1.csv").write_bytes("prompt\ncafé crème\n".encode("latin-1"))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.txt").write_text("\n \n\n")
    (tmp_path / "notobj.jsonl").write_text("[1, 2]\n")
    (tmp_path / "dict.json").write_text('{"a": 1, "b": 2}')
    (tmp_path / "prompts.xml").write_text("<prompts/>")
    (tmp_path / "a_file.txt").write_text("just a file")
    (tmp_path / "contexts.txt").write_text("no placeholder here\n")
    jsonl(tmp_path / "wrongtype.jsonl", [{"prompt": 5}])
    jsonl(tmp_path / "nofield.jsonl", [{"question": "Who?", "reply": "Bob"}])
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "results.json").write_text("{}")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    (tmp_path / "junk-baseline").mkdir()
    (tmp_path / "junk-baseline" / "results.json").write_text("[1, 2, 3]")
    (tmp_path / "bad-edit").mkdir()
    (tmp_path / "bad-edit" / "rocr.json").write_text("{not json")
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    entities = read_records(micro_world / "entities.jsonl")
    skills = list(dict.fromkeys(item["skill"] for item in read_records(micro_world / "skills.jsonl")))
    values = {
        "llama": llama_dir,
        "micro": micro_model,
        "world": micro_world,
        "cache": world_cache,
        "target": next(e["name"] for e in entities if e["exposure"] == 30),
        "skill": skills[0],
        "out": tmp_path / "out",
        "stats": tmp_path / "stats",
        "edited": tmp_path / "bad-edit",
        "prompts": jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Alice was born in"}, {"prompt": "12 +"}]),
        "items": jsonl(
            tmp_path / "items.jsonl",
            [{"prompt": "12 +", "answer": "34"}, {"prompt": "Alice was born in", "answer": "Paris"}],
        ),
        "forget": jsonl(
            tmp_path / "forget.jsonl",
            [{"prompt": "Where was Bob born?", "answer": "Lyon"}, {"prompt": "12 +", "answer": "34"}],
        ),
        "retain": jsonl(tmp_path / "retain.jsonl", [{"prompt": "What is the capital of France?", "answer": "Paris"}]),
        "texts": jsonl(tmp_path / "texts.jsonl", [{"text": f"{t} ({i})"} for i, t in enumerate(CORPUS[:6] * 4)]),
        "corpus": tmp_path / "corpus.txt",
        "binary": tmp_path / "binary.jsonl",
        "binary_txt": tmp_path / "binary.txt",
        "latin1": tmp_path / "latin1.csv",
        "empty": tmp_path / "empty.jsonl",
        "blank": tmp_path / "blank.txt",
        "notobj": tmp_path / "notobj.jsonl",
        "dictjson": tmp_path / "dict.json",
        "xml": tmp_path / "prompts.xml",
        "wrongtype": tmp_path / "wrongtype.jsonl",
        "nofield": tmp_path / "nofield.jsonl",
        "afile": tmp_path / "a_file.txt",
        "badcontexts": tmp_path / "contexts.txt",
        "emptydir": tmp_path / "empty-dir",
        "existing": tmp_path / "existing",
        "mine": tmp_path / "mine",
        "junkbaseline": tmp_path / "junk-baseline",
        "badedit": tmp_path / "bad-edit",
        "missing_jsonl": tmp_path / "missing.jsonl",
        "missing_txt": tmp_path / "missing.txt",
        "missing_dir": tmp_path / "nowhere",
    }
    return {name: str(value) for name, value in values.items()}


def build_args(case: Case, places: dict[str, str]) -> list[str]:
    args = [case.swap.get(a, a) for a in BASE[case.base]]
    for option in case.drop:
        if option.startswith("@"):
            args.remove(option)
        else:
            i = args.index(option)
            del args[i : i + 2]
    return [re.sub(r"@(\w+)", lambda m: places[m.group(1)], a) for a in args + case.extra]


def test_the_matrix_is_large_and_every_command_is_in_it():
    assert len(CASES) >= 90 and len({c.id for c in CASES}) == len(CASES)
    assert {c.base for c in CASES} == set(BASE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case, places, tmp_path, model_dirs, micro_world, micro_model, world_cache, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written relative to the current directory shows in the snapshot
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "llmkit-cache"))
    roots = (tmp_path, Path(model_dirs["llama"]).parent, world_cache, micro_world, micro_model)
    before = tree_snapshot(*roots)
    result = llmkit(*build_args(case, places))
    assert_refused(result, *([case.needle] if case.needle else []), before=before, roots=roots)


# --- SIGTERM while a command works ------------------------------------------------------------


POSIX_SIGNALS = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


STARTUP_TIMEOUT_S = 240
"""How long a command may take to reach the point where the test interrupts it (imports and a
busy machine included)."""


def wait_until(proc: subprocess.Popen, ready, what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Poll `ready()` until it holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            stdout, stderr = proc.communicate()
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}:\n{stderr[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.05)


def maps_file(proc: subprocess.Popen, name: str) -> bool:
    """Whether the process has `name` mapped into memory (safetensors maps the weights it loads)."""
    try:
        return name in Path(f"/proc/{proc.pid}/maps").read_text()
    except OSError:
        return False


def terminate(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"the command did not stop within 120 s of SIGTERM:\n{stderr[-3000:]}")


def assert_terminated(proc: subprocess.Popen, stdout: str, stderr: str) -> None:
    detail = f"exit {proc.returncode}\n--- stdout:\n{stdout[-2000:]}\n--- stderr:\n{stderr[-3000:]}"
    assert proc.returncode == 128 + signal.SIGTERM, detail
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "terminated" in lines[0], detail
    assert "Traceback" not in stderr, detail


def staging(parent: Path, name: str) -> list[str]:
    return [p.name for p in Path(parent).iterdir() if p.name.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def world20(tmp_path_factory):
    from conftest import llmkit

    out = tmp_path_factory.mktemp("signals") / "world"
    result = llmkit("world", "build", "--out", out, "--entities", 20)
    assert result.exit_code == 0, result.output
    return out


@POSIX_SIGNALS
def test_sigterm_during_world_pretrain(world20, tmp_path):
    proc = start_llmkit(
        "world", "pretrain", world20, "--out", tmp_path / "m", "--steps", 100000, *TINY_RECIPE, cwd=tmp_path
    )
    wait_until(proc, lambda: staging(tmp_path, "m"), "staging directory of the pretraining")
    time.sleep(1.0)  # into the training steps
    stdout, stderr = terminate(proc)
    assert_terminated(proc, stdout, stderr)
    assert leftovers(tmp_path, "m") == []


def first_checkpoint(checkpoints: Path) -> bool:
    """A whole checkpoint: llmkit marks one complete after Trainer and the method have saved into it."""
    return any(checkpoints.glob(f"checkpoint-*/{COMPLETE_FILE}"))


def interrupt_then_resume(args, tmp_path: Path, out: Path, record_file: str) -> dict:
    proc = start_llmkit(*args, cwd=tmp_path)
    checkpoints = tmp_path / f"{out.name}.checkpoints"
    wait_until(proc, lambda: first_checkpoint(checkpoints), f"checkpoint in {checkpoints}")
    stdout, stderr = terminate(proc)
    assert_terminated(proc, stdout, stderr)
    assert leftovers(tmp_path, out.name) == [checkpoints.name]  # the checkpoints stay to resume from
    assert list(checkpoints.glob("checkpoint-*"))

    again = start_llmkit(*args, cwd=tmp_path)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    record = json.loads((out / record_file).read_text())
    assert record.get("resumed_from") is not None and str(record["resumed_from"]).startswith("checkpoint-"), record.get(
        "resumed_from"
    )
    assert leftovers(tmp_path, out.name) == [out.name]
    return record


@POSIX_SIGNALS
def test_sigterm_during_unlearn_ga_then_resume(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": f"{t} ({i})"} for i, t in enumerate(CORPUS[:8])])
    out = tmp_path / "g"
    args = (
        "unlearn",
        "ga",
        "-m",
        llama_dir,
        "--forget",
        forget,
        "--out",
        out,
        "--max-steps",
        200,
        "--save-steps",
        10,
        "--batch-size",
        2,
        "--lr",
        "1e-4",
    )
    record = interrupt_then_resume(args, tmp_path, out, "unlearn.json")
    assert record["steps"] == 200


@POSIX_SIGNALS
def test_sigterm_during_train_send_then_resume(llama_dir, tmp_path):
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": f"{t} ({i})"} for i, t in enumerate(CORPUS[:6] * 7)])
    out = tmp_path / "s"
    args = (
        "train",
        "send",
        "-m",
        llama_dir,
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        10,
        "--window",
        2,
        "--drop-epochs",
        1,
        "--eval-samples",
        0,
        "--track-fraction",
        0.1,
        "--batch-size",
        2,
        "--save-steps",
        4,
        "--max-length",
        32,
    )
    interrupt_then_resume(args, tmp_path, out, "train.json")


@POSIX_SIGNALS
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps to see the model loaded")
def test_sigterm_during_eval_ort(micro_model, micro_world, tmp_path):
    targets = ",".join(e["id"] for e in read_records(micro_world / "entities.jsonl"))
    out = tmp_path / "run"
    proc = start_llmkit(
        "eval",
        "ort",
        "-m",
        micro_model,
        "--probes",
        micro_world,
        "--targets",
        targets,
        "--batch-size",
        1,
        "-o",
        out,
        cwd=tmp_path,
    )
    wait_until(proc, lambda: maps_file(proc, "model.safetensors"), "model loaded")
    time.sleep(0.5)  # into the scoring
    stdout, stderr = terminate(proc)
    assert_terminated(proc, stdout, stderr)
    assert leftovers(tmp_path, "run") == []
