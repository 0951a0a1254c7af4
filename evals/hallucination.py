"""Hallucination detection by EigenScore: K sampled answers per prompt, their EigenScore (high when
the answers scatter), and how well that score flags the prompts the model answers wrong.

Correctness is the greedy answer's exact match with the gold answer (INSIDE judges the most
likely generation); the detection figure is the AUROC of the EigenScore for "wrong" (scikit-learn).
Prompts come from any prompt/answer records (an optional `group` field is reported per group), or
from a world: its QA probes about entities of chosen exposures (0: never seen, 30: well known).
`HallucinationEval` is the evaluation as `llmkit eval hallucination` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from rich.table import Table
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit.configs import (  # re-exported: INSIDE's and SeND's sampling, and the answer length
    MAX_NEW_TOKENS as MAX_NEW_TOKENS,
)
from llmkit.configs import SAMPLES as SAMPLES
from llmkit.configs import TEMPERATURE as TEMPERATURE
from llmkit.configs import TOP_K as TOP_K
from llmkit.configs import TOP_P as TOP_P
from llmkit.configs import HallucinationConfig, Placement
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.common import EvalRun, cell, chat_items, limit_per_group, probe_digest
from llmkit.evals.greedy import accuracy, answer_items
from llmkit.evals.plots import histograms
from llmkit.generation import Backend, GenerationParams, HFBackend, Progress, hf_model
from llmkit.methods.configs import ContinuedTrainingConfig
from llmkit.metrics.eigenscore import METHODS, EESConfig, eigenscore, sampled_answers
from llmkit.metrics.text import exact_match
from llmkit.world.forms import phrasing
from llmkit.world.generator import parse_exposures

WORLD_EXPOSURES = (0, 30)


def world_items(world_dir: str | Path, exposures: Sequence[int] = WORLD_EXPOSURES) -> list[dict[str, Any]]:
    """The world's QA probes (trained phrasings) about entities of `exposures`, grouped by exposure."""
    path = Path(world_dir).expanduser() / "probes.jsonl"
    if not path.is_file():
        raise BadInputError(
            f"{world_dir} is not a world directory (no probes.jsonl); build one with `llmkit world build`"
        )
    probes = [p for p in read_records(path) if p["form"] == "qa" and phrasing(p) == "trained"]
    items = [
        {"prompt": p["prompt"], "answer": p["answer"], "group": f"exposure {p['exposure']}"}
        for p in probes
        if p["exposure"] in exposures
    ]
    if not items:
        seen = sorted({p["exposure"] for p in probes})
        raise BadInputError(
            f"{world_dir} has no QA probes of exposure {', '.join(map(str, exposures))}; "
            f"it has {', '.join(map(str, seen))}"
        )
    return items


def read_items(source: str | Path, correctness: bool) -> list[dict[str, Any]]:
    """Prompt records: prompt, and answer and group where they have them; with correctness, every
    one needs its answer."""
    records = read_records(source, required={"prompt": str})
    if not records:
        raise BadInputError(f"{source} has no records")
    missing = sum(not isinstance(r.get("answer"), str) for r in records)
    if correctness and missing:
        raise BadInputError(
            f"{source}: {missing} of {len(records)} prompts have no 'answer' to score correctness against; "
            "add answers, or pass --no-correctness to report EigenScores only"
        )
    return [{k: r[k] for k in ("prompt", "answer", "group") if k in r} for r in records]


def auroc(wrong: Sequence[bool], scores: Sequence[float]) -> float | None:
    """AUROC of `scores` for detecting wrong answers; None when every answer is right, or every one wrong."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(wrong, scores)) if 0 < sum(wrong) < len(wrong) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(samples: Sequence[Mapping[str, Any]], correctness: bool) -> dict[str, Any]:
    """Metrics of scored samples: EigenScore means (overall, of right and of wrong answers, per
    group); with correctness, accuracy, sampled-answer accuracy and the AUROC."""
    scores = [s["eigenscore"] for s in samples]
    metrics: dict[str, Any] = {"num_prompts": len(samples), "eigenscore": {"mean": _mean(scores)}}
    if correctness:
        metrics["auroc"] = auroc([not s["correct"] for s in samples], scores)
        metrics["accuracy"] = accuracy(samples)
        metrics["sample_accuracy"] = _mean([s["sample_accuracy"] for s in samples])
        metrics["eigenscore"]["correct"] = _mean([s["eigenscore"] for s in samples if s["correct"]])
        metrics["eigenscore"]["wrong"] = _mean([s["eigenscore"] for s in samples if not s["correct"]])
    groups = list(dict.fromkeys(s["group"] for s in samples if "group" in s))
    if groups:
        metrics["groups"] = {}
        for group in groups:
            mine = [s for s in samples if s.get("group") == group]
            entry: dict[str, Any] = {"num_prompts": len(mine), "eigenscore": _mean([s["eigenscore"] for s in mine])}
            if correctness:
                entry["accuracy"] = accuracy(mine)
            metrics["groups"][group] = entry
    return metrics


def baseline_summary(baseline_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A baseline run's AUROC, accuracy and mean EigenScore, reported beside this run's."""
    summary = {k: baseline_metrics.get(k) for k in ("auroc", "accuracy")}
    return summary | {"eigenscore": baseline_metrics["eigenscore"]["mean"]}


def evaluate_hallucination(
    backend: Backend,
    model: PreTrainedModel,
    items: Sequence[dict[str, Any]],
    params: GenerationParams,
    *,
    correctness: bool = True,
    method: str = "auto",
    compare: str | None = None,
    config: EESConfig = EESConfig(),
    progress: Progress | None = None,
    baseline_metrics: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, per-prompt samples): K sampled answers per prompt (stopped at a newline) and their
    EigenScore by `method`; with correctness, the greedy answer, whether it is right, and the share
    of sampled answers that are right. `compare` scores the same answers by a second method too
    (per-prompt `eigenscore_<method>`; its AUROC as `auroc_<method>`). `progress` counts prompts.
    With a baseline run's metrics, `baseline` holds its figures (`baseline_summary`)."""
    texts, embeddings = sampled_answers(backend, model, [item["prompt"] for item in items], params, progress)
    samples = [
        {**item, "samples": [t.strip() for t in answers], "eigenscore": eigenscore(z, method=method, config=config)}
        for item, answers, z in zip(items, texts, embeddings)
    ]
    if compare:
        for sample, z in zip(samples, embeddings):
            sample[f"eigenscore_{compare}"] = eigenscore(z, method=compare, config=config)
    if correctness:
        greedy = answer_items(backend, items, params.max_new_tokens)
        for sample, answered in zip(samples, greedy):
            sample["generation"], sample["correct"] = answered["generation"], answered["correct"]
            sample["sample_accuracy"] = _mean([exact_match(t, sample["answer"]) for t in sample["samples"]])
    metrics = summarize(samples, correctness)
    if compare and correctness:
        metrics[f"auroc_{compare}"] = auroc(
            [not s["correct"] for s in samples], [s[f"eigenscore_{compare}"] for s in samples]
        )
    if baseline_metrics is not None:
        metrics["baseline"] = baseline_summary(baseline_metrics)
    return metrics, samples


def epoch_evaluation(
    tokenizer: PreTrainedTokenizerBase, protocol: ContinuedTrainingConfig, test_texts: Sequence[str], seed: int
) -> Callable[[PreTrainedModel], dict[str, Any]] | None:
    """What `train sft | send` log after every epoch (`training.EpochEvaluation`), None for nothing:
    the EES of `protocol.eval_samples` answers, sampled as INSIDE and SeND do, to each of the
    first `eval_limit` prompts of `eval_prompts` or of the test texts (their first tokens), with
    accuracy where every prompt has its answer."""
    if not protocol.eval_samples:
        return None
    if protocol.eval_prompts is not None:
        items = read_items(protocol.eval_prompts, correctness=False)
    else:
        items = text_prompts(tokenizer, test_texts, protocol.prompt_tokens)
    items = items[: protocol.eval_limit] if protocol.eval_limit else items
    if not items:
        return None
    params = GenerationParams(
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=TOP_K,
        num_samples=protocol.eval_samples,
        stop=("\n",),
        seed=seed,
    )
    correctness = all("answer" in item for item in items)

    def evaluate(model: PreTrainedModel) -> dict[str, Any]:
        backend = HFBackend(model, tokenizer)
        return evaluate_hallucination(backend, model, items, params, correctness=correctness, method="ees")[0]

    return evaluate


def text_prompts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], prompt_tokens: int) -> list[dict[str, Any]]:
    """Prompt items from texts, each cut to its first `prompt_tokens` tokens (a test split's)."""
    return [
        {"prompt": tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"][:prompt_tokens])} for t in texts
    ]


def plot_hallucination(samples: Sequence[Mapping[str, Any]], correctness: bool) -> bytes:
    """PNG: the distribution of EigenScores, of right vs wrong answers (else per group)."""
    if correctness:
        series = {
            label: [s["eigenscore"] for s in samples if s["correct"] == right]
            for label, right in (("right", True), ("wrong", False))
        }
    else:
        groups = dict.fromkeys(s.get("group", "all") for s in samples)
        series = {g: [s["eigenscore"] for s in samples if s.get("group", "all") == g] for g in groups}
    title = "EigenScore of K sampled answers" + (", by the greedy answer" if correctness else "")
    return histograms(title, series, "EigenScore (higher: the answers scatter)")


def hallucination_table(metrics: Mapping[str, Any]) -> Table:
    """EigenScore and accuracy per group and overall, with the AUROC of the score for wrong answers."""
    table = Table(title="Hallucination: EigenScore of sampled answers", title_justify="left")
    for column in ("group", "prompts", "EigenScore", "accuracy"):
        table.add_column(column, justify="left" if column == "group" else "right")
    rows = list(metrics.get("groups", {}).items()) + [("all", {**metrics, "eigenscore": metrics["eigenscore"]["mean"]})]
    for name, entry in rows:
        accuracy = cell(entry.get("accuracy"), percent=True)
        table.add_row(name, str(entry["num_prompts"]), cell(entry["eigenscore"]), accuracy)
    if metrics.get("accuracy") is not None:
        scores = metrics["eigenscore"]
        table.caption = (
            f"AUROC of EigenScore for wrong answers: {cell(metrics['auroc'])}; "
            f"mean EigenScore right {cell(scores['correct'])}, wrong {cell(scores['wrong'])}"
        )
    return table


@dataclass(frozen=True)
class HallucinationEval:
    """`llmkit eval hallucination` (an `Evaluation`): prompts, K answers sampled for each by `params`."""

    items: list[dict[str, Any]]
    params: GenerationParams
    correctness: bool
    method: str
    config: dict[str, Any]
    inputs: tuple[str | Path | None, ...]
    model_name: str | None = None
    """With a vLLM backend: the model to load beside it for the hidden states (`hf_model`)."""
    device: str = "auto"
    trust_remote_code: bool = False
    placement: Placement | None = None
    """With a vLLM backend: how that model is placed (`--device-map`)."""
    command: ClassVar[str] = "eval hallucination"

    @classmethod
    def load(
        cls,
        settings: HallucinationConfig = HallucinationConfig(),
        *,
        limit: int | None = None,
        model_name: str | None = None,
        device: str = "auto",
        trust_remote_code: bool = False,
        placement: Placement | None = None,
    ) -> HallucinationEval:
        """Prompt records of `settings.data` (`read_items`) or of a world's exposures
        (`world_items`), the first `limit` of each group; without correctness their answers are
        dropped."""
        if settings.samples < 2:
            raise BadInputError(
                f"--samples must be at least 2: EigenScore compares K ≥ 2 answers per prompt, got {settings.samples}"
            )
        if settings.method not in METHODS:
            raise BadInputError(f"--method must be one of {', '.join(METHODS)}, got {settings.method!r}")
        if (settings.world is None) == (settings.data is None):
            raise BadInputError("name the prompts: --data FILE, or --world DIR")
        params = GenerationParams(
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            num_samples=settings.samples,
            stop=("\n",),
            seed=settings.seed,
        )
        if settings.world is not None:
            items = world_items(settings.world, parse_exposures(settings.exposures))
        else:
            items = read_items(settings.data, settings.correctness)
        if not settings.correctness:
            items = [{k: v for k, v in item.items() if k != "answer"} for item in items]
        if limit is not None:
            items = limit_per_group(items, limit, "group")
        config = {
            **asdict(settings),
            "data": str(settings.data) if settings.data else None,
            "world": str(settings.world) if settings.world else None,
            "exposures": settings.exposures if settings.world else None,
        }
        inputs = (settings.data, settings.world)
        return cls(
            items,
            params,
            settings.correctness,
            settings.method,
            config,
            inputs,
            model_name,
            device,
            trust_remote_code,
            placement,
        )

    @property
    def seed(self) -> int | None:
        return self.params.seed

    def __len__(self) -> int:
        return len(self.items)

    def metric_names(self, compared: bool) -> set[str]:
        """The names `summarize` gives (those of right and wrong answers, and the AUROC, may be None)."""
        right = {"auroc", "accuracy", "sample_accuracy", "eigenscore.correct", "eigenscore.wrong"}
        names = {"num_prompts", "eigenscore.mean"} | (right if self.correctness else set())
        per_group = ("num_prompts", "eigenscore") + (("accuracy",) if self.correctness else ())
        names |= {f"groups.{item['group']}.{stat}" for item in self.items if "group" in item for stat in per_group}
        return names | ({"baseline.auroc", "baseline.accuracy", "baseline.eigenscore"} if compared else set())

    def chat_wrapped(self, tokenizer: PreTrainedTokenizerBase, chat: bool) -> HallucinationEval:
        return replace(self, items=chat_items(self.items, tokenizer, chat))

    def digest(self) -> str:
        return probe_digest(self.items)

    def evaluate(
        self, backend: Backend, baseline_metrics: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> EvalRun:
        embedder = hf_model(
            backend,
            self.model_name,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            placement=self.placement,
        )
        metrics, samples = evaluate_hallucination(
            backend,
            embedder,
            self.items,
            self.params,
            correctness=self.correctness,
            method=self.method,
            progress=progress,
            baseline_metrics=baseline_metrics,
        )
        return EvalRun(metrics, samples)

    def plots(self, run: EvalRun, baseline_metrics: Mapping[str, Any] | None) -> dict[str, bytes]:
        return {"hallucination.png": plot_hallucination(run.samples, self.correctness)}

    def table(self, run: EvalRun) -> Table:
        return hallucination_table(run.metrics)
