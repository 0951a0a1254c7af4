"""What every evaluation shares: dotted metric names, thresholds, probe digests, baselines, and
the `Evaluation` protocol by which `llmkit eval` runs each one.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmkit.errors import BadInputError
from llmkit.results import RESULTS_FILE

if TYPE_CHECKING:
    from rich.table import Table
    from transformers import PreTrainedTokenizerBase

    from llmkit.generation import Backend, Progress


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
    check_threshold_names(thresholds, flatten_metrics(metrics))


def check_threshold_names(thresholds: Sequence[Threshold], names: Iterable[str]) -> None:
    """`check_metric_names` against the dotted `names` a run has (or, before it, can have)."""
    names = set(names)
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
        raise BadInputError(
            f"--baseline {run_dir}: {RESULTS_FILE} holds no metrics object; pass the directory of an earlier run"
        )
    damaged = [name for name, value in _leaves(results["metrics"]) if not _is_number(value) and value is not None]
    if damaged:
        raise BadInputError(
            f"--baseline {run_dir}: metric {damaged[0]!r} in {RESULTS_FILE} is not a number; the file is damaged"
        )
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


def chat_items(
    items: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, chat: bool
) -> list[dict[str, Any]]:
    """Prompt records with each prompt rendered as a user turn of the chat template when `chat`."""
    from llmkit.generation import chat_wrap

    return [{**item, "prompt": chat_wrap(tokenizer, item["prompt"])} if chat else dict(item) for item in items]


@dataclass
class EvalRun:
    """What one evaluation measured."""

    metrics: dict[str, Any]
    samples: list[dict[str, Any]]
    """One record per item, as samples.jsonl holds them."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Further top-level entries of results.json (ORT's `per_target`)."""


class Evaluation(Protocol):
    """An evaluation with its items loaded, as `llmkit eval` runs it: wrapped in the model's chat
    template once its tokenizer is known, recognised by its digest, then scored, optionally
    against a baseline run's metrics. Each eval module has one (`OrtEval`, `SkillsEval`,
    `HallucinationEval`), built by its `load` from what the command's options name."""

    command: str
    """Its command in results.json; a baseline must be a run of the same one."""
    config: dict[str, Any]
    """Its own settings, for results.json's config."""
    inputs: Sequence[str | Path | None]
    """The files and folders it reads (an output path must be none of them)."""

    @property
    def seed(self) -> int | None:
        """The backend's sampling seed."""

    def __len__(self) -> int:
        """The items to score."""

    def metric_names(self, compared: bool) -> set[str]:
        """The dotted names of every metric the run can report (with a baseline when `compared`),
        known before scoring; a superset where a metric may come out None."""

    def chat_wrapped(self, tokenizer: PreTrainedTokenizerBase, chat: bool) -> Evaluation:
        """The same items with their prompts in the chat template when `chat`."""

    def digest(self) -> str:
        """The digest of the items as scored, which a baseline run must share."""

    def evaluate(
        self, backend: Backend, baseline_metrics: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> EvalRun:
        """Score the items; compared with a baseline run's metrics when given."""

    def plots(self, run: EvalRun, baseline_metrics: Mapping[str, Any] | None) -> dict[str, bytes]:
        """PNG files by name, for --plot."""

    def table(self, run: EvalRun) -> Table:
        """The run's figures as the command prints them."""


def cell(value: float | None, percent: bool = False) -> str:
    """A table cell: three decimals, or a whole percentage; "-" where not measured."""
    if value is None:
        return "-"
    return f"{100 * value:.0f}%" if percent else f"{value:.3f}"
