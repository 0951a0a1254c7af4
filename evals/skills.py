"""Skill accuracy: greedy exact match on each skill's items, with the abstention rate and, against
a baseline run, each skill's relative performance after/before (the skill-unlearning paper's
metric; abstentions count as wrong).

Items come from a world (the test split of its skills, and its fact QA about well-known entities
as the `facts` skill: the general-knowledge role MMLU plays in the paper) or from files of
prompt/answer records, one per skill; `SkillsEval` is the evaluation as `llmkit eval skills` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table

from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.common import EvalRun, cell, chat_items, limit_per_group, probe_digest
from llmkit.evals.greedy import accuracy, answer_items
from llmkit.evals.plots import grouped_bars
from llmkit.generation import Backend, Progress
from llmkit.world.forget_set import KNOWN_EXPOSURE
from llmkit.world.forms import phrasing

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

MAX_NEW_TOKENS = 24
FACTS_SKILL = "facts"


def world_skill_items(world_dir: str | Path, split: str = "test") -> list[dict[str, Any]]:
    """The world's skill items of `split`, then QA probes about entities seen ≥ 10 times as `facts`."""
    world_dir = Path(world_dir).expanduser()
    if not (world_dir / "skills.jsonl").is_file() or not (world_dir / "probes.jsonl").is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no skills.jsonl); build one with `llmkit world build`"
        )
    skills = [
        {k: item[k] for k in ("skill", "prompt", "answer")}
        for item in read_records(world_dir / "skills.jsonl")
        if item["split"] == split
    ]
    facts = [
        {"skill": FACTS_SKILL, "prompt": p["prompt"], "answer": p["answer"]}
        for p in read_records(world_dir / "probes.jsonl")
        if p["form"] == "qa" and phrasing(p) == "trained" and p["exposure"] >= KNOWN_EXPOSURE
    ]
    return skills + facts


def parse_skill_files(specs: Sequence[str]) -> list[dict[str, Any]]:
    """Items from `NAME=FILE` specs, each FILE holding prompt/answer records."""
    items = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise BadInputError(f"--skill takes NAME=FILE, e.g. math=gsm8k.jsonl; got {spec!r}")
        records = read_records(path.strip(), required={"prompt": str, "answer": str})
        if not records:
            raise BadInputError(f"--skill {spec}: {path.strip()} has no records")
        items += [{"skill": name.strip(), "prompt": r["prompt"], "answer": r["answer"]} for r in records]
    return items


def skills_digest(items: Sequence[Mapping[str, Any]]) -> str:
    return probe_digest({k: item[k] for k in ("skill", "prompt", "answer")} for item in items)


def evaluate_skills(
    backend: Backend,
    items: Sequence[dict[str, Any]],
    progress: Progress | None = None,
    *,
    refusals: Sequence[str] = (),
    baseline_metrics: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-item samples). Metrics per skill: `accuracy`, `abstention` (the answer is one
    of `refusals`); with a baseline run's metrics, `relative` (accuracy / baseline accuracy) and
    `drop` (1 − relative), None where the baseline scored 0."""
    samples = answer_items(backend, items, MAX_NEW_TOKENS, progress)
    refused = {r.strip() for r in refusals}
    for sample in samples:
        sample["abstained"] = sample["generation"] in refused
    skills = list(dict.fromkeys(s["skill"] for s in samples))
    by_skill = {k: [s for s in samples if s["skill"] == k] for k in skills}
    metrics: dict[str, Any] = {
        "accuracy": {k: accuracy(mine) for k, mine in by_skill.items()},
        "abstention": {k: sum(s["abstained"] for s in mine) / len(mine) for k, mine in by_skill.items()},
        "num_items": {k: len(mine) for k, mine in by_skill.items()},
    }
    if baseline_metrics is not None:
        before = baseline_metrics.get("accuracy", {})
        relative = {k: metrics["accuracy"][k] / before[k] if before.get(k) else None for k in skills}
        metrics["relative"] = relative
        metrics["drop"] = {k: None if r is None else 1 - r for k, r in relative.items()}
    return metrics, samples


def plot_skills(metrics: Mapping[str, Any], baseline_metrics: Mapping[str, Any] | None) -> bytes:
    """PNG: accuracy per skill, the baseline's bars beside this run's."""
    skills = list(metrics["accuracy"])
    runs = {"baseline": baseline_metrics, "this run": metrics} if baseline_metrics else {"this run": metrics}
    series = {label: [run["accuracy"].get(k) for k in skills] for label, run in runs.items()}
    return grouped_bars("Skills: greedy exact-match accuracy", {"accuracy by skill": series}, skills, "accuracy")


def skills_table(metrics: Mapping[str, Any]) -> Table:
    """Accuracy and abstention per skill; relative performance and drop against a baseline."""
    table = Table(title="Skills: greedy exact-match accuracy", title_justify="left")
    for column in ("skill", "items", "accuracy", "abstained"):
        table.add_column(column, justify="left" if column == "skill" else "right")
    compared = "relative" in metrics
    if compared:
        table.add_column("after/before", justify="right")
        table.add_column("drop", justify="right")
    for skill, value in metrics["accuracy"].items():
        row = [skill, str(metrics["num_items"][skill]), cell(value, percent=True)]
        row.append(cell(metrics["abstention"][skill], percent=True))
        if compared:
            row += [cell(metrics["relative"][skill], percent=True), cell(metrics["drop"][skill], percent=True)]
        table.add_row(*row)
    return table


@dataclass(frozen=True)
class SkillsEval:
    """`llmkit eval skills` (an `Evaluation`): each skill's items, answered greedily."""

    items: list[dict[str, Any]]
    config: dict[str, Any]
    inputs: tuple[str | Path | None, ...]
    command: ClassVar[str] = "eval skills"
    seed: ClassVar[int | None] = None

    @classmethod
    def load(
        cls, world: str | Path | None = None, skill_files: Sequence[str] = (), limit: int | None = None
    ) -> SkillsEval:
        """The items of a world (`world_skill_items`) or of `NAME=FILE` specs, the first `limit` of each skill."""
        if (world is None) == (not skill_files):
            raise BadInputError("name the items: --world DIR, or --skill NAME=FILE (repeatable)")
        items = world_skill_items(world) if world is not None else parse_skill_files(skill_files)
        if limit is not None:
            items = limit_per_group(items, limit, "skill")
        config = {"world": str(world) if world else None, "skills": list(skill_files)}
        return cls(items, config, (world, *(spec.partition("=")[2] for spec in skill_files)))

    def __len__(self) -> int:
        return len(self.items)

    def metric_names(self, compared: bool) -> set[str]:
        stats = ("accuracy", "abstention", "num_items") + (("relative", "drop") if compared else ())
        return {f"{stat}.{skill}" for stat in stats for skill in {item["skill"] for item in self.items}}

    def chat_wrapped(self, tokenizer: PreTrainedTokenizerBase, chat: bool) -> SkillsEval:
        return replace(self, items=chat_items(self.items, tokenizer, chat))

    def digest(self) -> str:
        return skills_digest(self.items)

    def evaluate(
        self, backend: Backend, baseline_metrics: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> EvalRun:
        """`evaluate_skills`, an intervened backend's refusals counted as abstentions."""
        refusals = getattr(backend, "refusals", ())
        metrics, samples = evaluate_skills(
            backend, self.items, progress, refusals=refusals, baseline_metrics=baseline_metrics
        )
        return EvalRun(metrics, samples)

    def plots(self, run: EvalRun, baseline_metrics: Mapping[str, Any] | None) -> dict[str, bytes]:
        return {"skills.png": plot_skills(run.metrics, baseline_metrics)}

    def table(self, run: EvalRun) -> Table:
        return skills_table(run.metrics)
