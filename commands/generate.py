"""`llmkit generate`: batched generation from a prompts file, with HF or vLLM."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from typing import Annotated, Optional

import typer

from llmkit.commands._common import (
    BatchSizeOpt,
    InterventionOpt,
    ModelOptions,
    Options,
    OutputOptions,
    OutputPathOpt,
    backend_config,
    cli_command,
    key_value_table,
    open_backend,
    parse_batch_size,
    print_results_json,
    progress_bar,
    stderr,
)
from llmkit.configs import BACKENDS, GenerationParams, VLLMEngineOptions
from llmkit.data import dumps_jsonl, read_records
from llmkit.errors import BadInputError
from llmkit.results import check_output_path, make_results, write_run


@cli_command
def generate(
    model: ModelOptions,
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="Prompts: JSONL/JSON/CSV/Parquet with a 'prompt' field per record, a saved dataset, "
            "a hub dataset name, or - for JSONL on stdin.",
        ),
    ],
    output_path: OutputPathOpt = None,
    backend: Annotated[str, typer.Option(help=f"Generation backend: {' or '.join(BACKENDS)}.")] = "hf",
    batch_size: BatchSizeOpt = "auto",
    params: Annotated[GenerationParams, Options(exclude=("top_k",))] = GenerationParams(),
    intervention: InterventionOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N prompts.")] = None,
    prompt_field: Annotated[str, typer.Option(help="Field of each record that holds the prompt.")] = "prompt",
    split: Annotated[str, typer.Option(help="Split, when --input is a dataset.")] = "train",
    vllm: VLLMEngineOptions = VLLMEngineOptions(),
    *,
    output: OutputOptions,
) -> None:
    """Generate completions for every prompt in a file.

    Each output line is the input record plus "generations": a list of --num-samples texts.
    Without --output-path the lines go to stdout, ready for a pipeline; with it they go to
    OUTPUT/samples.jsonl beside OUTPUT/results.json.
    """
    started = time.perf_counter()
    if output_path is not None:
        check_output_path(output_path, output.overwrite, inputs=[model.name, input])
    elif output.json:
        raise BadInputError("--json needs --output-path: without it stdout carries the generations")
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be at least 1, got {limit}")
    batch = parse_batch_size(batch_size)
    records = read_records(input, required={prompt_field: str}, split=split)[:limit]

    engine = open_backend(
        backend,
        model.name,
        intervention,
        dtype=model.dtype,
        device=model.device,
        batch_size=batch,
        seed=params.seed,
        trust_remote_code=model.trust_remote_code,
        placement=model.placement,
        engine_options=vllm,
    )
    prompts = [r[prompt_field] for r in records]
    with engine, progress_bar("generating", len(prompts)) as progress:
        generation_started = time.perf_counter()
        generations = engine.generate(prompts, params, progress)
        generation_time = time.perf_counter() - generation_started

    samples = [{**record, "generations": g.texts} for record, g in zip(records, generations)]
    metrics = {
        "num_prompts": len(prompts),
        "num_generations": len(prompts) * params.num_samples,
        "generation_time_s": round(generation_time, 3),
        "prompts_per_second": round(len(prompts) / generation_time, 3) if generation_time > 0 else None,
    }
    config = {
        "model": model.name,
        "input": input,
        **backend_config(engine, backend, batch, model.dtype, model.device, model.placement, vllm),
        **asdict(params),
        "intervention": [str(p) for p in intervention or []],
        "limit": limit,
        "prompt_field": prompt_field,
    }
    results = make_results(
        "generate", config, metrics, wall_time_s=time.perf_counter() - started, num_samples=len(samples)
    )
    if output_path is None:
        sys.stdout.write(dumps_jsonl(samples))
    else:
        write_run(output_path, results, samples, overwrite=output.overwrite)
    if output.json:
        print_results_json(results)
    else:
        stderr.print(key_value_table("generate", metrics))
