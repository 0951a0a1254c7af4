"""SIGTERM (what `timeout`, schedulers and CI send) while a command works: exit code 143, one
stderr line saying it was terminated, no staging directory and no output left; a training run
keeps its checkpoints, and the same command run again resumes from them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, leftovers, start_llmkit
from llmkit.data import read_records
from llmkit.training import COMPLETE_FILE
from tiny import CORPUS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

STARTUP_TIMEOUT_S = 240
"""How long a command may take to reach the point where the test interrupts it (imports and a
busy machine included)."""


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


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
