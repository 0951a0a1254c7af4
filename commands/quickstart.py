"""`llmkit quickstart`: the main job on the embedded default world, from nothing to a report."""

from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from llmkit.commands._common import (
    DebugOpt,
    JsonOpt,
    OutputPathOpt,
    OverwriteOpt,
    cli_command,
    counting_progress_bar,
    print_results_json,
    progress_bar,
    stderr,
    stdout,
)
from llmkit.commands.evaluate import ort_table
from llmkit.configs import SAMPLES, TEMPERATURE, TOP_K, TOP_P, GenerationParams
from llmkit.data import read_records, read_texts, record_texts
from llmkit.evals.common import limit_per_group
from llmkit.evals.ort import Probe, evaluate_ort, form_demo_entities, load_world_probes, probe_prompts, redirect_entity
from llmkit.results import check_output_path, make_results, write_run
from llmkit.world.cache import PRESETS, default_cache_dir, ensure_model, ensure_world, preset
from llmkit.world.forget_set import forget_set, skill_set
from llmkit.world.generator import NUMERIC_SKILL
from llmkit.world.forms import FORMS

if TYPE_CHECKING:
    from llmkit.generation import Backend, HFBackend


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _knowledge_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="What the model knows: greedy exact match by exposure and form", title_justify="left")
    table.add_column("exposure", justify="right")
    for form in FORMS:
        table.add_column(form, justify="right")
    for exposure, by_form in metrics["accuracy"].items():
        table.add_row(exposure, *(_percent(by_form[f]) for f in FORMS))
    table.add_row("chance", *(_percent(metrics["chance"][f]) for f in FORMS), style="dim")
    return table


def _rocr_stage(
    backend: Backend, world_dir: Path, entities: list[dict[str, Any]], facts_in_forms: list[dict[str, Any]],
    target: dict[str, Any], ort_probes: list[Probe], ort_prompts: list[str], baseline: dict[str, Any], cache: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """ROCR on the ORT target, in memory: edit, score the ORT stage's probes again against its
    unedited run, ask three questions about the target, then revert. Statistics come from (and
    go to) the cache, so only the first run pays for them."""
    from llmkit import arch
    from llmkit.methods import rocr

    model, tokenizer = backend.model, backend.tokenizer
    redirect_to = redirect_entity(entities, target)
    config = rocr.ROCRConfig(layers=rocr.default_layers(len(arch.decoder_layers(model))), **rocr.WORLD_MODEL_SETTINGS)
    corpus = rocr.StatisticsCorpus(str(world_dir / "pretraining.jsonl"), lambda: read_texts(world_dir / "pretraining.jsonl"), 200_000, max_length=128)
    asked = [p for p in facts_in_forms if p["entity_id"] == target["id"] and p["form"] == "qa"][:3]
    questions = [p["prompt"] for p in asked]
    params = GenerationParams(max_new_tokens=12, stop=("\n",))
    answers_before = [g.texts[0].strip() for g in backend.generate(questions, params)]
    originals = rocr.original_weights(model, config.layers)
    with counting_progress_bar("ROCR: key statistics", corpus.max_tokens) as advance:
        edits, record = rocr.unlearn(
            model, tokenizer, [rocr.Request(target["name"], redirect_to["name"])], config, corpus, cache / "rocr-stats", advance
        )
    try:
        with progress_bar("ROCR: scoring every form after the edit", len(ort_probes)) as progress:
            metrics, _, samples = evaluate_ort(backend, ort_probes, ort_prompts, FORMS, baseline, progress)
        answers_after = [g.texts[0].strip() for g in backend.generate(questions, params)]
    finally:
        rocr.revert(model, rocr.edit_tensors(originals, edits))
    answers = [
        {"question": p["prompt"].split("\n")[0], "before": b, "after": a, "redirect_value": redirect_to[p["attribute"]]}
        for p, b, a in zip(asked, answers_before, answers_after)
    ]
    result = {
        "target": target["name"], "redirect": redirect_to["name"], "layers": list(config.layers),
        "timings": record["timings"], "statistics_cached": bool(record["statistics"]["cached_layers"]),
        "ort": metrics, "answers": answers,
    }
    return result, [{"task": "rocr", **s} for s in samples]


# NPO's budget on each preset's model: the same as docs/ort_comparison.sh on the default one.
NPO_BUDGET = {
    "default": {"learning_rate": 3e-5, "max_steps": 20},
    "micro": {"learning_rate": 7e-4, "max_steps": 20},
}


def _npo_stage(
    backend: HFBackend, world_dir: Path, target: dict[str, Any], ort_probes: list[Probe], ort_prompts: list[str],
    baseline: dict[str, Any], preset_name: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """NPO on the ORT target's QA facts (other known entities' QA facts retained), trained on a
    copy of the model, then every form scored against the unedited run."""
    from llmkit.generation import HFBackend
    from llmkit.methods import gradient

    forget, retain, summary = forget_set(world_dir, target["name"], "qa")
    model = copy.deepcopy(backend.model)
    budget = {"epochs": 1, "batch_size": len(forget), "seed": 0, "save_steps": 1000, **NPO_BUDGET[preset_name]}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch, progress_bar("NPO: unlearning the QA form", budget["max_steps"]) as progress:
        gradient.unlearn(model, backend.tokenizer, "npo", forget, retain, scratch, budget, progress=progress)
    train_s = time.perf_counter() - started
    model.eval()
    with progress_bar("NPO: scoring every form after training", len(ort_probes)) as progress:
        metrics, _, samples = evaluate_ort(HFBackend(model, backend.tokenizer), ort_probes, ort_prompts, FORMS, baseline, progress)
    result = {
        "target": target["name"], "forget_records": len(forget), "retain_records": len(retain), **budget,
        "train_s": round(train_s, 2), "ort": metrics,
    }
    return result, [{"task": "npo", **s} for s in samples]


def _comparison_table(rocr_stage: dict[str, Any], npo_stage: dict[str, Any]) -> Table:
    table = Table(title=f"Unlearning {rocr_stage['target']}: relative drop of the answer probability by form", title_justify="left")
    table.add_column("form")
    for column in ("ROCR forget", "NPO forget", "ROCR neighbours", "NPO neighbours"):
        table.add_column(column, justify="right")
    for form in rocr_stage["ort"]["drop"]["forget"]:
        drops = [stage["ort"]["drop"][role][form] for role in ("forget", "neighbor") for stage in (rocr_stage, npo_stage)]
        table.add_row(form, *(_percent(d) for d in drops))
    table.caption = (
        f"ROCR: a rank-one edit from the name alone ({rocr_stage['timings']['edit_s']:.2f} s). NPO: {npo_stage['max_steps']} steps "
        f"on the QA form only ({npo_stage['train_s']:.1f} s). Form gap: ROCR {_percent(rocr_stage['ort']['form_gap'])}, "
        f"NPO {_percent(npo_stage['ort']['form_gap'])}."
    )
    return table


# Neuron Adjust on each preset: the share of neurons adjusted, and the forget and retain
# records its statistics read (a sample keeps the stage within its minute).
SKILL_STAGE = {
    "default": {"fraction": 0.03, "records": 1000},
    "micro": {"fraction": 0.03, "records": 300},
}


def _skill_stage(
    backend: HFBackend, world_dir: Path, items: list[dict[str, Any]], baseline: dict[str, Any], preset_name: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """KSD and Neuron Adjust, each fitted on the numeric skill's training items (Neuron Adjust
    also on the other skills' as its retain set), then every skill scored against the model
    without them. Both are inference-time interventions: the model itself is never changed."""
    from llmkit.evals.skills import evaluate_skills
    from llmkit.methods import ksd, neuron_adjust
    from llmkit.methods.intervened import IntervenedBackend

    forget, retain, _ = skill_set(world_dir, NUMERIC_SKILL)
    model, tokenizer = backend.model, backend.tokenizer
    settings = SKILL_STAGE[preset_name]
    started = time.perf_counter()
    gate, ksd_record = ksd.fit_ksd(model, tokenizer, record_texts(forget, queries=True), ksd.KSDConfig())
    ksd_fit_s = time.perf_counter() - started
    records = settings["records"]
    with counting_progress_bar("Neuron Adjust: neuron statistics", 2 * records) as advance:
        started = time.perf_counter()
        adjust, na_record = neuron_adjust.fit_neuron_adjust(
            model, tokenizer, record_texts(forget[:records]), record_texts(retain[:records]),
            neuron_adjust.NeuronAdjustConfig(fraction=settings["fraction"]), advance,
        )
        na_fit_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "skill": NUMERIC_SKILL,
        "ksd": {"fit_s": round(ksd_fit_s, 2), "k": ksd_record["k"], "layer": gate.layer},
        "neuron_adjust": {"fit_s": round(na_fit_s, 2), "fraction": settings["fraction"], "neurons": na_record["neurons"]},
    }
    samples: list[dict[str, Any]] = []
    for name, label, adjusters, gates in (("ksd", "KSD", [], [gate]), ("neuron_adjust", "Neuron Adjust", [adjust], [])):
        intervened = IntervenedBackend(backend, model, adjusters, gates)
        with progress_bar(f"{label}: testing skills", len(items)) as progress:
            metrics, scored = evaluate_skills(intervened, items, progress, refusals=intervened.refusals, baseline_metrics=baseline)
        result[name]["skills"] = metrics
        samples += [{"task": f"skills-{name}", **s} for s in scored]
    return result, samples


# Prompts per exposure group for the hallucination stage (K = 10 answers each).
HALLUCINATION_STAGE = {"default": 60, "micro": 12}


def _hallucination_stage(backend: HFBackend, world_dir: Path, preset_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """EigenScore of 10 answers sampled per question, about well-known entities (exposure 30)
    and entities never seen (exposure 0); how well it flags the wrong greedy answers (AUROC), by
    the exact log-det and by EES on the same answers."""
    from llmkit.evals.hallucination import evaluate_hallucination, world_items

    items = limit_per_group(world_items(world_dir, (0, 30)), HALLUCINATION_STAGE[preset_name], "group")
    params = GenerationParams(
        max_new_tokens=16, temperature=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, num_samples=SAMPLES, stop=("\n",), seed=0
    )
    started = time.perf_counter()
    with progress_bar("hallucination: sampling answers", len(items)) as progress:
        metrics, scored = evaluate_hallucination(backend, backend.model, items, params, method="exact", compare="ees", progress=progress)
    metrics["time_s"] = round(time.perf_counter() - started, 2)
    return metrics, [{"task": "hallucination", **s} for s in scored]


def _hallucination_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="Hallucination: EigenScore of 10 sampled answers, known vs unseen entities", title_justify="left")
    for column in ("entities", "questions", "accuracy", "EigenScore"):
        table.add_column(column, justify="left" if column == "entities" else "right")
    for group, entry in metrics["groups"].items():
        label = {"exposure 30": "known (exposure 30)", "exposure 0": "unseen (exposure 0)"}.get(group, group)
        table.add_row(label, str(entry["num_prompts"]), _percent(entry["accuracy"]), f"{entry['eigenscore']:.2f}")
    table.caption = (
        f"AUROC of EigenScore for wrong answers: {metrics['auroc']:.3f} (exact log-det), {metrics['auroc_ees']:.3f} (EES); "
        f"{metrics['time_s']:.1f} s."
    )
    return table


def _skill_unlearning_table(stage: dict[str, Any], before: dict[str, Any]) -> Table:
    ksd_metrics, na_metrics = stage["ksd"]["skills"], stage["neuron_adjust"]["skills"]
    table = Table(title=f"Skill unlearning: {stage['skill']} removed at inference, every skill's accuracy", title_justify="left")
    for column in ("skill", "before", "KSD", "KSD abstained", "Neuron Adjust", "KSD drop", "NA drop"):
        table.add_column(column, justify="left" if column == "skill" else "right")
    for skill, accuracy in before["accuracy"].items():
        table.add_row(
            skill, _percent(accuracy), _percent(ksd_metrics["accuracy"][skill]), _percent(ksd_metrics["abstention"][skill]),
            _percent(na_metrics["accuracy"][skill]), _percent(ksd_metrics["drop"][skill]), _percent(na_metrics["drop"][skill]),
        )
    table.caption = (
        f"KSD: a hypercube around the {stage['skill']} queries' MLP keys at layer {stage['ksd']['layer']}, fitted in "
        f"{stage['ksd']['fit_s']:.1f} s. Neuron Adjust: {stage['neuron_adjust']['neurons']} neurons "
        f"({100 * stage['neuron_adjust']['fraction']:g}%), fitted in {stage['neuron_adjust']['fit_s']:.1f} s."
    )
    return table


def _answers_table(stage: dict[str, Any]) -> Table:
    table = Table(title=f"ROCR: asked about {stage['target']}, redirected to {stage['redirect']}", title_justify="left")
    for column in ("question", "before", "after", f"{stage['redirect']}'s"):
        table.add_column(column)
    for row in stage["answers"]:
        table.add_row(row["question"], row["before"], row["after"], row["redirect_value"])
    timings = stage["timings"]
    cached = " (cached)" if stage["statistics_cached"] else ""
    table.caption = f"statistics {timings['statistics_s']:.1f} s{cached}, edit {timings['edit_s']:.2f} s; the model is reverted afterwards"
    return table


MODEL_SOURCES = {
    "shipped": "shipped with llmkit, the same on every machine (--rebuild trains one)",
    "cached": "pretrained earlier on this machine, from the cache",
    "pretrained": "pretrained now on this machine",
}


@cli_command
def quickstart(
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Where worlds and models are cached.", show_default="$LLMKIT_CACHE or ~/.cache/llmkit")
    ] = None,
    preset_name: Annotated[str, typer.Option("--preset", help=f"World and recipe: {', '.join(PRESETS)}.")] = "default",
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Pretrain the model here by the preset's recipe instead of using the one llmkit ships.")
    ] = False,
    output_path: OutputPathOpt = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build (or reuse) the synthetic world and its tiny model; report what the model knows.

    The report shows greedy exact match on every fact by exposure (how often pretraining stated it)
    and probe form, next to what guessing would score, accuracy on each skill's test items, and the
    ORT table (llmkit eval ort) for one entity the model knows in every form; then that entity
    unlearned two ways, ROCR (a rank-one edit, reverted afterwards) and NPO (trained on its QA
    facts only, on a copy), each scored in every form; last, the numeric skill removed at
    inference by KSD (abstaining on its queries) and by Neuron Adjust, every skill scored again;
    and hallucination detection: the EigenScore of 10 sampled answers to questions about known and
    unseen entities, and how well it flags the wrong answers (AUROC).

    The model is the one llmkit ships for the preset, the same weights on every machine, so the
    report reads the same everywhere; --rebuild pretrains it here instead (about five minutes on
    two cores, and on another CPU a slightly different model). A run takes a minute or two. The
    report goes to OUTPUT/results.json and OUTPUT/samples.jsonl (default
    ./llmkit_output/quickstart-<time>).
    """
    from llmkit.evals.knowledge import evaluate_knowledge
    from llmkit.evals.skills import evaluate_skills, world_skill_items
    from llmkit.generation import load_backend

    started = time.perf_counter()
    world_config, recipe = preset(preset_name)
    cache = cache_dir.expanduser() if cache_dir else default_cache_dir()
    output = output_path or Path("llmkit_output") / f"quickstart-{datetime.now():%Y%m%d-%H%M%S}"
    check_output_path(output, overwrite)

    with stderr.status("building the world"):
        world_dir, _ = ensure_world(cache, world_config)
    with progress_bar("pretraining the model", recipe.steps) as progress:
        model_dir, model_source = ensure_model(cache, world_config, recipe, progress, rebuild=rebuild)
    stderr.print(f"model: {MODEL_SOURCES[model_source]}")
    backend = load_backend("hf", str(model_dir), device="auto")

    probes = read_records(world_dir / "probes.jsonl")
    facts = read_records(world_dir / "facts.jsonl")
    with progress_bar("probing knowledge", len(probes)) as progress:
        knowledge, knowledge_samples = evaluate_knowledge(backend, probes, facts, progress)
    skill_items = world_skill_items(world_dir)
    with progress_bar("testing skills", len(skill_items)) as progress:
        skills, skill_samples = evaluate_skills(backend, skill_items, progress)
    # ORT on the most exposed form-demo entity: the model knows its facts in every form.
    entities = read_records(world_dir / "entities.jsonl")
    target_entity = form_demo_entities(entities)[0]
    target = target_entity["name"]
    ort_probes = load_world_probes(world_dir, [target])
    with progress_bar("ORT: scoring every form", len(ort_probes)) as progress:
        prompts = probe_prompts(ort_probes, backend.tokenizer, chat=False)
        ort, _, ort_samples = evaluate_ort(backend, ort_probes, prompts, FORMS, progress=progress)
    rocr_stage, rocr_samples = _rocr_stage(backend, world_dir, entities, probes, target_entity, ort_probes, prompts, ort, cache)
    npo_stage, npo_samples = _npo_stage(backend, world_dir, target_entity, ort_probes, prompts, ort, preset_name)
    skill_stage, skill_stage_samples = _skill_stage(backend, world_dir, skill_items, skills, preset_name)
    hallucination, hallucination_samples = _hallucination_stage(backend, world_dir, preset_name)

    config = {
        "preset": preset_name, "world": asdict(world_config), "recipe": asdict(recipe),
        "world_dir": str(world_dir), "model_dir": str(model_dir), "model_source": model_source, "ort_target": target,
    }
    samples = (
        [{"task": "knowledge", **s} for s in knowledge_samples]
        + [{"task": "skills", **s} for s in skill_samples]
        + [{"task": "ort", **s} for s in ort_samples]
        + rocr_samples
        + npo_samples
        + skill_stage_samples
        + hallucination_samples
    )
    results = make_results("quickstart", config, {
        "knowledge": knowledge, "skills": skills, "ort": ort, "rocr": rocr_stage, "npo": npo_stage, "skill_unlearning": skill_stage,
        "hallucination": hallucination,
    },
                           wall_time_s=time.perf_counter() - started, num_samples=len(samples))
    write_run(output, results, samples, overwrite=overwrite)
    if json:
        print_results_json(results)
        return
    stdout.print(_knowledge_table(knowledge))
    stdout.print(ort_table(ort, f"ORT: is {target} known in every form? (neighbours: the rest of its exposure bucket)"))
    stdout.print(ort_table(rocr_stage["ort"], f"ROCR: {target} redirected to {rocr_stage['redirect']}, every form against the unedited model"))
    stdout.print(_answers_table(rocr_stage))
    stdout.print(_comparison_table(rocr_stage, npo_stage))
    stdout.print(_skill_unlearning_table(skill_stage, skills))
    stdout.print(_hallucination_table(hallucination))
    stdout.print(f"model: {model_dir}\nreport: {output / 'results.json'}")
