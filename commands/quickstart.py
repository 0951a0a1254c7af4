"""`llmkit quickstart`: the main job on the embedded default world, from nothing to a report.

The report is the stages of `llmkit.evals.quickstart` in order; this command builds (or reuses)
the world and its model, runs them with progress bars, writes results.json and prints their tables."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.commands._common import (
    OutputOptions,
    OutputPathOpt,
    cli_command,
    counting_progress_bar,
    print_results_json,
    progress_bar,
    stderr,
    stdout,
)
from llmkit.results import check_output_path, make_results, write_run
from llmkit.world.cache import PRESETS, default_cache_dir, ensure_model, ensure_world, preset

MODEL_SOURCES = {
    "shipped": "shipped with llmkit, the same on every machine (--rebuild trains one)",
    "cached": "pretrained earlier on this machine, from the cache",
    "pretrained": "pretrained now on this machine",
}


@cli_command
def quickstart(
    cache_dir: Annotated[
        Optional[Path],
        typer.Option(help="Where worlds and models are cached.", show_default="$LLMKIT_CACHE or ~/.cache/llmkit"),
    ] = None,
    preset_name: Annotated[str, typer.Option("--preset", help=f"World and recipe: {', '.join(PRESETS)}.")] = "default",
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Pretrain the model here by the preset's recipe instead of using the one llmkit ships."
        ),
    ] = False,
    output_path: OutputPathOpt = None,
    *,
    output: OutputOptions,
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
    from llmkit.evals.quickstart import Context, run_stages
    from llmkit.generation import load_backend

    started = time.perf_counter()
    world_config, recipe = preset(preset_name)
    cache = cache_dir.expanduser() if cache_dir else default_cache_dir()
    run_dir = output_path or Path("llmkit_output") / f"quickstart-{datetime.now():%Y%m%d-%H%M%S}"
    check_output_path(run_dir, output.overwrite)

    with stderr.status("building the world"):
        world_dir, _ = ensure_world(cache, world_config)
    with progress_bar("pretraining the model", recipe.steps) as progress:
        model_dir, model_source = ensure_model(cache, world_config, recipe, progress, rebuild=rebuild)
    stderr.print(f"model: {MODEL_SOURCES[model_source]}")
    backend = load_backend("hf", str(model_dir), device="auto")

    with tempfile.TemporaryDirectory() as scratch:
        context = Context.for_world(
            backend, world_dir, cache, Path(scratch), preset_name, progress_bar, counting_progress_bar
        )
        samples, tables, seconds = run_stages(context)

    config = {
        "preset": preset_name,
        "world": asdict(world_config),
        "recipe": asdict(recipe),
        "world_dir": str(world_dir),
        "model_dir": str(model_dir),
        "model_source": model_source,
        "ort_target": context.target["name"],
    }
    results = make_results(
        "quickstart", config, context.metrics, wall_time_s=time.perf_counter() - started, num_samples=len(samples)
    )
    results["stage_seconds"] = seconds
    write_run(run_dir, results, samples, overwrite=output.overwrite)
    if output.json:
        print_results_json(results)
        return
    for table in tables:
        stdout.print(table)
    stdout.print(f"model: {model_dir}\nreport: {run_dir / 'results.json'}")
