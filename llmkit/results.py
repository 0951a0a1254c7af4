"""Run results: `results.json` (command, config, versions, git commit, timings, metrics) and
`samples.jsonl` (one line per probe or prompt), written so that an output directory appears whole
or not at all, and never replaces an existing one unless asked to.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmkit import __version__
from llmkit.data import dumps_jsonl
from llmkit.errors import BadInputError

RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.jsonl"


def check_output_path(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless `overwrite`; call it before any slow work starts."""
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise BadInputError(f"output path {path} already exists; pass --overwrite to replace it")
    if path.exists() and not path.is_dir():
        raise BadInputError(f"output path {path} is a file; --output-path names a directory")
    return path


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {
        "llmkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def git_commit() -> str | None:
    """The commit of the llmkit source tree, when llmkit runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def make_results(
    command: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    *,
    wall_time_s: float,
    num_samples: int | None = None,
    probe_digest: str | None = None,
) -> dict[str, Any]:
    """The results document every command writes and prints with `--json`. Evaluations give the
    digest of their probes, by which a later run recognises this one as its baseline."""
    results = {
        "command": command,
        "metrics": dict(metrics),
        "config": dict(config),
        "num_samples": num_samples,
        "wall_time_s": round(wall_time_s, 3),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "git_commit": git_commit(),
    }
    if probe_digest is not None:
        results["probe_digest"] = probe_digest
    return results


def dumps_results(results: Mapping[str, Any]) -> str:
    return json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n"


@contextmanager
def staged_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling directory to write into; on success it replaces `path` in one
    rename, on any error it is removed. Readers never see a half-written output."""
    path = check_output_path(path, overwrite)
    staging = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise BadInputError(f"cannot write to {path.parent} ({err.strerror}); choose another output path") from None
    try:
        yield staging
        if path.exists():
            retired = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(retired)
            staging.rename(path)
            shutil.rmtree(retired)
        else:
            staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_run(
    path: str | Path,
    results: Mapping[str, Any],
    samples: Iterable[Mapping[str, Any]] | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `results.json` (and `samples.jsonl`, and `files`: name -> bytes, such as plots) into
    the run directory `path`, atomically."""
    with staged_directory(path, overwrite=overwrite) as staging:
        (staging / RESULTS_FILE).write_text(dumps_results(results), encoding="utf-8")
        if samples is not None:
            (staging / SAMPLES_FILE).write_text(dumps_jsonl(samples), encoding="utf-8")
        for name, content in (files or {}).items():
            (staging / name).write_bytes(content)
    return Path(path).expanduser()
