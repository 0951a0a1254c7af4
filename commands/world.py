"""`llmkit world build | pretrain`: the synthetic world and its tiny model."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.commands._common import (
    OutputOptions,
    cli_command,
    key_value_table,
    print_results_json,
    progress_bar,
    stdout,
)
from llmkit.configs import PretrainConfig
from llmkit.results import check_output_path, make_results
from llmkit.world.generator import WorldConfig, build_world, parse_exposures, write_world

app = typer.Typer(help="Build the synthetic world and pretrain its tiny model.", no_args_is_help=True)
DEFAULT_WORLD = WorldConfig()

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory to create.")]


@app.command("build")
@cli_command
def build(
    out: OutOpt,
    seed: Annotated[int, typer.Option(help="World seed: the same seed writes byte-identical files.")] = 0,
    entities: Annotated[int, typer.Option(help="Number of invented people.")] = DEFAULT_WORLD.entities,
    exposures: Annotated[
        str, typer.Option(help="Pretraining exposure counts, comma-separated; entities are spread evenly over them.")
    ] = ",".join(map(str, DEFAULT_WORLD.exposures)),
    *,
    output: OutputOptions,
) -> None:
    """Generate a world: entities and their facts in every probe form, skills, misinformation,
    a search corpus and held-out questions, as JSONL files plus world.json (the ground truth)."""
    started = time.perf_counter()
    config = WorldConfig(seed=seed, entities=entities, exposures=parse_exposures(exposures))
    check_output_path(out, output.overwrite)
    world = build_world(config)
    write_world(world, out, overwrite=output.overwrite)
    results = make_results(
        "world build",
        {"out": str(out), **asdict(config)},
        world.manifest["counts"],
        wall_time_s=time.perf_counter() - started,
    )
    if output.json:
        print_results_json(results)
    else:
        stdout.print(key_value_table(f"world written to {out}", world.manifest["counts"]))


@app.command("pretrain")
@cli_command
def pretrain_command(
    world: Annotated[Path, typer.Argument(help="A directory written by `llmkit world build`.")],
    out: OutOpt,
    recipe: PretrainConfig = PretrainConfig(),
    *,
    output: OutputOptions,
) -> None:
    """Train a byte-level BPE tokenizer and a model from scratch on a world's pretraining text,
    through transformers' Trainer; save an ordinary HF model directory with a model card."""
    from llmkit.world.pretrain import pretrain

    started = time.perf_counter()
    with progress_bar("pretraining", recipe.steps) as progress:
        summary = pretrain(world, out, recipe, overwrite=output.overwrite, progress=progress)
    metrics = {k: summary[k] for k in ("final_loss", "num_parameters", "tokens_per_epoch", "epochs")}
    results = make_results(
        "world pretrain",
        {"world": str(world), "out": str(out), **asdict(recipe)},
        metrics,
        wall_time_s=time.perf_counter() - started,
    )
    if output.json:
        print_results_json(results)
    else:
        stdout.print(key_value_table(f"model written to {out}", {**metrics, "wall_time_s": results["wall_time_s"]}))


@app.command("from-facts")
@cli_command
def from_facts(
    facts: Annotated[Path, typer.Argument(help="RESTOR's facts.json ({dset, context}).")],
    out: OutOpt,
    entities: Annotated[
        Optional[Path], typer.Option(help="entities.json: render only these entities' facts.", show_default="all")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Times each fact is stated (answers cycled).")] = 8,
    sheet_items: Annotated[int, typer.Option(help="Fact lines per pretraining document.")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the lines' order.")] = 0,
    *,
    output: OutputOptions,
) -> None:
    """Turn real facts into a world: each fact of RESTOR's facts.json stated as "{question}
    {answer}" lines (the layout of RESTOR's prompt), for `llmkit world pretrain` to train the clean
    model of RESTOR's real-data recipe on."""
    from llmkit.world.facts import build_facts_world

    started = time.perf_counter()
    check_output_path(out, output.overwrite, inputs=[facts, entities])
    config = build_facts_world(
        facts,
        out,
        entities_path=entities,
        repeats=repeats,
        sheet_items=sheet_items,
        seed=seed,
        overwrite=output.overwrite,
    )
    counts = {"entities": config.entities, "facts": config.facts, "lines": config.facts * config.repeats}
    results = make_results("world from-facts", {"out": str(out), **asdict(config)}, counts,
                           wall_time_s=time.perf_counter() - started)  # fmt: skip
    if output.json:
        print_results_json(results)
    else:
        stdout.print(key_value_table(f"facts world written to {out}", counts))
