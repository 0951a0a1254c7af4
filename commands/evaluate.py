"""`llmkit eval ...`: evaluations, and the options and ending every one of them shares.

Every eval command takes `--fail-over` / `--fail-under METRIC=VALUE` on the dotted metric names
of its results.json, `--baseline RUN_DIR` (an earlier run of the same command on the same probes),
`--plot`, and ends with `finish`: results written, then the table or JSON, then exit 1 with one
line per missed threshold.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

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
    OutputPathOpt,
    OverwriteOpt,
    TrustRemoteCodeOpt,
    cli_command,
    open_backend,
    parse_batch_size,
    print_results_json,
    progress_bar,
    stderr,
    stdout,
)
from llmkit.errors import BadInputError
from llmkit.evals.common import (
    Threshold,
    check_metric_names,
    limit_per_group,
    load_baseline,
    missed_thresholds,
    parse_thresholds,
    probe_digest,
    read_baseline,
)
from llmkit.evals.ort import (
    FORMS,
    ROLES,
    evaluate_ort,
    limit_probes,
    load_probes,
    ort_digest,
    parse_forms,
    plot_ort,
    probe_prompts,
)
from llmkit.configs import (
    BACKENDS,
    CHAT_TEMPLATE_MODES,
    MAX_NEW_TOKENS,
    SAMPLES,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    GenerationParams,
)
from llmkit.world.generator import parse_exposures
from llmkit.results import check_output_path, make_results, write_run

app = typer.Typer(help="Evaluate a model: is the knowledge gone in every form, are its skills intact, does it know when it hallucinates?", no_args_is_help=True)

FailOverOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--fail-over", metavar="METRIC=VALUE",
        help="Exit 1 if this metric (a dotted name from results.json's metrics, e.g. forget.qa.prob) "
        "is above VALUE. Repeatable; checked after the results are written.",
    ),
]
FailUnderOpt = Annotated[
    Optional[list[str]],
    typer.Option("--fail-under", metavar="METRIC=VALUE", help="Exit 1 if this metric is below VALUE. Repeatable."),
]
BaselineOpt = Annotated[
    Optional[Path],
    typer.Option(help="Run directory of an earlier run of this command on the same probes (e.g. the original model) to compare with."),
]
PlotOpt = Annotated[bool, typer.Option("--plot", help="Write PNG plots into the run directory (needs --output-path).")]
ChatTemplateOpt = Annotated[
    str,
    typer.Option(help=f"Wrap prompts in the tokenizer's chat template: {', '.join(CHAT_TEMPLATE_MODES)} (auto: when it has one)."),
]
BackendOpt = Annotated[str, typer.Option(help=f"Scoring backend: {' or '.join(BACKENDS)}.")]


def check_eval_options(
    command: str, output_path: Path | None, overwrite: bool, plot: bool, limit: int | None, baseline: Path | None,
    inputs: Sequence[Any],
) -> None:
    """Checks every eval command makes before it loads anything."""
    if output_path is not None:
        check_output_path(output_path, overwrite, inputs=[*inputs, baseline])
    if baseline is not None:
        read_baseline(baseline, command)
    if plot and output_path is None:
        raise BadInputError("--plot writes into the run directory: add --output-path")
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be at least 1, got {limit}")


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


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.0f}%" if percent else f"{value:.3f}"


def ort_table(metrics: Mapping[str, Any], title: str = "ORT: answer probability and greedy exact match by form") -> Table:
    """Forget and neighbour probability and exact match per form; drops and the form gap when the
    metrics were compared with a baseline."""
    table = Table(title=title, title_justify="left")
    table.add_column("form")
    for role in ROLES:
        table.add_column(f"{role} prob", justify="right")
        table.add_column(f"{role} EM", justify="right")
    drops = metrics.get("drop")
    if drops:
        for role in ROLES:
            table.add_column(f"{role} drop", justify="right")
    for form in metrics["forget"]:
        row = [form]
        for role in ROLES:
            row += [_cell(metrics[role][form]["prob"]), _cell(metrics[role][form]["exact_match"], percent=True)]
        if drops:
            row += [_cell(drops[role][form], percent=True) for role in ROLES]
        table.add_row(*row)
    if drops:
        table.caption = f"form gap (largest minus smallest forget drop): {_cell(metrics['form_gap'], percent=True)}"
    return table


@app.command()
@cli_command
def ort(
    model: ModelOpt,
    probes: Annotated[
        Path,
        typer.Option(help="An ORT/RWKU folder of targets (1_Stephen_King/...) or a world directory (llmkit world build)."),
    ],
    targets: Annotated[
        Optional[list[str]],
        typer.Option(
            "--targets", "--target",
            help="Target to evaluate: a name (or a world entity id). Repeatable, or comma-separated. "
            "Default: every target of an ORT folder; a world needs them named.",
        ),
    ] = None,
    forms: Annotated[str, typer.Option(help=f"Forms to score, comma-separated: some of {','.join(FORMS)}.")] = ",".join(FORMS),
    baseline: BaselineOpt = None,
    plot: PlotOpt = False,
    fail_over: FailOverOpt = None,
    fail_under: FailUnderOpt = None,
    chat_template: ChatTemplateOpt = "auto",
    backend: BackendOpt = "hf",
    intervention: InterventionOpt = None,
    batch_size: BatchSizeOpt = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N probes of each target, role and form.")] = None,
    output_path: OutputPathOpt = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Is the knowledge gone in every form? ORT's probes about each target, as fill-in-the-blank
    (cloze), question answering (qa), multiple choice (mc), true/false (tf) and spelled character
    by character (char), scored by the probability the model gives the gold answer.

    Per probe: exp(mean log p) of the answer tokens after the prompt (teacher forcing) and greedy
    exact match; averaged per form per target, then over targets, for forget probes (about the
    targets) and neighbour probes (knowledge to keep). With --baseline: each form's relative drop
    1 - p/p_baseline and the form gap, the largest minus the smallest forget drop.
    """
    from llmkit.generation import use_chat_template

    started = time.perf_counter()
    thresholds = parse_thresholds(fail_over or (), fail_under or ())
    form_list = parse_forms(forms)
    check_eval_options("eval ort", output_path, overwrite, plot, limit, baseline, inputs=[model, probes])
    batch = parse_batch_size(batch_size)
    probe_list = load_probes(probes, targets, form_list)
    if limit is not None:
        probe_list = limit_probes(probe_list, limit)
    if not probe_list:
        raise BadInputError(f"{probes} has no probes of the forms {','.join(form_list)} for these targets")

    engine = open_backend(backend, model, intervention, dtype=dtype, device=device, batch_size=batch, trust_remote_code=trust_remote_code)
    with engine:
        chat = use_chat_template(chat_template, engine.tokenizer)
        prompts = probe_prompts(probe_list, engine.tokenizer, chat)
        digest = ort_digest(probe_list, prompts)
        baseline_metrics = load_baseline(baseline, "eval ort", digest)["metrics"] if baseline else None
        with progress_bar("scoring probes", len(probe_list)) as progress:
            metrics, per_target, samples = evaluate_ort(engine, probe_list, prompts, form_list, baseline_metrics, progress)

    config = {
        "model": model, "probes": str(probes), "targets": list(per_target), "forms": list(form_list),
        "intervention": [str(p) for p in intervention or []], "chat_template": chat_template, "chat_template_used": chat,
        "backend": backend, "batch_size": batch, "dtype": dtype, "resolved_dtype": str(engine.dtype).removeprefix("torch."),
        "device": device,
        "limit": limit, "baseline": str(baseline) if baseline else None,
    }
    results = make_results(
        "eval ort", config, metrics, wall_time_s=time.perf_counter() - started,
        num_samples=len(samples), probe_digest=digest,
    )
    results["per_target"] = per_target
    files = {"ort.png": plot_ort(metrics, form_list, baseline_metrics)} if plot else None
    finish(results, samples, thresholds, ort_table(metrics), output_path=output_path, overwrite=overwrite, json=json, files=files)


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
        row = [skill, str(metrics["num_items"][skill]), _cell(value, percent=True), _cell(metrics["abstention"][skill], percent=True)]
        if compared:
            row += [_cell(metrics["relative"][skill], percent=True), _cell(metrics["drop"][skill], percent=True)]
        table.add_row(*row)
    return table


@app.command()
@cli_command
def skills(
    model: ModelOpt,
    world: Annotated[
        Optional[Path],
        typer.Option(help="A world directory: its skills' test items, and its fact QA about well-known entities as the 'facts' skill."),
    ] = None,
    skill: Annotated[
        Optional[list[str]],
        typer.Option("--skill", metavar="NAME=FILE", help="A skill's items: a file of prompt/answer records. Repeatable; instead of --world."),
    ] = None,
    intervention: InterventionOpt = None,
    baseline: BaselineOpt = None,
    plot: PlotOpt = False,
    fail_over: FailOverOpt = None,
    fail_under: FailUnderOpt = None,
    chat_template: ChatTemplateOpt = "auto",
    backend: BackendOpt = "hf",
    batch_size: BatchSizeOpt = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N items of each skill.")] = None,
    output_path: OutputPathOpt = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Does the model still have each skill? Greedy answers (up to the first newline) to each
    skill's items, scored by exact match; the share of answers that are an intervention's refusal.

    With --baseline (a run of the original model on the same items): each skill's relative
    performance, accuracy after / before, and its drop, 1 - relative. Metrics are named
    accuracy.SKILL, abstention.SKILL, relative.SKILL and drop.SKILL for --fail-over/--fail-under.
    """
    from llmkit.evals.skills import evaluate_skills, parse_skill_files, plot_skills, skills_digest, world_skill_items
    from llmkit.generation import chat_wrap, use_chat_template

    started = time.perf_counter()
    thresholds = parse_thresholds(fail_over or (), fail_under or ())
    check_eval_options("eval skills", output_path, overwrite, plot, limit, baseline, inputs=[model, world, *(s.partition("=")[2] for s in skill or ())])
    if (world is None) == (not skill):
        raise BadInputError("name the items: --world DIR, or --skill NAME=FILE (repeatable)")
    batch = parse_batch_size(batch_size)
    items = world_skill_items(world) if world is not None else parse_skill_files(skill)
    if limit is not None:
        items = limit_per_group(items, limit, "skill")

    engine = open_backend(backend, model, intervention, dtype=dtype, device=device, batch_size=batch, trust_remote_code=trust_remote_code)
    with engine:
        chat = use_chat_template(chat_template, engine.tokenizer)
        if chat:
            items = [{**item, "prompt": chat_wrap(engine.tokenizer, item["prompt"])} for item in items]
        digest = skills_digest(items)
        baseline_metrics = load_baseline(baseline, "eval skills", digest)["metrics"] if baseline else None
        with progress_bar("answering", len(items)) as progress:
            metrics, samples = evaluate_skills(
                engine, items, progress, refusals=getattr(engine, "refusals", ()), baseline_metrics=baseline_metrics
            )

    config = {
        "model": model, "world": str(world) if world else None, "skills": list(skill or []),
        "intervention": [str(p) for p in intervention or []], "chat_template": chat_template, "chat_template_used": chat,
        "backend": backend, "batch_size": batch, "dtype": dtype, "resolved_dtype": str(engine.dtype).removeprefix("torch."),
        "device": device, "limit": limit, "baseline": str(baseline) if baseline else None,
    }
    results = make_results(
        "eval skills", config, metrics, wall_time_s=time.perf_counter() - started, num_samples=len(samples), probe_digest=digest
    )
    files = {"skills.png": plot_skills(metrics, baseline_metrics)} if plot else None
    finish(results, samples, thresholds, skills_table(metrics), output_path=output_path, overwrite=overwrite, json=json, files=files)


def hallucination_table(metrics: Mapping[str, Any]) -> Table:
    """EigenScore and accuracy per group and overall, with the AUROC of the score for wrong answers."""
    table = Table(title="Hallucination: EigenScore of sampled answers", title_justify="left")
    for column in ("group", "prompts", "EigenScore", "accuracy"):
        table.add_column(column, justify="left" if column == "group" else "right")
    rows = list(metrics.get("groups", {}).items()) + [("all", {**metrics, "eigenscore": metrics["eigenscore"]["mean"]})]
    for name, entry in rows:
        table.add_row(name, str(entry["num_prompts"]), _cell(entry["eigenscore"]), _cell(entry.get("accuracy"), percent=True))
    if metrics.get("accuracy") is not None:
        scores = metrics["eigenscore"]
        table.caption = (
            f"AUROC of EigenScore for wrong answers: {_cell(metrics['auroc'])}; "
            f"mean EigenScore right {_cell(scores['correct'])}, wrong {_cell(scores['wrong'])}"
        )
    return table


@app.command()
@cli_command
def hallucination(
    model: ModelOpt,
    data: Annotated[
        Optional[Path],
        typer.Option(help="Prompts: records with 'prompt', and 'answer' for correctness ('group' optional), in any data format."),
    ] = None,
    world: Annotated[
        Optional[Path],
        typer.Option(help="A world directory instead of --data: its QA probes about entities of --exposures."),
    ] = None,
    exposures: Annotated[str, typer.Option(help="With --world: the exposures to ask about, comma-separated (0: unseen).")] = "0,30",
    samples: Annotated[int, typer.Option(help="K: answers sampled per prompt (at least 2).")] = SAMPLES,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = TEMPERATURE,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: top-p.")] = TOP_P,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: off).")] = TOP_K,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens (answers stop at a newline).")] = MAX_NEW_TOKENS,
    method: Annotated[str, typer.Option(help="Log-det: exact, ees (Efficient EigenScore) or auto (the faster for the shape).")] = "auto",
    correctness: Annotated[
        bool, typer.Option("--correctness/--no-correctness", help="Score the greedy answer against 'answer' (accuracy, AUROC).")
    ] = True,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    intervention: InterventionOpt = None,
    baseline: BaselineOpt = None,
    plot: PlotOpt = False,
    fail_over: FailOverOpt = None,
    fail_under: FailUnderOpt = None,
    chat_template: ChatTemplateOpt = "auto",
    backend: Annotated[str, typer.Option(help=f"Sampling backend: {' or '.join(BACKENDS)} (embeddings always run on HF).")] = "hf",
    batch_size: BatchSizeOpt = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N prompts of each group.")] = None,
    output_path: OutputPathOpt = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Does the model know when it makes things up? For each prompt, K answers sampled at
    temperature T and their EigenScore (INSIDE): (1/K)·log det(Σ + 1e-3·I), Σ the K×K Gram matrix of
    the answers' last-token hidden states at the middle layer, centred over features. High when the
    answers scatter.

    With correctness (the default), the greedy answer is checked against 'answer' by exact match,
    and the AUROC of the EigenScore for detecting wrong answers is reported. Metrics: auroc,
    accuracy, sample_accuracy, eigenscore.mean / .correct / .wrong, groups.NAME.*.
    """
    from llmkit.evals.hallucination import evaluate_hallucination, plot_hallucination, read_items, world_items
    from llmkit.generation import chat_wrap, hf_model, use_chat_template
    from llmkit.metrics.eigenscore import METHODS as EIGENSCORE_METHODS

    started = time.perf_counter()
    thresholds = parse_thresholds(fail_over or (), fail_under or ())
    check_eval_options("eval hallucination", output_path, overwrite, plot, limit, baseline, inputs=[model, data, world])
    if samples < 2:
        raise BadInputError(f"--samples must be at least 2: EigenScore compares K ≥ 2 answers per prompt, got {samples}")
    if method not in EIGENSCORE_METHODS:
        raise BadInputError(f"--method must be one of {', '.join(EIGENSCORE_METHODS)}, got {method!r}")
    if (world is None) == (data is None):
        raise BadInputError("name the prompts: --data FILE, or --world DIR")
    params = GenerationParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, num_samples=samples, stop=("\n",), seed=seed
    )
    batch = parse_batch_size(batch_size)
    if world is not None:
        items = world_items(world, parse_exposures(exposures))
    else:
        items = read_items(data, correctness)
    if not correctness:
        items = [{k: v for k, v in item.items() if k != "answer"} for item in items]
    if limit is not None:
        items = limit_per_group(items, limit, "group")

    engine = open_backend(
        backend, model, intervention, dtype=dtype, device=device, batch_size=batch, seed=seed, trust_remote_code=trust_remote_code
    )
    with engine:
        chat = use_chat_template(chat_template, engine.tokenizer)
        if chat:
            items = [{**item, "prompt": chat_wrap(engine.tokenizer, item["prompt"])} for item in items]
        digest = probe_digest(items)
        baseline_metrics = load_baseline(baseline, "eval hallucination", digest)["metrics"] if baseline else None
        embedder = hf_model(engine, model, device=device, trust_remote_code=trust_remote_code)
        with progress_bar("sampling answers", len(items)) as progress:
            metrics, per_prompt = evaluate_hallucination(
                engine, embedder, items, params, correctness=correctness, method=method, progress=progress
            )
    if baseline_metrics is not None:
        metrics["baseline"] = {k: baseline_metrics.get(k) for k in ("auroc", "accuracy")} | {"eigenscore": baseline_metrics["eigenscore"]["mean"]}

    config = {
        "model": model, "data": str(data) if data else None, "world": str(world) if world else None,
        "exposures": exposures if world else None, "samples": samples, "temperature": temperature, "top_p": top_p,
        "top_k": top_k, "max_new_tokens": max_new_tokens, "method": method, "correctness": correctness, "seed": seed,
        "intervention": [str(p) for p in intervention or []], "chat_template": chat_template, "chat_template_used": chat,
        "backend": backend, "batch_size": batch, "dtype": dtype, "resolved_dtype": str(engine.dtype).removeprefix("torch."),
        "device": device, "limit": limit, "baseline": str(baseline) if baseline else None,
    }
    results = make_results(
        "eval hallucination", config, metrics, wall_time_s=time.perf_counter() - started, num_samples=len(per_prompt), probe_digest=digest
    )
    files = {"hallucination.png": plot_hallucination(per_prompt, correctness)} if plot else None
    finish(results, per_prompt, thresholds, hallucination_table(metrics), output_path=output_path, overwrite=overwrite, json=json, files=files)
