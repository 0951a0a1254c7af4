"""Batched generation throughput, vLLM against HF, on the same prompts in the same process.

    python benchmarks/bench_generation.py                      # the quickstart model (built if missing)
    python benchmarks/bench_generation.py --preset micro
    python benchmarks/bench_generation.py --vllm-engine process  # vLLM's separate engine process

Prompts: the first 256 probes of the synthetic world; greedy, 32 new tokens. Both backends run
the dtype `--dtype` resolves to (float32 on CPU, bfloat16 on GPUs), HF in batches of
`--hf-batch-size`. Rounds alternate HF and vLLM; the figure is the median per-round ratio
HF time / vLLM time, with the absolute times and the greedy agreement beside it.
Needs the `[vllm]` extra (on CPU: the build in ../shared/vllm-cpu/, see its README).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _timing import paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="world + model preset: default or micro")
    parser.add_argument("--cache-dir", type=Path, default=None, help="llmkit cache (default ~/.cache/llmkit)")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--hf-batch-size", default="64", help="HF prompts per batch, or auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vllm-engine", choices=("inprocess", "process"), default="inprocess")
    args = parser.parse_args()
    # Read when vllm is imported: llmkit's default is the in-process engine.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if args.vllm_engine == "process" else "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")

    import torch
    import transformers

    from llmkit.data import read_records
    from llmkit.generation import GenerationParams, load_backend
    from llmkit.world.cache import default_cache_dir, ensure_model, preset, world_dir

    transformers.logging.set_verbosity_error()
    world, recipe = preset(args.preset)
    cache = args.cache_dir or default_cache_dir()
    print(f"model: preset {args.preset} (building it if it is not in {cache})", file=sys.stderr)
    model = str(ensure_model(cache, world, recipe)[0])
    prompts = [p["prompt"] for p in read_records(world_dir(cache, world) / "probes.jsonl")][: args.prompts]
    batch_size = args.hf_batch_size if args.hf_batch_size == "auto" else int(args.hf_batch_size)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)

    hf = load_backend("hf", model, dtype=args.dtype, batch_size=batch_size)
    with load_backend("vllm", model, dtype=args.dtype) as vllm:
        hf_time, vllm_time, ratio = paired(
            lambda: hf.generate(prompts, params), lambda: vllm.generate(prompts, params), repeats=args.repeats
        )
        agree = sum(a.texts == b.texts for a, b in zip(hf.generate(prompts, params), vllm.generate(prompts, params)))

    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {os.cpu_count()} cores"
    print(f"torch {torch.__version__}, {device}, dtype {str(vllm.dtype).removeprefix('torch.')}")
    print(f"{len(prompts)} prompts, greedy, {args.max_new_tokens} new tokens; median of {args.repeats} paired rounds")
    print(f"  HF, batches of {args.hf_batch_size:>4}     {hf_time:7.3f} s   {len(prompts) / hf_time:8.1f} prompts/s")
    print(f"  vLLM, engine {args.vllm_engine:9s}    {vllm_time:7.3f} s   {len(prompts) / vllm_time:8.1f} prompts/s")
    print(f"  vLLM speed-up over HF      {1 / ratio:.2f}x")
    print(f"  greedy texts equal         {agree}/{len(prompts)}")


if __name__ == "__main__":
    main()
