"""What every evaluation shares: dotted metric names, thresholds, probe digests and baselines.

An evaluation's `metrics` is a nested dict (`{"forget": {"qa": {"prob": 0.41}}}`); its metrics are
named by their dotted paths (`forget.qa.prob`). Thresholds (`--fail-over` / `--fail-under
METRIC=VALUE`) name those paths; a baseline is an earlier run of the same command on the same
probes, recognised by the digest of its probes in results.json.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.errors import BadInputError
from llmkit.results import RESULTS_FILE


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric metric by its dotted name; None (not measured) and non-numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif _is_number(value):
            flat[name] = float(value)
    return flat


@dataclass(frozen=True)
class Threshold:
    """A bound a CI job puts on one metric of a run."""

    metric: str
    value: float
    kind: str
    """"over" (--fail-over): the run fails when the metric is above `value`; "under": below it."""

    def missed_by(self, measured: float) -> bool:
        return measured > self.value if self.kind == "over" else measured < self.value

    def describe(self, measured: float) -> str:
        limit = "at most" if self.kind == "over" else "at least"
        return f"{self.metric} = {measured:.6g}, wanted {limit} {self.value:g} (--fail-{self.kind})"


def parse_thresholds(fail_over: Iterable[str] = (), fail_under: Iterable[str] = ()) -> list[Threshold]:
    """`METRIC=VALUE` strings from --fail-over and --fail-under."""
    thresholds = []
    for kind, texts in (("over", fail_over), ("under", fail_under)):
        for text in texts:
            metric, sep, value = text.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not sep or not metric.strip() or math.isnan(number):
                raise BadInputError(f"--fail-{kind} takes METRIC=VALUE, e.g. forget.qa.prob=0.1; got {text!r}")
            thresholds.append(Threshold(metric.strip(), number, kind))
    return thresholds


def check_metric_names(thresholds: Sequence[Threshold], metrics: Mapping[str, Any]) -> None:
    """Refuse thresholds on metrics the run does not have, listing the names it has. Called before
    any result is written, so a mistyped name leaves nothing behind."""
    names = flatten_metrics(metrics)
    unknown = [t.metric for t in thresholds if t.metric not in names]
    if unknown:
        raise BadInputError(
            f"no metric named {', '.join(map(repr, unknown))}; this run has: {', '.join(sorted(names))}"
        )


def missed_thresholds(thresholds: Sequence[Threshold], metrics: Mapping[str, Any]) -> list[str]:
    """One line per threshold the metrics miss (empty when the run passes)."""
    names = flatten_metrics(metrics)
    return [t.describe(names[t.metric]) for t in thresholds if t.missed_by(names[t.metric])]


def probe_digest(probes: Iterable[Mapping[str, Any]]) -> str:
    """A digest of the probes an evaluation ran on (order included): equal digests, same probes."""
    sha = hashlib.sha256()
    for probe in probes:
        sha.update(json.dumps(probe, sort_keys=True, ensure_ascii=False).encode())
        sha.update(b"\n")
    return sha.hexdigest()[:16]


def read_baseline(run_dir: str | Path, command: str) -> dict[str, Any]:
    """The results.json of an earlier run of `command` to compare with, its metrics numbers;
    read before any work starts, so that a wrong --baseline fails at once."""
    path = Path(run_dir).expanduser() / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            f"--baseline {run_dir}: no {RESULTS_FILE} there; pass the directory of an earlier run"
        ) from None
    except (OSError, ValueError) as err:
        raise BadInputError(f"--baseline {run_dir}: cannot read {RESULTS_FILE} ({err})") from None
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), Mapping):
        raise BadInputError(f"--baseline {run_dir}: {RESULTS_FILE} holds no metrics object; pass the directory of an earlier run")
    damaged = [name for name, value in _leaves(results["metrics"]) if not _is_number(value) and value is not None]
    if damaged:
        raise BadInputError(f"--baseline {run_dir}: metric {damaged[0]!r} in {RESULTS_FILE} is not a number; the file is damaged")
    if results.get("command") != command:
        raise BadInputError(
            f"--baseline {run_dir} is a run of {results.get('command')!r}, not {command!r}; "
            "pass a run of the same command"
        )
    return results


def load_baseline(run_dir: str | Path, command: str, digest: str) -> dict[str, Any]:
    """`read_baseline`, and it must come from probes with this `digest`, or the comparison would
    mean nothing."""
    results = read_baseline(run_dir, command)
    if results.get("probe_digest") != digest:
        raise BadInputError(
            f"--baseline {run_dir} ran on other probes (digest {results.get('probe_digest')}, this run {digest}); "
            "pass a run on the same probes"
        )
    return results


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _leaves(metrics: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted name, value) of every leaf of a nested metrics dict, lists included as leaves."""
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def limit_per_group(items: Sequence[Mapping[str, Any]], limit: int, key: str) -> list[Any]:
    """The first `limit` items of each value of `item[key]` (items without it form one group)."""
    seen: dict[Any, int] = {}
    kept = []
    for item in items:
        group = item.get(key)
        seen[group] = seen.get(group, 0) + 1
        if seen[group] <= limit:
            kept.append(item)
    return kept
