"""Skill unlearning at inference: generation with the KSD gate and with Neuron Adjust against
plain generation, in the same process (paired rounds, medians); and the peak memory of fitting
Neuron Adjust's statistics on 10x more data.

Generation: 64 prompts the gate lets through (test items of the skills that are kept), greedy,
as `llmkit eval skills` generates (24 tokens, stop at a newline), on the default world model.
The gate adds one prefill pass up to its layer; Neuron Adjust adds its hooks to every forward.
Goals: gate ≤ 1.03x, Neuron Adjust ≤ 1.10x. Memory: each fit runs in a fresh process and reports
its peak resident set; goal: 10x the data grows it by < 10%.

    python benchmarks/bench_skills.py                 # the quickstart's default model
    python benchmarks/bench_skills.py --model DIR     # another model of the default world
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from _timing import paired

from llmkit.data import record_texts
from llmkit.evals.skills import world_skill_items
from llmkit.generation import GenerationParams, HFBackend
from llmkit.methods.intervened import IntervenedBackend
from llmkit.methods.ksd import KSDConfig, fit_ksd
from llmkit.methods.neuron_adjust import NeuronAdjustConfig, fit_neuron_adjust
from llmkit.models import load_model
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset
from llmkit.world.forget_set import skill_set
from llmkit.world.generator import NUMERIC_SKILL

GOALS = {"KSD gate": 1.03, "Neuron Adjust": 1.10}
MEMORY_GOAL = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory [default: the quickstart's default world model]")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--memory-records", type=int, default=300, help="forget (and retain) records of the 1x memory fit"
    )
    parser.add_argument("--fit-child", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    cache = default_cache_dir()
    world_dir, _ = ensure_world(cache, preset("default")[0])
    model_path = options.model or str(ensure_model(cache, *preset("default"))[0])
    if options.fit_child:
        return fit_child(model_path, world_dir, options.fit_child)

    torch.manual_seed(0)
    model, tokenizer = load_model(model_path, device="cpu", dtype="float32")
    forget, retain, _ = skill_set(world_dir, NUMERIC_SKILL)
    gate, _ = fit_ksd(model, tokenizer, record_texts(forget, queries=True), KSDConfig())
    adjust, _ = fit_neuron_adjust(
        model, tokenizer, record_texts(forget), record_texts(retain[:2000]), NeuronAdjustConfig()
    )
    plain = HFBackend(model, tokenizer)
    kept = [i["prompt"] for i in world_skill_items(world_dir) if i["skill"] != NUMERIC_SKILL]
    refused = gate.refuses(model, tokenizer, kept)
    prompts = [p for p, r in zip(kept, refused) if not r][: options.prompts]
    params = GenerationParams(max_new_tokens=24, stop=("\n",))

    print(f"model {model_path}: {len(prompts)} prompts of the kept skills, greedy, 24 tokens, stop at newline")
    print(f"{'intervention':<14} {'plain ms':>9} {'with it ms':>11} {'ratio':>7} {'goal':>6}")
    for name, backend in (
        ("KSD gate", IntervenedBackend(plain, model, [], [gate])),
        ("Neuron Adjust", IntervenedBackend(plain, model, [adjust], [])),
    ):
        base, cand, ratio = paired(
            lambda: plain.generate(prompts, params), lambda: backend.generate(prompts, params), options.repeats
        )
        goal = GOALS[name]
        print(
            f"{name:<14} {1000 * base:>9.0f} {1000 * cand:>11.0f} {ratio:>6.3f}x {goal:>5.2f}x "
            f"{'ok' if ratio <= goal else 'MISSED'}"
        )

    peaks = {}
    for scale in (1, 10):
        records = options.memory_records * scale
        child = [sys.executable, __file__, "--model", model_path, "--fit-child", str(records)]
        peaks[scale] = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
    growth = peaks[10]["peak_rss_mb"] / peaks[1]["peak_rss_mb"]
    print(
        f"Neuron Adjust fit, peak RSS: {peaks[1]['peak_rss_mb']:.0f} MB on {peaks[1]['tokens']:,} tokens, "
        f"{peaks[10]['peak_rss_mb']:.0f} MB on {peaks[10]['tokens']:,} tokens: {growth:.3f}x "
        f"(goal < {MEMORY_GOAL:.2f}x) {'ok' if growth < MEMORY_GOAL else 'MISSED'}"
    )


def fit_child(model_path: str, world_dir, records: int) -> None:
    """Fit Neuron Adjust on `records` forget and `records` retain items; print the peak RSS."""
    model, tokenizer = load_model(model_path, device="cpu", dtype="float32")
    forget, retain, _ = skill_set(world_dir, NUMERIC_SKILL)
    forget_texts, retain_texts = (
        (texts * (records // len(texts) + 1))[:records] for texts in map(record_texts, (forget, retain))
    )
    _, record = fit_neuron_adjust(model, tokenizer, forget_texts, retain_texts, NeuronAdjustConfig())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak_mb, "tokens": record["forget_tokens"] + record["retain_tokens"]}))


if __name__ == "__main__":
    main()
