"""Fixtures and helpers that tests of several modules use: tiny random-init models of every
supported family built locally once, the micro world and its model, the CLI from a test (in-process
or the installed entry point) with the checks of the bad-input contract, and the small files,
fixtures and constants that tests of several command groups and library modules share."""

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
import torch
from transformers import TrainerCallback
from typer.testing import CliRunner

from llmkit.arch import ARCHITECTURES
from llmkit.commands.cli import app
from llmkit.data import read_records
from llmkit.models import load_model
from tiny import CORPUS, build_model_dir

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


# --- files and checks that tests of several command groups share -------------------------------


BINARY = b"\xff\xfe\x00bad\x80\n"
"""Not UTF-8 anywhere: a UTF-16 byte-order mark, a NUL, a stray continuation byte."""


TEXTS = [f"{line} ({i})" for i, line in enumerate(CORPUS[:6] * 4)]
"""Distinct passages of the tiny corpus (the `texts` fixture's records)."""


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


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Each test works in its tmp_path (so a relative write would show in the snapshot), with
    llmkit's cache there too. The hostile-input tests ask for it with
    `@pytest.mark.usefixtures("isolated")`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "llmkit-cache"))


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


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


@pytest.fixture
def world_forget_set(micro_world, tmp_path):
    """(target, directory): `llmkit data forget-set` for a micro-world entity seen 30 times."""
    target = next(e for e in read_records(micro_world / "entities.jsonl") if e["exposure"] == 30)["name"]
    out = tmp_path / "forget_set"
    result = llmkit("data", "forget-set", "--world", micro_world, "--target", target, "--out", out)
    assert result.exit_code == 0, result.output
    return target, out


# --- ORT probe folders, built from ORT's schema ---------------------------------------------------


def probe(query, answer, subject, type_="cloze", level="1"):
    return {"query": query, "answer": answer, "level": level, "type": type_, "subject": subject}


def write_target(root, index, name, files):
    from llmkit.evals.ort import target_folder

    folder = root / target_folder(index, name)
    folder.mkdir(parents=True)
    for file, records in files.items():
        (folder / f"{file}.json").write_text(json.dumps(records, indent=4))


# --- training: an interruption, weights moved off the reference, SeND's texts ----------------------


def perturb(model, names=("",), scale=0.05):
    """Move the trainable weights away from the reference, so π_θ ≠ π_ref."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and any(n in name for n in names):
                p.add_(scale * torch.randn(p.shape, generator=generator))


class Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


SEND_TEXTS = [
    f"Text number {i} tells of a {['red', 'blue', 'green'][i % 3]} house by the river {i % 5}." for i in range(20)
]
"""The texts SeND trains on and tracks, by the library and from the command line."""


# --- skill unlearning: KSD and Neuron Adjust --------------------------------------------------------


# Skill unlearning on the tiny models: texts of one skill (reversal) to forget, other text to keep,
# and the queries of the forget texts (what a KSD gate is fitted on).
SKILL_FORGET = [
    f"Reverse: {' '.join(w)} => {' '.join(reversed(w))}"
    for w in ("abc", "dcba", "fed", "hgij", "bad", "cafe", "jig", "aced")
]

SKILL_RETAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Alice was born in Paris and works as a painter.",
    "What is the capital of France? The capital of France is Paris.",
    "one two three four five six seven eight nine ten",
]
SKILL_QUERIES = [text.split("=>")[0] + "=>" for text in SKILL_FORGET]


REFUSAL = "I will not answer that."
"""What the session's KSD gate (`reversal_gate`) answers a prompt it refuses with."""


@pytest.fixture(scope="session")
def skill_sets(micro_world, tmp_path_factory):
    """skill -> directory with forget.jsonl and retain.jsonl (`llmkit data skill-set` on the micro
    world), built once per session: the tests only read them."""
    root = tmp_path_factory.mktemp("skill-sets")
    skills = list(dict.fromkeys(item["skill"] for item in read_records(micro_world / "skills.jsonl")))
    for skill in skills:
        result = llmkit("data", "skill-set", "--world", micro_world, "--skill", skill, "--out", root / skill)
        assert result.exit_code == 0, result.output
    return {skill: root / skill for skill in skills}


@pytest.fixture(scope="session")
def reversal_gate(micro_model, skill_sets, tmp_path_factory):
    """A KSD gate (`llmkit unlearn ksd`) fitted on the micro world's reversal skill, once per
    session: the tests only read it."""
    out = tmp_path_factory.mktemp("artifacts") / "ksd-reversal"
    result = llmkit(
        "unlearn",
        "ksd",
        "-m",
        micro_model,
        "--forget",
        skill_sets["reversal"] / "forget.jsonl",
        "--refusal",
        REFUSAL,
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    return out
