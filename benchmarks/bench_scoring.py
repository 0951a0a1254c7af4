"""Probe scoring throughput, llmkit's `HFBackend.score` against lm-evaluation-harness's
`HFLM.loglikelihood`, on the same model and requests in the same process.

    pip install -c constraints.txt -e '.[bench]'
    python benchmarks/bench_scoring.py                    # the quickstart model (built if missing)
    python benchmarks/bench_scoring.py --preset micro
    python benchmarks/bench_scoring.py --shape qwen2.5-0.5b --requests 256 --batch-size 16

Requests: the ORT probes (every form) of the world's biography-only entities of exposure >= 10 and
their neighbours, as `llmkit eval ort` builds them: (prompt, " " + answer), each distinct pair
once. Both score in batches of `--batch-size` on the same loaded model (lm-eval with
`add_bos_token=True`, as llmkit reads prompts with the tokenizer's BOS). Rounds alternate the
two; the figure is the median per-round ratio lm-eval time / llmkit time, with the absolute
times, the largest difference of any request's log-likelihood and the greedy agreement beside it.

`--shape qwen2.5-0.5b` scores the same requests with a randomly initialised model of
Qwen2.5-0.5B's shape (24 layers, width 896, a 151,936-token vocabulary; no weights can be
downloaded here): the world model's 1,658-token vocabulary makes the output layer nearly free,
which a real model's is not.
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--shape", choices=("world", "qwen2.5-0.5b"), default="world", help="the model scored with")
    parser.add_argument("--requests", type=int, default=None, help="score only the first N distinct requests")
    args = parser.parse_args()

    import torch
    import transformers
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from llmkit.data import read_records
    from llmkit.evals.ort import biography_only_entities, load_world_probes, probe_prompts
    from llmkit.generation import HFBackend
    from llmkit.models import load_model
    from llmkit.world.cache import default_cache_dir, ensure_model, preset, world_dir

    transformers.logging.set_verbosity_error()
    world, recipe = preset(args.preset)
    cache = args.cache_dir or default_cache_dir()
    print(f"model: preset {args.preset} (building it if it is not in {cache})", file=sys.stderr)
    model_dir = str(ensure_model(cache, world, recipe)[0])
    world_path = world_dir(cache, world)
    targets = [
        e["name"] for e in biography_only_entities(read_records(world_path / "entities.jsonl")) if e["exposure"] >= 10
    ]
    model, tokenizer = load_model(model_dir, device=args.device, dtype="float32")
    if args.shape == "qwen2.5-0.5b":
        torch.manual_seed(0)
        config = transformers.Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = transformers.AutoModelForCausalLM.from_config(config).to(model.device).eval()
    probes = load_world_probes(world_path, targets)
    prompts = probe_prompts(probes, tokenizer, chat=False)
    requests = list(dict.fromkeys(zip(prompts, (p.continuation for p in probes))))[: args.requests]
    contexts, continuations = [c for c, _ in requests], [c for _, c in requests]

    llmkit = HFBackend(model, tokenizer, batch_size=args.batch_size)
    harness = HFLM(
        pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, add_bos_token=True, device=str(model.device)
    )
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=request, idx=i) for i, request in enumerate(requests)
    ]

    def score_llmkit():
        return llmkit.score(contexts, continuations)

    def score_harness():
        return harness.loglikelihood(instances, disable_tqdm=True)

    harness_time, llmkit_time, ratio = paired(score_harness, score_llmkit, repeats=args.repeats)
    ours, theirs = score_llmkit(), score_harness()
    largest_difference = max(abs(a.total - ll) for a, (ll, _) in zip(ours, theirs))
    greedy_agree = sum(a.greedy == greedy for a, (_, greedy) in zip(ours, theirs))

    device = "cuda: " + torch.cuda.get_device_name() if model.device.type == "cuda" else f"cpu, {os.cpu_count()} cores"
    print(
        f"torch {torch.__version__}, {device}, float32; model shape {args.shape}; {len(targets)} targets, "
        f"{len(requests)} distinct requests; batches of {args.batch_size}; median of {args.repeats} paired rounds"
    )
    print(f"  lm-eval HFLM.loglikelihood  {harness_time:7.3f} s   {len(requests) / harness_time:8.1f} requests/s")
    print(f"  llmkit HFBackend.score      {llmkit_time:7.3f} s   {len(requests) / llmkit_time:8.1f} requests/s")
    print(f"  llmkit speed-up             {1 / ratio:.2f}x")
    print(f"  largest |log-likelihood difference|  {largest_difference:.2e}")
    print(f"  greedy flags equal          {greedy_agree}/{len(requests)}")


if __name__ == "__main__":
    main()
