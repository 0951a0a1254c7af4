"""Run results: `results.json` (command, config, versions, git commit, timings, metrics) and
`samples.jsonl` (one line per probe or prompt), written so that an output directory appears whole
or not at all, and never replaces an existing one unless asked to.
"""

from __future__ import annotations

import json
import os
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


NAME_MAX = 255
"""Bytes in one file name on the usual file systems (ext4, APFS, NTFS)."""
OUTPUT_MARKERS = (
    "results.json",
    "config.json",
    "adapter_config.json",
    "world.json",
    "intervention.json",
    "forget.jsonl",
)
"""One of these is in every directory llmkit writes (runs, models, adapters, worlds, artifacts,
data sets): --overwrite replaces only such a directory, never one of the user's own."""


def check_output_path(path: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an output path that cannot be written, before any slow work starts: an existing
    one without `overwrite`, a file, a directory llmkit did not write, the current directory or
    one holding it, one that is or holds one of the command's `inputs`, a name too long for the
    file system, a parent that is not writable."""
    path = Path(path).expanduser()
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise BadInputError(
            f"output name {path.name[:40]}... is too long "
            f"({len(os.fsencode(path.name))} bytes; file names are at most {NAME_MAX})"
        )
    resolved = path.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise BadInputError(
            f"output path {path} is the current directory or holds it; name a new directory to write to"
        )
    for source in inputs:
        local = Path(source).expanduser().resolve() if source is not None and str(source) != "-" else None
        if local is not None and local.exists() and (local == resolved or resolved in local.parents):
            raise BadInputError(f"output path {path} is or holds the input {source}; choose another output path")
    if path.exists() and not path.is_dir():
        raise BadInputError(f"output path {path} is a file; name a directory to write to")
    if path.exists() and not overwrite:
        raise BadInputError(f"output path {path} already exists; pass --overwrite to replace it")
    if path.exists() and any(path.iterdir()) and not any((path / marker).exists() for marker in OUTPUT_MARKERS):
        raise BadInputError(
            f"output path {path} holds files llmkit did not write; --overwrite replaces only an earlier llmkit output, "
            "so remove them or choose another path"
        )
    parent = next(p for p in resolved.parents if p.exists())
    if not parent.is_dir():
        raise BadInputError(f"cannot write to {parent} (it is a file); choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write to {parent} (permission denied); choose another output path")
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
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
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


def group_order(groups: Iterable[str]) -> list[str]:
    """Distinct group names in reading order, numbers compared as numbers ("exposure 3" before
    "exposure 10")."""
    import re

    def key(name: str) -> list[Any]:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]

    return sorted(dict.fromkeys(groups), key=key)


def dumps_results(results: Mapping[str, Any]) -> str:
    return json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n"


def _sibling(path: Path, tag: str) -> Path:
    """A hidden, unique sibling of `path` (`.NAME.tag-XXXXXXXX`), NAME shortened to keep the
    sibling's name within NAME_MAX."""
    room = NAME_MAX - len(f"..{tag}-") - 8
    name = os.fsencode(path.name)[:room].decode(errors="ignore")
    return path.parent / f".{name}.{tag}-{uuid.uuid4().hex[:8]}"


@contextmanager
def staged_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling directory to write into; on success it replaces `path` in one
    rename, on any error (or an interrupt) it is removed. Readers never see a half-written
    output. An output that appeared meanwhile (another run writing the same path) is replaced
    only with `overwrite`: without it, this run fails and the other's output stays."""
    path = check_output_path(path, overwrite)
    staging = _sibling(path, "tmp")
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        raise BadInputError(f"cannot create {path} ({err.strerror}); choose another output path") from None
    try:
        yield staging
        if path.exists() and not overwrite:
            raise _appeared(path)
        if path.exists():
            retired = _sibling(path, "old")
            path.rename(retired)
            staging.rename(path)
            shutil.rmtree(retired)
        else:
            try:
                staging.rename(path)
            except OSError as err:  # another run's output got there between the check and the rename
                raise _appeared(path) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _appeared(path: Path) -> BadInputError:
    return BadInputError(
        f"output path {path} was written by another run while this one worked; it was left as it is, "
        "and this run's output was not written (rerun with --overwrite to replace it)"
    )


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
