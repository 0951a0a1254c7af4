"""Session fixtures: tiny random-init models of every supported family, built locally once."""

from __future__ import annotations

import hashlib
import json
import operator
import os
import shutil
import subprocess
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmkit.arch import ARCHITECTURES
from llmkit.commands.cli import app
from llmkit.models import load_model
from tiny import build_model_dir

FAMILIES = sorted(ARCHITECTURES)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {family: build_model_dir(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def llama_dir(model_dirs) -> Path:
    return model_dirs["llama"]


@pytest.fixture(scope="session")
def loaded_models(model_dirs):
    """family -> (model, tokenizer), loaded on CPU in float32."""
    return {family: load_model(str(path), device="cpu", dtype="float32") for family, path in model_dirs.items()}


BOUND_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@pytest.fixture
def bound(record_property):
    """`bound(name, value, ">=", limit)` asserts a trained outcome against its stated bound and
    records both in the JUnit report, from which `make test-machines` tabulates every margin
    across CPU capabilities (scripts/margins.py)."""

    def check(name: str, value: float, op: str, limit: float) -> None:
        record_property(name, json.dumps({"value": value, "op": op, "bound": limit}))
        assert BOUND_OPS[op](value, limit), f"{name} = {value:.4g}, bound {op} {limit}"

    return check


PROMPTS = [
    "Alice was born in",
    "What is the capital of France? The capital of France is",
    "12 +",
    "one two three four five six seven",
    "Question: Where was Bob born? Answer:",
]


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> Path:
    """A cache holding the micro world, built once per session and shared by every test that
    needs a model whose knowledge is known."""
    from llmkit.world.cache import ensure_world, preset

    cache = tmp_path_factory.mktemp("llmkit-cache")
    ensure_world(cache, preset("micro")[0])
    return cache


@pytest.fixture(scope="session")
def micro_world(world_cache) -> Path:
    from llmkit.world.cache import preset, world_dir

    return world_dir(world_cache, preset("micro")[0])


@pytest.fixture(scope="session")
def micro_model(world_cache) -> Path:
    """The micro world's model as shipped with llmkit: the same weights on every machine, so
    what it knows, and where training takes it, does not depend on this CPU's kernels."""
    from llmkit.world.cache import ensure_model, preset

    path, source = ensure_model(world_cache, *preset("micro"))
    assert source == "shipped", "the shipped micro model does not match the micro world; run `make world-models`"
    return path


# --- the CLI from a test: CliRunner in-process, or the installed entry point -----------------------

runner = CliRunner()

TINY_RECIPE = ("--layers", "1", "--d-model", "32", "--heads", "2", "--d-mlp", "64", "--batch-size", "4")
"""`llmkit world pretrain` options for a model that trains in a second (add --steps)."""


def llmkit(*args):
    """Run `llmkit ARGS...` in-process (arguments may be paths or numbers)."""
    return runner.invoke(app, [str(a) for a in args])


def assert_bad_input(result, message, output=None):
    """Exit 2, exactly one line on stderr naming the problem, no traceback, nothing written."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""
    if output is not None:
        assert not output.exists()
        assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]


LLMKIT_EXE = shutil.which("llmkit", path=os.path.dirname(sys.executable)) or "llmkit"
"""The installed console script, as a user's shell runs it."""


def tree_snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under `roots` (hidden ones included): directories by name, files by size,
    mtime and (up to 2 MiB) content digest. Equal snapshots: nothing was written, replaced or left behind."""
    seen: dict[str, tuple] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for folder, dirs, files in os.walk(root):
            seen[folder] = ("dir",)
            for name in files:
                path = os.path.join(folder, name)
                try:
                    stat = os.lstat(path)
                    digest = None
                    if stat.st_size <= 2**21:  # larger files: size and mtime only
                        with open(path, "rb") as handle:
                            digest = hashlib.sha256(handle.read()).hexdigest()
                except OSError:
                    stat, digest = None, None
                seen[path] = ("file", stat and stat.st_size, stat and stat.st_mtime_ns, digest)
    return seen


def snapshot_diff(before: dict[str, tuple], after: dict[str, tuple]) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    return f"added {added[:10]}, removed {removed[:10]}, changed {changed[:10]}"


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _exception_text(result) -> str:
    if getattr(result, "exc_info", None) and result.exc_info[0] not in (None, SystemExit):
        return "".join(traceback.format_exception(*result.exc_info))[-3000:]
    return ""


def assert_one_error_line(
    exit_code: int, stdout: str, stderr: str, *needles: str, exception: str = "", code: int = 2
) -> str:
    """The bad-input contract on the terminal: exit `code`, exactly one stderr line, starting
    `error: ` and holding every needle (case-insensitive), no traceback, nothing on stdout.
    Returns the line."""
    detail = f"exit {exit_code}\n--- stdout:\n{stdout[-2000:]}\n--- stderr:\n{stderr[-3000:]}\n{exception}"
    assert exit_code == code, detail
    lines = _stderr_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), detail
    assert "Traceback" not in stderr and "Traceback" not in stdout, detail
    assert stdout == "", detail
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def assert_refused(result, *needles: str, before: dict | None = None, roots=()) -> str:
    """A CliRunner result that is bad input: the one-line contract, and (given the snapshot
    `before` of `roots`) the file system exactly as it was."""
    line = assert_one_error_line(
        result.exit_code, result.stdout, result.stderr, *needles, exception=_exception_text(result)
    )
    if before is not None:
        after = tree_snapshot(*roots)
        assert after == before, f"the file system changed: {snapshot_diff(before, after)}"
    return line


def assert_process_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """`assert_refused` for a subprocess of the entry point."""
    return assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, *needles)


def leftovers(parent: Path, name: str) -> list[str]:
    """What a run writing `parent/name` may leave: the output, its hidden staging/retired
    siblings (`.NAME.tmp-XXXXXXXX`), its checkpoints (`NAME.checkpoints`)."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    return sorted(
        p.name for p in parent.iterdir() if p.name in (name, f"{name}.checkpoints") or p.name.startswith(f".{name}.")
    )


def llmkit_env(**changes: str | None) -> dict[str, str]:
    """os.environ for a subprocess, with `changes` (None removes a variable)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_llmkit(
    *args, timeout: float = 300, env: dict[str, str] | None = None, cwd=None, input: str | None = None
) -> subprocess.CompletedProcess:
    """The installed entry point in a fresh process."""
    return subprocess.run(
        [LLMKIT_EXE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or llmkit_env(),
        cwd=cwd,
        input=input,
    )


def start_llmkit(*args, env: dict[str, str] | None = None, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(
        [LLMKIT_EXE, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or llmkit_env(),
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def no_bos_dir(model_dirs, tmp_path_factory) -> Path:
    """The tiny GPT-2 with a tokenizer that adds no BOS token (every tiny model's tokenizer here,
    like the world models', prepends one): an empty prompt encodes to no tokens at all."""
    path = tmp_path_factory.mktemp("no-bos") / "gpt2"
    shutil.copytree(model_dirs["gpt2"], path)
    spec = json.loads((path / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (path / "tokenizer.json").write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="session")
def short_context_dir(tmp_path_factory) -> Path:
    """A tiny GPT-2 that reads at most 64 positions (n_positions=64)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tiny import build_tokenizer, tiny_config

    path = tmp_path_factory.mktemp("short-context") / "gpt2"
    tokenizer = build_tokenizer()
    config = tiny_config("gpt2", len(tokenizer))
    config.n_positions = 64
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
