"""Does the model answer what it knows and decline what it does not? R-Tuning's evaluation, shared
by every abstention method.

Per question: the greedy answer (cut at the first "." or newline; for multiple choice the option
letter of highest probability), correct when a gold answer occurs in it as whole words; its
confidence conf = (Π_t p_t)^(1/T), the geometric mean of the answer's token probabilities (for
multiple choice the softmax over the option letters); P(sure) = p(sure) / (p(sure) + p(unsure))
after "{prompt} {answer}. Are you sure you accurately answered the question based on your
internal knowledge? I am", p read at the first token of each word as the official code reads it;
and R-Tuning's score ½·conf + ½·P(sure). A question costs one generation and one scoring pass of
its certainty text, which holds the answer's tokens too.

A question is answered willingly when P(sure) > ½ (mode certainty) or when the answer is not a
refusal (mode refusal). Metrics: accuracy; AP of the score for ranking correct answers first;
the answer rate and the accuracy on willingly answered questions; the refusal rate per group (on
a world, per exposure); abstention precision, recall and F1 against the known/unknown labels
where the items have them (a world's exposure: ≥ 10 known, 0 unknown). A second model
(`--pretrained`) is asked alike, as the paper's Pretrain-T baseline.

In search mode (MASH) the model answers with the search tool at hand (`llmkit.methods.mash`,
greedy), and a search is its abstention. Metrics, as MASH's code reports them: accuracy with
search; parametric accuracy, mean(correct · [n = 0]) (searches counted as wrong); precision,
the accuracy of the direct answers; mean searches n; tool productivity mean(correct / (1 + n));
abstention precision/recall/F1 against known/unknown labels; and with `--pretrained` (the base
model) MASH's answerability buckets: the share a ∈ {0, 0.1, …, 1} of its `samples` answers
(T 1.0, top-p 0.8, top-k 50, the short prompt: MASH's few-shot prompt is not reproduced) that are
right, Abs(a) the abstention rate of the questions in bucket a, Abs(0) and Δ = Abs(0) − Abs(1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table

from llmkit.configs import AbstentionConfig, GenerationParams, QAFields
from llmkit.data import read_questions
from llmkit.errors import BadInputError
from llmkit.evals.common import EvalRun, cell, chat_items, limit_per_group, probe_digest
from llmkit.generation import Backend, Progress, tokenize_pairs
from llmkit.methods.mash import (
    SHORT_PROMPT,
    STOP_TAGS,
    SearchEnvironment,
    SearchIndex,
    is_correct_answer,
    read_corpus,
    run_episodes,
    with_prompts,
)
from llmkit.methods.rtuning import (
    ANSWER_STOP,
    SURE,
    UNSURE,
    answer_contains,
    certainty_prompt,
    greedy_answers,
    is_correct,
    is_refusal,
)
from llmkit.metrics.abstention import abstention_f1, average_precision, risk_coverage, rtuning_score, sure_probability
from llmkit.metrics.probability import answer_probability
from llmkit.models import check_model_path
from llmkit.results import group_order
from llmkit.world.generator import parse_exposures
from llmkit.world.questions import search_questions, world_questions

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SUMMARY = ("num_questions", "accuracy", "answer_rate", "accuracy_answered", "refusal_rate", "p_sure_mean")
"""What is reported for every group, and for the whole set beside AP and abstention P/R/F1."""
COMPARED = ("ap", "accuracy_answered", "answer_rate", "accuracy")
"""What is compared with a baseline run, and with the pretrained model."""


def ask(
    backend: Backend, items: Sequence[Mapping[str, Any]], max_new_tokens: int, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Each item's answer, correctness, confidence, P(sure), score and whether it is a refusal:
    one generation, then one scoring pass of "{prompt} {answer}. {certainty question} I am" that
    reads the answer's token probabilities and the next token's p(sure) and p(unsure) alike."""
    replies = greedy_answers(backend, items, max_new_tokens, progress)
    sure, unsure = sure_tokens(backend.tokenizer)
    contexts = [certainty_prompt(item["prompt"], answer) for item, (answer, _) in zip(items, replies)]
    continuations = [context[len(item["prompt"]) :] for item, context in zip(items, contexts)]
    scores = backend.score([item["prompt"] for item in items], continuations, next_tokens=(sure, unsure))
    alone = tokenize_pairs(backend.tokenizer, [i["prompt"] for i in items], [f" {a.strip()}" for a, _ in replies])
    samples = []
    for item, (answer, option_p), score, (_, answer_ids) in zip(items, replies, scores, alone):
        if option_p is not None:
            confidence = option_p
        else:  # the answer's tokens as the certainty text holds them
            n = next((k for k, (a, b) in enumerate(zip(answer_ids, score.token_ids)) if a != b), len(answer_ids))
            confidence = answer_probability(score.logprobs[:n]) if answer.strip() and n else 0.0
        p_sure = sure_probability(*score.next_logprobs)
        samples.append(
            {
                **item,
                "answer": answer.strip(),
                "correct": is_correct(item, answer),
                "confidence": confidence,
                "p_sure": p_sure,
                "score": rtuning_score(confidence, p_sure),
                "refusal": is_refusal(answer),
            }
        )
    return samples


def sure_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The first tokens of " sure" and " unsure" after "I am", whose probabilities P(sure) compares
    (the official code reads the first sub-token of each word)."""
    (_, sure), (_, unsure) = tokenize_pairs(tokenizer, ["I am", "I am"], [f" {SURE}", f" {UNSURE}"])
    if sure[0] == unsure[0]:
        raise BadInputError(
            "this tokenizer starts ' sure' and ' unsure' with the same token, so P(sure) cannot be read from it"
        )
    return sure[0], unsure[0]


def answered(sample: Mapping[str, Any], mode: str) -> bool:
    """Whether the model answered willingly: P(sure) > ½, or (mode refusal) its answer is no refusal."""
    return sample["p_sure"] > 0.5 if mode == "certainty" else not sample["refusal"]


def summarize(samples: Sequence[Mapping[str, Any]], mode: str) -> dict[str, Any]:
    """The `SUMMARY` figures of a set of asked questions."""
    willing = [s for s in samples if answered(s, mode)]
    return {
        "num_questions": len(samples),
        "accuracy": _mean([s["correct"] for s in samples]),
        "answer_rate": len(willing) / len(samples) if samples else None,
        "accuracy_answered": _mean([s["correct"] for s in willing]),
        "refusal_rate": 1 - len(willing) / len(samples) if samples else None,
        "p_sure_mean": _mean([s["p_sure"] for s in samples]),
    }


def evaluate_abstention(
    backend: Backend,
    items: Sequence[Mapping[str, Any]],
    mode: str = "certainty",
    max_new_tokens: int = 15,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, samples): `summarize` of every question and of each group, AP, the confidence
    means, and abstention precision/recall/F1 on the items labelled known or unknown."""
    samples = ask(backend, items, max_new_tokens, progress)
    for sample in samples:
        sample["answered"] = answered(sample, mode)
    labelled = [s for s in samples if isinstance(s.get("known"), bool)]
    groups = group_order(str(s["group"]) for s in samples if "group" in s)
    metrics = {
        **summarize(samples, mode),
        "ap": average_precision([s["correct"] for s in samples], [s["score"] for s in samples]),
        "confidence_mean": _mean([s["confidence"] for s in samples]),
        "abstention": abstention_f1([not s["answered"] for s in labelled], [not s["known"] for s in labelled])
        if labelled
        else None,
        "groups": {g: summarize([s for s in samples if str(s.get("group")) == g], mode) for g in groups},
    }
    return metrics, samples


# ---- search mode (MASH) ------------------------------------------------------------------------

SEARCH_SUMMARY = (
    "num_questions",
    "accuracy",
    "parametric_accuracy",
    "precision",
    "searches_mean",
    "tool_productivity",
    "abstention_rate",
)
"""What search mode reports for every group and hop count, and for the whole set."""
SEARCH_COMPARED = ("accuracy", "parametric_accuracy", "precision", "searches_mean", "abstention_rate")
"""What search mode compares with a baseline run."""
BASE_SAMPLING = {"temperature": 1.0, "top_p": 0.8, "top_k": 50}
"""MASH's sampling of the base model for its answerability buckets."""


def ask_with_search(
    backend: Backend,
    items: Sequence[Mapping[str, Any]],
    env: SearchEnvironment,
    segment_tokens: int,
    progress: Progress | None = None,
    first_action: str | None = None,
) -> list[dict[str, Any]]:
    """Each item's greedy episode with the search tool (its first action forced with
    `first_action`): its answer, correctness (exact match with a gold alias), searches, whether it
    abstained (searched) and the trajectory."""
    params = GenerationParams(max_new_tokens=segment_tokens, stop=STOP_TAGS)

    def policy(contexts: list[str]) -> list[str]:
        return [g.texts[0] for g in backend.generate(contexts, params)]

    episodes = run_episodes(policy, [item["prompt"] for item in items], env, first_action)
    if progress:
        progress(len(items), len(items))
    return [
        {
            **item,
            "answer": e.answer,
            "correct": is_correct_answer(e.answer, item["answers"]),
            "searches": e.searches,
            "abstained": e.searches > 0,
            "trajectory": e.completion,
        }
        for item, e in zip(items, episodes)
    ]


def summarize_search(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `SEARCH_SUMMARY` figures of a set of episodes."""
    direct = [s for s in samples if not s["abstained"]]
    return {
        "num_questions": len(samples),
        "accuracy": _mean([s["correct"] for s in samples]),
        "parametric_accuracy": _mean([s["correct"] and not s["abstained"] for s in samples]),
        "precision": _mean([s["correct"] for s in direct]),
        "searches_mean": _mean([s["searches"] for s in samples]),
        "tool_productivity": _mean([s["correct"] / (1 + s["searches"]) for s in samples]),
        "abstention_rate": _mean([s["abstained"] for s in samples]),
    }


def evaluate_search(
    backend: Backend,
    items: Sequence[Mapping[str, Any]],
    env: SearchEnvironment,
    segment_tokens: int,
    progress: Progress | None = None,
    first_action: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(metrics, samples): `summarize_search` of every question, of each group and of each hop
    count, and abstention precision/recall/F1 on the items labelled known or unknown."""
    samples = ask_with_search(backend, items, env, segment_tokens, progress, first_action)
    labelled = [s for s in samples if isinstance(s.get("known"), bool)]
    groups = group_order(str(s["group"]) for s in samples if "group" in s)
    hops = sorted({s["hops"] for s in samples if "hops" in s})
    metrics = {
        **summarize_search(samples),
        "abstention": abstention_f1([s["abstained"] for s in labelled], [not s["known"] for s in labelled])
        if labelled
        else None,
        "groups": {g: summarize_search([s for s in samples if str(s.get("group")) == g]) for g in groups},
        "hops": {str(h): summarize_search([s for s in samples if s.get("hops") == h]) for h in hops},
    }
    return metrics, samples


def ask_base_model(
    backend: Backend, items: Sequence[Mapping[str, Any]], samples: int, max_new_tokens: int, progress: Progress | None
) -> list[dict[str, Any]]:
    """The base model, without search, on each item's short prompt: its greedy answer and
    whether it is right, and how many of `samples` sampled answers are right (`knowns`)."""
    prompts = [SHORT_PROMPT.format(question=item["question"]) for item in items]
    greedy = backend.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens, stop=ANSWER_STOP))
    sampled = backend.generate(
        prompts,
        GenerationParams(max_new_tokens=max_new_tokens, stop=ANSWER_STOP, num_samples=samples, seed=0, **BASE_SAMPLING),
        progress,
    )
    return [
        {
            **item,
            "answer": g.texts[0].strip(),
            "correct": answer_contains(g.texts[0], item["answers"]),
            "knowns": sum(answer_contains(t, item["answers"]) for t in s.texts),
            "samples": len(s.texts),
        }
        for item, g, s in zip(items, greedy, sampled)
    ]


def answerability(samples: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """MASH's answerability buckets: Abs(a), the abstention rate of the questions the base model
    answers right in a share a of its samples; Abs(0), Abs(1) and Δ = Abs(0) − Abs(1)."""
    share = {b["id"]: round(b["knowns"] / b["samples"], 2) for b in base}
    buckets: dict[float, list[bool]] = {}
    for s in samples:
        buckets.setdefault(share[s["id"]], []).append(s["abstained"])
    abs_rate = {a: sum(v) / len(v) for a, v in sorted(buckets.items())}
    delta = abs_rate[0.0] - abs_rate[1.0] if 0.0 in abs_rate and 1.0 in abs_rate else None
    return {
        "abs_0": abs_rate.get(0.0),
        "abs_1": abs_rate.get(1.0),
        "delta": delta,
        "buckets": {f"{a:g}": {"questions": len(buckets[a]), "abstention_rate": r} for a, r in abs_rate.items()},
    }


def base_summary(base: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The base model's greedy accuracy without search: overall, per group and per hop count."""
    groups = group_order(str(b["group"]) for b in base if "group" in b)
    hops = sorted({b["hops"] for b in base if "hops" in b})
    return {
        "accuracy": _mean([b["correct"] for b in base]),
        "groups": {g: _mean([b["correct"] for b in base if str(b.get("group")) == g]) for g in groups},
        "hops": {str(h): _mean([b["correct"] for b in base if b.get("hops") == h]) for h in hops},
    }


SEARCH_COLUMNS = (
    ("accuracy", "accuracy", True),
    ("parametric acc.", "parametric_accuracy", True),
    ("precision", "precision", True),
    ("searches", "searches_mean", False),
    ("TP", "tool_productivity", False),
    ("abstained", "abstention_rate", True),
)


def search_table(metrics: Mapping[str, Any]) -> Table:
    """Search mode's figures per group and overall; abstention P/R/F1 and the base model beneath."""
    lines = []
    if "pretrained" in metrics:
        base = metrics["pretrained"]
        lines.append(
            f"base model without search: accuracy {cell(base['accuracy'], percent=True)}; "
            f"Abs(0) {cell(base['answerability']['abs_0'])}, Δ {cell(base['answerability']['delta'])}"
        )
    return _groups_table("Abstention (search mode)", SEARCH_COLUMNS, metrics, lines)


def _groups_table(
    title: str, columns: Sequence[tuple[str, str, bool]], metrics: Mapping[str, Any], lines: Sequence[str]
) -> Table:
    """A row per group and one for all: `columns` are (header, metric, shown as a percentage);
    beneath, abstention P/R/F1 against known/unknown where measured, then `lines`."""
    table = Table(title=title, title_justify="left")
    for header in ("group", "questions", *(c[0] for c in columns)):
        table.add_column(header, justify="left" if header == "group" else "right")
    for name, m in [*metrics["groups"].items(), ("all", metrics)]:
        table.add_row(name, str(m["num_questions"]), *(cell(m[key], percent=percent) for _, key, percent in columns))
    caption = []
    if metrics.get("abstention"):
        a = metrics["abstention"]
        caption.append(
            f"abstention vs known/unknown: precision {cell(a['precision'])}, recall {cell(a['recall'])}, "
            f"F1 {cell(a['f1'])}"
        )
    table.caption = "\n".join([*caption, *lines])
    table.caption_justify = "left"
    return table


def compare(metrics: Mapping[str, Any], other: Mapping[str, Any], compared: Sequence[str] = COMPARED) -> dict[str, Any]:
    """The `compared` figures of another run beside this one's, and this run's minus them."""
    return {
        "metrics": {k: other.get(k) for k in compared},
        "delta": {
            k: None if metrics.get(k) is None or other.get(k) is None else metrics[k] - other[k] for k in compared
        },
    }


def plot_risk_coverage(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """PNG: risk (1 − accuracy) against coverage, answering the most confident questions first."""
    from llmkit.evals.plots import line_plot

    lines = {
        label: risk_coverage([s["correct"] for s in samples], [s["score"] for s in samples])
        for label, samples in curves.items()
        if samples
    }
    return line_plot("Risk-coverage (ranked by ½·conf + ½·P(sure))", lines, "coverage", "risk (1 − accuracy)")


CERTAINTY_COLUMNS = (
    ("accuracy", "accuracy", True),
    ("answered", "answer_rate", True),
    ("accuracy answered", "accuracy_answered", True),
    ("P(sure)", "p_sure_mean", False),
)


def abstention_table(metrics: Mapping[str, Any], mode: str) -> Table:
    """The figures per group and overall; AP, abstention P/R/F1 and the comparisons beneath."""
    lines = [f"AP {cell(metrics['ap'])}"]
    for name in ("pretrained", "baseline"):
        if name in metrics:
            other = metrics[name]["metrics"]
            lines.append(
                f"{name}: AP {cell(other['ap'])}, accuracy answered {cell(other['accuracy_answered'], percent=True)}, "
                f"answered {cell(other['answer_rate'], percent=True)}"
            )
    return _groups_table(f"Abstention ({mode} mode)", CERTAINTY_COLUMNS, metrics, lines)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class AbstentionEval:
    """`llmkit eval abstention` (an `Evaluation`): questions, asked of the model (and of the
    pretrained model, `companions`)."""

    items: list[dict[str, Any]]
    settings: AbstentionConfig
    config: dict[str, Any]
    inputs: tuple[str | Path | None, ...]
    companions: dict[str, str] = field(default_factory=dict)
    """Other models asked alike, by label: the pretrained one."""
    env: SearchEnvironment | None = None
    """Search mode's tool."""
    command: ClassVar[str] = "eval abstention"
    seed: ClassVar[int | None] = None

    @classmethod
    def load(
        cls, settings: AbstentionConfig, fields: QAFields = QAFields(), limit: int | None = None
    ) -> AbstentionEval:
        """The questions of `settings.data` (`read_questions`) or of a world's exposures
        (`world_questions`), the first `limit` of each group."""
        if (settings.world is None) == (settings.data is None):
            raise BadInputError("name the questions: --data FILE, or --world DIR")
        if settings.pretrained is not None:  # it is asked after the model: a wrong path must fail first
            check_model_path(settings.pretrained)
        search = settings.mode == "search"
        if settings.world is not None:
            exposures = parse_exposures(settings.exposures) if settings.exposures else None
            if search:
                items = search_questions(settings.world)
                items = [q for q in items if exposures is None or q["exposure"] in exposures]
            else:
                items = world_questions(settings.world, exposures=exposures)
        else:
            items = read_questions(settings.data, fields)
            check_known_items(items, str(settings.data))
        if limit is not None:
            items = limit_per_group(items, limit, "group")
        env = None
        if search:
            items = with_prompts(items, settings.prompt)
            env = SearchEnvironment(SearchIndex(read_corpus(settings.corpus)), settings.top_k, settings.max_searches)
        config = {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
            **({} if settings.world else asdict(fields)),
        }
        companions = {"pretrained": settings.pretrained} if settings.pretrained else {}
        inputs = (settings.data, settings.world, settings.pretrained, settings.corpus)
        return cls(items, settings, config, inputs, companions, env)

    def __len__(self) -> int:
        return len(self.items)

    def metric_names(self, compared: bool) -> set[str]:
        if self.env is not None:
            return self._search_metric_names(compared)
        names = set(SUMMARY) | {"ap", "confidence_mean"}
        if any(isinstance(item.get("known"), bool) for item in self.items):
            names |= {f"abstention.{k}" for k in ("precision", "recall", "f1")}
        names |= {f"groups.{item['group']}.{k}" for item in self.items if "group" in item for k in SUMMARY}
        for name in ("baseline",) * compared + tuple(self.companions):
            names |= {f"{name}.{part}.{k}" for part in ("metrics", "delta") for k in COMPARED}
        return names

    def _search_metric_names(self, compared: bool) -> set[str]:
        names = set(SEARCH_SUMMARY)
        if any(isinstance(item.get("known"), bool) for item in self.items):
            names |= {f"abstention.{k}" for k in ("precision", "recall", "f1")}
        names |= {f"groups.{item['group']}.{k}" for item in self.items if "group" in item for k in SEARCH_SUMMARY}
        names |= {f"hops.{item['hops']}.{k}" for item in self.items if "hops" in item for k in SEARCH_SUMMARY}
        if self.companions:
            names |= {f"pretrained.answerability.{k}" for k in ("abs_0", "abs_1", "delta")} | {"pretrained.accuracy"}
        if compared:
            names |= {f"baseline.{part}.{k}" for part in ("metrics", "delta") for k in SEARCH_COMPARED}
        return names

    def chat_wrapped(self, tokenizer: PreTrainedTokenizerBase, chat: bool) -> AbstentionEval:
        return replace(self, items=chat_items(self.items, tokenizer, chat))

    def digest(self) -> str:
        return probe_digest({k: item[k] for k in ("prompt", "answers")} for item in self.items)

    def evaluate(
        self, backend: Backend, baseline_metrics: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> EvalRun:
        if self.env is not None:
            metrics, samples = evaluate_search(
                backend, self.items, self.env, self.settings.segment_tokens, progress, self.settings.first_action
            )
            if baseline_metrics is not None:
                metrics["baseline"] = compare(metrics, baseline_metrics, SEARCH_COMPARED)
            return EvalRun(metrics, samples)
        metrics, samples = evaluate_abstention(
            backend, self.items, self.settings.mode, self.settings.max_new_tokens, progress
        )
        if baseline_metrics is not None:
            metrics["baseline"] = compare(metrics, baseline_metrics)
        return EvalRun(metrics, samples)

    def evaluate_companion(self, label: str, backend: Backend, progress: Progress | None = None) -> EvalRun:
        """The pretrained model's run: asked alike (Pretrain-T), or in search mode its answers
        without search and sampled, for the answerability buckets."""
        if self.env is None:
            return self.evaluate(backend, None, progress)
        base = ask_base_model(backend, self.items, self.settings.samples, self.settings.max_new_tokens, progress)
        return EvalRun(base_summary(base), base)

    def combine(self, run: EvalRun, companions: Mapping[str, EvalRun]) -> EvalRun:
        """This model's run with the companions' figures compared (`compare`) and their samples
        added, each marked with its label."""
        metrics, samples = dict(run.metrics), list(run.samples)
        for label, other in companions.items():
            if self.env is not None:
                metrics[label] = {**other.metrics, "answerability": answerability(run.samples, other.samples)}
            else:
                metrics[label] = compare(run.metrics, other.metrics)
            samples += [{**s, "model": label} for s in other.samples]
        return EvalRun(metrics, samples, run.extra)

    def plots(self, run: EvalRun, baseline_metrics: Mapping[str, Any] | None) -> dict[str, bytes]:
        if self.env is not None:
            from llmkit.evals.plots import grouped_bars

            groups = list(run.metrics["groups"])
            panels = {
                "per group": {
                    name: [run.metrics["groups"][g][key] for g in groups]
                    for name, key in (("abstained", "abstention_rate"), ("accuracy", "accuracy"))
                }
            }
            return {"search_abstention.png": grouped_bars("Search as abstention", panels, groups, "share")}
        curves = {"this model": [s for s in run.samples if "model" not in s]}
        curves |= {label: [s for s in run.samples if s.get("model") == label] for label in self.companions}
        return {"risk_coverage.png": plot_risk_coverage(curves)}

    def table(self, run: EvalRun) -> Table:
        if self.env is not None:
            return search_table(run.metrics)
        return abstention_table(run.metrics, self.settings.mode)


def check_known_items(items: Sequence[Mapping[str, Any]], source: str) -> None:
    """`known`, where an item has it, must be true or false."""
    bad = next((item for item in items if "known" in item and not isinstance(item["known"], (bool, type(None)))), None)
    if bad is not None:
        raise BadInputError(f"{source}: item {bad['id']} has known={bad['known']!r}; it must be true, false or null")
