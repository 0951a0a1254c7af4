"""MASH's rollouts against plain generation, in the same process (paired rounds, medians).

1. Rollout throughput: the policy tokens per second of `Rollout` (segments sampled to a stop tag,
   BM25 searches, documents appended, the next segment prefilled over them) against one sampled
   generation per prompt of exactly as many tokens (min = max new tokens). Goal: ≥ 0.8.
2. GRPO step time: TRL's GRPOTrainer with MASH's rollout and reward, against the same trainer with
   TRL's own single-turn generation of the same completion length and a constant reward (each
   after a warm-up run).

The policy is the default world model after a one-epoch warm start on `llmkit data mash`'s traces
(made here, about 20 s), so that it searches as a trained MASH model does.

    python benchmarks/bench_mash.py
    python benchmarks/bench_mash.py --model DIR     # a model `llmkit train mash` wrote
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _timing import paired

from llmkit.configs import TrainingBudget
from llmkit.methods.configs import MashConfig
from llmkit.methods.mash import (
    Rollout,
    SearchEnvironment,
    SearchIndex,
    add_protocol_tokens,
    build_warm_start,
    grpo_trainer,
    read_corpus,
    sentence_passages,
    with_prompts,
)
from llmkit.models import load_model
from llmkit.training import build_sft_trainer, encode_records, train
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset
from llmkit.world.questions import search_questions

GOAL = 0.8


def warm_started(model_path: str, items, index, scratch: Path):
    model, tokenizer = load_model(model_path, device="cpu", dtype="float32")
    if add_protocol_tokens(model, tokenizer):
        traces = build_warm_start(items, index, top_k=1, share_direct=0.332)
        budget = TrainingBudget(epochs=1, learning_rate=1e-3, batch_size=16, save_steps=10_000)
        trainer = build_sft_trainer(model, tokenizer, encode_records(tokenizer, traces), scratch / "warm", budget)
        train(trainer, {"method": "bench warm start"})
    return model.eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a MASH model [default: the default world model, warm-started here]")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per timing")
    options = parser.parse_args()
    cache = default_cache_dir()
    world_dir, _ = ensure_world(cache, preset("default")[0])
    items = with_prompts(search_questions(world_dir), "short")
    index = SearchIndex(sentence_passages(read_corpus(world_dir / "corpus.jsonl")))
    config = MashConfig(top_k=1, segment_tokens=32, max_completion_length=256)
    env = SearchEnvironment(index, config.top_k, config.max_searches)
    scratch = Path(tempfile.mkdtemp(prefix="bench_mash_"))
    torch.manual_seed(0)
    model, tokenizer = warm_started(
        options.model or str(ensure_model(cache, *preset("default"))[0]), items, index, scratch
    )
    prompts = [item["prompt"] for item in items[: options.prompts]]
    rollout = Rollout(env, config)

    # 1. Throughput: the policy's own tokens, timed against as many tokens of plain sampling.
    out = rollout.roll(model, tokenizer, prompts)
    policy_tokens = [sum(mask) for mask in out["env_mask"]]
    length = max(1, round(sum(policy_tokens) / len(policy_tokens)))
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")

    def plain() -> None:
        with torch.no_grad():
            model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=length, min_new_tokens=length,
                           pad_token_id=tokenizer.pad_token_id)  # fmt: skip

    generated = {}

    def with_tool() -> None:
        generated["tokens"] = sum(sum(mask) for mask in rollout.roll(model, tokenizer, prompts)["env_mask"])

    base, cand, _ = paired(plain, with_tool, options.repeats)
    plain_rate, tool_rate = length * len(prompts) / base, generated["tokens"] / cand

    # 2. GRPO steps with the tool, and with TRL's own generation of the same length.
    questions = items[: 8 * options.steps]
    budget = TrainingBudget(max_steps=options.steps, learning_rate=1e-6, batch_size=1, save_steps=10_000)

    def grpo(tool: bool) -> float:
        settings = config if tool else replace(config, max_completion_length=length)
        trainer, _ = grpo_trainer(model, tokenizer, questions, env, settings, scratch / f"grpo{time.time_ns()}", budget)
        if not tool:
            trainer.rollout_func = None
            trainer.reward_funcs = [lambda completions, **_: [1.0] * len(completions)]
        started = time.perf_counter()
        trainer.train()
        return (time.perf_counter() - started) / options.steps

    grpo(False), grpo(True)  # warm-up: the first trainer pays for imports and allocations
    plain_step, tool_step = grpo(False), grpo(True)
    figures = {
        "prompts": len(prompts),
        "policy_tokens_per_rollout": length,
        "searches_per_rollout": round(sum(out["searches"]) / len(prompts), 2),
        "plain_tokens_per_s": round(plain_rate, 1),
        "rollout_tokens_per_s": round(tool_rate, 1),
        "throughput_ratio": round(tool_rate / plain_rate, 3),
        "goal": GOAL,
        "met": tool_rate / plain_rate >= GOAL,
        "grpo_step_s_plain_generation": round(plain_step, 2),
        "grpo_step_s_with_search": round(tool_step, 2),
        "grpo_step_ratio": round(tool_step / plain_step, 2),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
