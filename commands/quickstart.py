"""`llmkit quickstart`: the main job on the embedded default world, from nothing to a report."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from llmkit.commands._common import (
    DebugOpt,
    JsonOpt,
    OutputPathOpt,
    OverwriteOpt,
    cli_command,
    print_results_json,
    progress_bar,
    stderr,
    stdout,
)
from llmkit.commands.evaluate import ort_table
from llmkit.data import read_records
from llmkit.evals.knowledge import evaluate_knowledge
from llmkit.evals.ort import evaluate_ort, form_demo_entities, load_world_probes, probe_prompts
from llmkit.evals.skills import evaluate_skills
from llmkit.generation import load_backend
from llmkit.results import check_output_path, make_results, write_run
from llmkit.world.cache import PRESETS, default_cache_dir, ensure_model, ensure_world, preset
from llmkit.world.forms import FORMS


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


def _skills_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="Skills: exact match on held-out test items", title_justify="left")
    table.add_column("skill")
    table.add_column("accuracy", justify="right")
    for skill, value in metrics["accuracy"].items():
        table.add_row(skill, _percent(value))
    return table


@cli_command
def quickstart(
    cache_dir: Annotated[
        Optional[Path], typer.Option(help="Where worlds and models are cached [default: $LLMKIT_CACHE or ~/.cache/llmkit].")
    ] = None,
    preset_name: Annotated[str, typer.Option("--preset", help=f"World and recipe: {', '.join(PRESETS)}.")] = "default",
    output_path: OutputPathOpt = None,
    overwrite: OverwriteOpt = False,
    json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build (or reuse) the synthetic world and its tiny model; report what the model knows.

    The report shows greedy exact match on every fact by exposure (how often pretraining stated it)
    and probe form, next to what guessing would score, accuracy on each skill's test items, and the
    ORT table (llmkit eval ort) for one entity the model knows in every form.

    Cold, this takes a few minutes on a laptop CPU; afterwards the world and model come from the
    cache. The report goes to OUTPUT/results.json and OUTPUT/samples.jsonl (default
    ./llmkit_output/quickstart-<time>).
    """
    started = time.perf_counter()
    world_config, recipe = preset(preset_name)
    cache = cache_dir.expanduser() if cache_dir else default_cache_dir()
    output = output_path or Path("llmkit_output") / f"quickstart-{datetime.now():%Y%m%d-%H%M%S}"
    check_output_path(output, overwrite)

    with stderr.status("building the world"):
        world_dir, _ = ensure_world(cache, world_config)
    with progress_bar("pretraining the model", recipe.steps) as progress:
        model_dir, trained = ensure_model(cache, world_config, recipe, progress)
    backend = load_backend("hf", str(model_dir), device="auto")

    probes = read_records(world_dir / "probes.jsonl")
    facts = read_records(world_dir / "facts.jsonl")
    with progress_bar("probing knowledge", len(probes)) as progress:
        knowledge, knowledge_samples = evaluate_knowledge(backend, probes, facts, progress)
    skill_items = [item for item in read_records(world_dir / "skills.jsonl") if item["split"] == "test"]
    with progress_bar("testing skills", len(skill_items)) as progress:
        skills, skill_samples = evaluate_skills(backend, skill_items, progress)
    # ORT on the most exposed form-demo entity: the model knows its facts in every form.
    target = form_demo_entities(read_records(world_dir / "entities.jsonl"))[0]["name"]
    ort_probes = load_world_probes(world_dir, [target])
    with progress_bar("ORT: scoring every form", len(ort_probes)) as progress:
        prompts = probe_prompts(ort_probes, backend.tokenizer, chat=False)
        ort, _, ort_samples = evaluate_ort(backend, ort_probes, prompts, FORMS, progress=progress)

    config = {
        "preset": preset_name, "world": asdict(world_config), "recipe": asdict(recipe),
        "world_dir": str(world_dir), "model_dir": str(model_dir), "model_trained_now": trained, "ort_target": target,
    }
    samples = (
        [{"task": "knowledge", **s} for s in knowledge_samples]
        + [{"task": "skills", **s} for s in skill_samples]
        + [{"task": "ort", **s} for s in ort_samples]
    )
    results = make_results("quickstart", config, {"knowledge": knowledge, "skills": skills, "ort": ort},
                           wall_time_s=time.perf_counter() - started, num_samples=len(samples))
    write_run(output, results, samples, overwrite=overwrite)
    if json:
        print_results_json(results)
        return
    stdout.print(_knowledge_table(knowledge))
    stdout.print(_skills_table(skills))
    stdout.print(ort_table(ort, f"ORT: is {target} known in every form? (neighbours: the rest of its exposure bucket)"))
    stdout.print(f"model: {model_dir}\nreport: {output / 'results.json'}")
