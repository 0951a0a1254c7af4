"""`llmkit eval ...`: evaluations, and the options and sequence every one of them shares.

An eval command takes its own options and the shared ones (`EvalOptions`), and hands `run_eval`
a function loading the `Evaluation` its module in `evals/` defines. Every one takes `--fail-over`
/ `--fail-under METRIC=VALUE` on the dotted metric names of its results.json, `--baseline RUN_DIR`
(an earlier run of the same command on the same probes), `--plot`, and ends with `finish`: results
written, then the table or JSON, then exit 1 with one line per missed threshold.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from copy import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from rich.table import Table

from llmkit.commands._common import (
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    InterventionOpt,
    JsonOpt,
    ModelOpt,
    Options,
    OutputPathOpt,
    OverwriteOpt,
    TrustRemoteCodeOpt,
    backend_config,
    cli_command,
    open_backend,
    parse_batch_size,
    print_results_json,
    progress_bar,
    stderr,
    stdout,
)
from llmkit.configs import (
    BACKENDS,
    CHAT_TEMPLATE_MODES,
    AbstentionConfig,
    HallucinationConfig,
    Placement,
    QAFields,
    RestorConfig,
    VLLMEngineOptions,
)
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.common import (
    Evaluation,
    Threshold,
    check_metric_names,
    check_threshold_names,
    load_baseline,
    missed_thresholds,
    parse_thresholds,
    read_baseline,
)
from llmkit.evals.ort import FORMS, OrtEval, parse_forms
from llmkit.results import check_output_path, make_results, write_run

app = typer.Typer(
    help="Evaluate a model: is the knowledge gone in every form, are its skills intact, "
    "does it know when it hallucinates?",
    no_args_is_help=True,
)


def _option(option: Any, **changes: Any) -> Any:
    """A Typer option alias (`Annotated[type, typer.Option(...)]`) with some of its settings changed."""
    kind, info = get_args(option)
    info = copy(info)
    vars(info).update(changes)
    return Annotated[kind, info]


@dataclass
class EvalOptions:
    """The options every eval command takes, declared once, in help panels as lm-evaluation-harness
    groups its arguments (a command gives --limit, and --backend where it differs, its own help)."""

    model: _option(ModelOpt, rich_help_panel="Model")
    intervention: _option(InterventionOpt, rich_help_panel="Model") = None
    dtype: _option(DtypeOpt, rich_help_panel="Model") = "auto"
    device: _option(DeviceOpt, rich_help_panel="Model") = "auto"
    trust_remote_code: _option(TrustRemoteCodeOpt, rich_help_panel="Model") = False
    chat_template: Annotated[
        str,
        typer.Option(
            help=f"Wrap prompts in the tokenizer's chat template: {', '.join(CHAT_TEMPLATE_MODES)} "
            "(auto: when it has one).",
            rich_help_panel="Data",
        ),
    ] = "auto"
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N items.", rich_help_panel="Data")] = None
    backend: Annotated[
        str, typer.Option(help=f"Scoring backend: {' or '.join(BACKENDS)}.", rich_help_panel="Scoring")
    ] = "hf"
    batch_size: _option(BatchSizeOpt, rich_help_panel="Scoring") = "auto"
    baseline: Annotated[
        Optional[Path],
        typer.Option(
            help="Run directory of an earlier run of this command on the same probes (e.g. the original model) "
            "to compare with.",
            rich_help_panel="Scoring",
        ),
    ] = None
    output_path: _option(OutputPathOpt, rich_help_panel="Output") = None
    overwrite: _option(OverwriteOpt, rich_help_panel="Output") = False
    json: _option(JsonOpt, rich_help_panel="Output") = False
    plot: Annotated[
        bool,
        typer.Option(
            "--plot", help="Write PNG plots into the run directory (needs --output-path).", rich_help_panel="Output"
        ),
    ] = False
    debug: _option(DebugOpt, rich_help_panel="Output") = False
    placement: Placement = field(default_factory=Placement)
    vllm: VLLMEngineOptions = field(default_factory=VLLMEngineOptions)
    fail_over: Annotated[
        Optional[list[str]],
        typer.Option(
            "--fail-over",
            metavar="METRIC=VALUE",
            help="Exit 1 if this metric (a dotted name from results.json's metrics, e.g. forget.qa.prob) "
            "is above VALUE. Repeatable; checked after the results are written.",
            rich_help_panel="CI",
        ),
    ] = None
    fail_under: Annotated[
        Optional[list[str]],
        typer.Option(
            "--fail-under",
            metavar="METRIC=VALUE",
            help="Exit 1 if this metric is below VALUE. Repeatable.",
            rich_help_panel="CI",
        ),
    ] = None


def run_eval(
    load: Callable[[], Evaluation], o: EvalOptions, progress: str, prepare: Callable[[Evaluation], None] | None = None
) -> None:
    """What every eval command does: the options checked and the items loaded before any model,
    thresholds on metrics the evaluation cannot have refused, then `prepare` (an evaluation that
    trains the models it compares, RESTOR), the backend opened with its interventions, the items
    wrapped in the chat template, the baseline found by their digest,
    the items scored under a progress bar, then results.json's document, the plots and `finish`."""
    started = time.perf_counter()
    thresholds = parse_thresholds(o.fail_over or (), o.fail_under or ())
    if o.plot and o.output_path is None:
        raise BadInputError("--plot writes into the run directory: add --output-path")
    if o.limit is not None and o.limit < 1:
        raise BadInputError(f"--limit must be at least 1, got {o.limit}")
    evaluation = load()
    if o.output_path is not None:
        check_output_path(o.output_path, o.overwrite, inputs=[o.model, *evaluation.inputs, o.baseline])
    if o.baseline is not None:
        read_baseline(o.baseline, evaluation.command)
    batch = parse_batch_size(o.batch_size)
    check_threshold_names(thresholds, evaluation.metric_names(compared=o.baseline is not None))
    if prepare is not None:
        prepare(evaluation)

    from llmkit.generation import use_chat_template

    engine = _open(o, o.model, o.intervention, batch, evaluation.seed)
    with engine:
        chat = use_chat_template(o.chat_template, engine.tokenizer)
        wrapped = evaluation.chat_wrapped(engine.tokenizer, chat)
        digest = wrapped.digest()
        baseline_metrics = load_baseline(o.baseline, evaluation.command, digest)["metrics"] if o.baseline else None
        with progress_bar(progress, len(wrapped)) as advance:
            run = wrapped.evaluate(engine, baseline_metrics, advance)
    companions = getattr(evaluation, "companions", {})
    if companions:
        run = wrapped.combine(
            run,
            {label: _companion_run(evaluation, label, name, o, batch, progress) for label, name in companions.items()},
        )

    config = {
        "model": o.model,
        **evaluation.config,
        "intervention": [str(p) for p in o.intervention or []],
        "chat_template": o.chat_template,
        "chat_template_used": chat,
        **backend_config(engine, o.backend, batch, o.dtype, o.device, o.placement, o.vllm),
        "limit": o.limit,
        "baseline": str(o.baseline) if o.baseline else None,
    }
    results = make_results(
        evaluation.command,
        config,
        run.metrics,
        wall_time_s=time.perf_counter() - started,
        num_samples=len(run.samples),
        probe_digest=digest,
    )
    files = evaluation.plots(run, baseline_metrics) if o.plot else None
    finish(
        results | run.extra,
        run.samples,
        thresholds,
        evaluation.table(run),
        output_path=o.output_path,
        overwrite=o.overwrite,
        json=o.json,
        files=files,
    )


def _open(o: EvalOptions, model: str, interventions: list[Path] | None, batch: int | str, seed: int | None) -> Any:
    """The backend an eval scores `model` with, as its options load it."""
    return open_backend(
        o.backend,
        model,
        interventions,
        dtype=o.dtype,
        device=o.device,
        batch_size=batch,
        seed=seed,
        trust_remote_code=o.trust_remote_code,
        placement=o.placement,
        engine_options=o.vllm,
    )


def _companion_run(
    evaluation: Evaluation, label: str, model: str, o: EvalOptions, batch: int | str, progress: str
) -> Any:
    """`evaluation`'s companion `label` run on another model (one an evaluation compares with, e.g.
    the pretrained one), loaded as the evaluated model is, without its interventions, after that
    one is closed."""
    from llmkit.generation import use_chat_template

    engine = _open(o, model, None, batch, evaluation.seed)
    with engine:
        wrapped = evaluation.chat_wrapped(engine.tokenizer, use_chat_template(o.chat_template, engine.tokenizer))
        with progress_bar(f"{progress} ({model})", len(wrapped)) as advance:
            return wrapped.evaluate_companion(label, engine, advance)


def finish(
    results: dict[str, Any],
    samples: Sequence[Mapping[str, Any]],
    thresholds: Sequence[Threshold],
    table: Table,
    *,
    output_path: Path | None,
    overwrite: bool,
    json: bool,
    files: Mapping[str, bytes] | None = None,
) -> None:
    """The end of every eval command: refuse unknown threshold names (exit 2, nothing written),
    write the run, print the table (or the JSON), then exit 1 naming each missed threshold."""
    check_metric_names(thresholds, results["metrics"])
    if output_path is not None:
        write_run(output_path, results, samples, files=files, overwrite=overwrite)
    if json:
        print_results_json(results)
    else:
        stdout.print(table)
        if output_path is not None:
            stdout.print(f"results: {output_path / 'results.json'}")
    missed = missed_thresholds(thresholds, results["metrics"])
    for line in missed:
        stderr.print(f"threshold missed: {line}", highlight=False, markup=False)
    if missed:
        raise typer.Exit(1)


ORT_FORMS = ",".join(FORMS)


@app.command()
@cli_command
def ort(
    probes: Annotated[
        Path,
        typer.Option(
            help="An ORT/RWKU folder of targets (1_Stephen_King/...) or a world directory (llmkit world build)."
        ),
    ],
    targets: Annotated[
        Optional[list[str]],
        typer.Option(
            "--targets",
            "--target",
            help="Target to evaluate: a name (or a world entity id). Repeatable, or comma-separated. "
            "Default: every target of an ORT folder; a world needs them named.",
        ),
    ] = None,
    forms: Annotated[
        str, typer.Option(help=f"Forms to score, comma-separated: some of {','.join(FORMS)}.")
    ] = ORT_FORMS,
    *,
    options: Annotated[
        EvalOptions, Options(help={"limit": "Score only the first N probes of each target, role and form."})
    ],
) -> None:
    """Is the knowledge gone in every form? ORT's probes about each target, as fill-in-the-blank
    (cloze), question answering (qa), multiple choice (mc), true/false (tf) and spelled character
    by character (char), scored by the probability the model gives the gold answer.

    Per probe: exp(mean log p) of the answer tokens after the prompt (teacher forcing) and greedy
    exact match; averaged per form per target, then over targets, for forget probes (about the
    targets) and neighbour probes (knowledge to keep). With --baseline: each form's relative drop
    1 - p/p_baseline and the form gap, the largest minus the smallest forget drop.
    """
    run_eval(lambda: OrtEval.load(probes, targets, parse_forms(forms), options.limit), options, "scoring probes")


@app.command()
@cli_command
def skills(
    world: Annotated[
        Optional[Path],
        typer.Option(
            help="A world directory: its skills' test items, and its fact QA about well-known entities as the "
            "'facts' skill."
        ),
    ] = None,
    skill: Annotated[
        Optional[list[str]],
        typer.Option(
            "--skill",
            metavar="NAME=FILE",
            help="A skill's items: a file of prompt/answer records. Repeatable; instead of --world.",
        ),
    ] = None,
    *,
    options: Annotated[EvalOptions, Options(help={"limit": "Use only the first N items of each skill."})],
) -> None:
    """Does the model still have each skill? Greedy answers (up to the first newline) to each
    skill's items, scored by exact match; the share of answers that are an intervention's refusal.

    With --baseline (a run of the original model on the same items): each skill's relative
    performance, accuracy after / before, and its drop, 1 - relative. Metrics are named
    accuracy.SKILL, abstention.SKILL, relative.SKILL and drop.SKILL for --fail-over/--fail-under.
    """
    from llmkit.evals.skills import SkillsEval

    run_eval(lambda: SkillsEval.load(world, skill or (), options.limit), options, "answering")


HALLUCINATION_HELP = {
    "limit": "Use only the first N prompts of each group.",
    "backend": f"Sampling backend: {' or '.join(BACKENDS)} (embeddings always run on HF).",
}


@app.command()
@cli_command
def hallucination(
    settings: HallucinationConfig = HallucinationConfig(),
    *,
    options: Annotated[EvalOptions, Options(help=HALLUCINATION_HELP)],
) -> None:
    """Does the model know when it makes things up? For each prompt, K answers sampled at
    temperature T and their EigenScore (INSIDE): (1/K)·log det(Σ + 1e-3·I), Σ the K×K Gram matrix of
    the answers' last-token hidden states at the middle layer, centred over features. High when the
    answers scatter.

    With correctness (the default), the greedy answer is checked against 'answer' by exact match,
    and the AUROC of the EigenScore for detecting wrong answers is reported. Metrics: auroc,
    accuracy, sample_accuracy, eigenscore.mean / .correct / .wrong, groups.NAME.*.
    """
    from llmkit.evals.hallucination import HallucinationEval

    load = functools.partial(
        HallucinationEval.load,
        settings,
        limit=options.limit,
        model_name=options.model,
        device=options.device,
        trust_remote_code=options.trust_remote_code,
        placement=options.placement,
    )
    run_eval(load, options, "sampling answers")


@app.command()
@cli_command
def abstention(
    settings: AbstentionConfig = AbstentionConfig(),
    fields: QAFields = QAFields(),
    *,
    options: Annotated[EvalOptions, Options(help={"limit": "Use only the first N questions of each group."})],
) -> None:
    """Does the model answer what it knows and decline what it does not? Each question's greedy
    answer (cut at the first '.' or newline; the likeliest option letter for multiple choice),
    correct when a gold answer occurs in it; its confidence conf, the geometric mean of the answer's
    token probabilities; and P(sure) = p(sure) / (p(sure) + p(unsure)) after "{prompt} {answer}. Are
    you sure you accurately answered the question based on your internal knowledge? I am".

    The model declines when P(sure) ≤ ½ (--mode certainty, R-Tuning) or when its answer is a refusal
    (--mode refusal, R-Tuning-R). Metrics: accuracy, ap (R-Tuning's AP of ½·conf + ½·P(sure) for
    ranking correct answers first), answer_rate, accuracy_answered (on the willingly answered
    questions), refusal_rate, per group (a world's exposure) groups.NAME.*, and against known/unknown
    labels (a world's exposure, or a 'known' field) abstention.precision / .recall / .f1. With
    --pretrained (the paper's Pretrain-T) or --baseline: pretrained.* / baseline.* beside them.

    --mode search (MASH) gives the model a search tool over --corpus (<search> q </search> →
    <document> blocks, greedy) and counts a search as its abstention: accuracy (with search),
    parametric_accuracy (searches counted wrong), precision (accuracy of direct answers),
    searches_mean, tool_productivity mean(correct/(1+n)), abstention_rate, per group and per hop
    count (hops.N.*), abstention.* against known/unknown labels, and with --pretrained (the base
    model) pretrained.accuracy without search and MASH's answerability buckets
    pretrained.answerability.abs_0 / .abs_1 / .delta (Δ = Abs(0) − Abs(1)). --world asks a world's
    one- and two-hop search questions; --prompt short is the world model's prompt (auto picks it).
    """
    from llmkit.evals.abstention import AbstentionEval

    run_eval(lambda: AbstentionEval.load(settings, fields, options.limit), options, "asking")


@app.command()
@cli_command
def restor(
    settings: RestorConfig = RestorConfig(),
    *,
    options: Annotated[
        EvalOptions,
        Options(
            help={
                "model": "The clean model (a hub id, a directory, or a peft adapter).",
                "limit": "Ask only the first N facts of each entity.",
            }
        ),
    ],
) -> None:
    """After unlearning the misinformation, does the model know again what it knew? (RESTOR)

    The clean --model is corrupted by training on the --corruption documents (cached by its
    inputs; or --corrupted DIR), each --method unlearns them from the corrupted model (forget set:
    the documents; retain: --retain, or a world model's biographies of non-target entities), and
    every model is asked each fact of the --facts entities with the paper's prompt: 5 examples of
    the same relation about other entities, then the question; the greedy answer, cut at the first
    newline, is scored by exact match over the gold aliases (the paper's GPT judge is not available).

    Metrics per model (restor.MODEL.*): target.accuracy, nontarget.accuracy (locality),
    corrupted_rate (answers naming a value the documents state), logprob.correct / .corrupted /
    .random (mean length-normalised log-probability of those values, target facts), and for the
    unlearned ones recovery = (acc_unlearned − acc_corrupted) / (acc_clean − acc_corrupted),
    llmkit's derived scalar. Per-entity figures are in results.json's per_entity.
    """
    from llmkit.evals.restor import Pipeline, RestorEval, default_retain
    from llmkit.world.cache import default_cache_dir, pretraining_corpus

    def prepare(evaluation: RestorEval) -> None:
        def read_retain() -> list[dict] | None:
            if settings.retain is not None:
                return read_records(settings.retain, required={"text": str})
            size = len(evaluation.corruption.documents)
            return default_retain(options.model, evaluation.corruption, evaluation.facts, size, settings.seed)

        pipeline = Pipeline(
            settings.recipe(pretraining_corpus(options.model) is not None),
            read_retain,
            (settings.cache or default_cache_dir() / "restor").expanduser(),
            options.dtype,
            options.trust_remote_code,
        )
        evaluation.prepare(options.model, pipeline, lambda title: progress_bar(title, 1))
        for note in evaluation.notes:
            stderr.print(note, highlight=False, soft_wrap=True)

    run_eval(lambda: RestorEval.load(settings, options.limit), options, "asking", prepare=prepare)
