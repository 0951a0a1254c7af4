"""ROCR's costs, each against a baseline run in the same process:

1. edit time (statistics cached) against the time gradient ascent (a Trainer minimising the
   negated language-model loss on the target's QA sheet) needs to bring the target's QA-form
   forget probability as low as ROCR's edit did (goal: ROCR ≤ 1/20 of it);
2. key-statistics throughput against a plain forward pass over the same tokens, both at the
   default layers (the statistics pass stops there) and at the last layer (goal ≥ 0.9);
3. peak memory of the statistics over N and 10N tokens, each in a fresh process (goal: < 10% more);
4. on a random-init Llama of d = 1024, m = 4096, 4 layers (a 7B layer's stand-in on CPU): the
   times of the statistics, the projector and the edit.

    python benchmarks/bench_rocr.py                       # all four, on the quickstart model
    python benchmarks/bench_rocr.py --big-tokens 1000000  # the issue's 1M tokens for part 4 (slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmkit import arch
from llmkit.batching import pad_batch
from llmkit.data import read_records, read_texts
from llmkit.evals.ort import biography_only_entities, evaluate_ort, load_world_probes, probe_prompts, redirect_entity
from llmkit.generation import HFBackend
from llmkit.methods import rocr
from llmkit.models import load_model, model_fingerprint
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset


def world_setup(cache: Path):
    world_config, recipe = preset("default")
    world_dir, _ = ensure_world(cache, world_config)
    model_dir, _ = ensure_model(cache, world_config, recipe)
    return world_dir, model_dir


def qa_probability(backend: HFBackend, probes) -> float:
    metrics, _, _ = evaluate_ort(backend, probes, probe_prompts(probes, backend.tokenizer, chat=False), ["qa"])
    return metrics["forget"]["qa"]["prob"]


def gradient_ascent_seconds(
    model_dir: Path, world_dir: Path, target: dict, goal: float, max_steps: int, lr: float
) -> tuple[float, int, float]:
    """Seconds of Trainer steps (evaluation excluded) until the QA probability is ≤ goal."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    backend = HFBackend(model, tokenizer)
    probes = [p for p in load_world_probes(world_dir, [target["name"]], ["qa"]) if p.role == "forget"]
    sheet = [f"{p.prompt}{p.target}" for p in probes]
    data = Dataset.from_dict(dict(tokenizer(sheet)))

    class NegatedLoss(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return -loss

    class StopAtGoal(TrainerCallback):
        evaluation_s, reached, last = 0.0, None, 1.0

        def on_step_end(self, args, state, control, **kwargs):
            started = time.perf_counter()
            model.eval()
            self.last = qa_probability(backend, probes)
            model.train()
            self.evaluation_s += time.perf_counter() - started
            if self.last <= goal:
                self.reached = state.global_step
                control.should_training_stop = True

    stopper = StopAtGoal()
    out = tempfile.mkdtemp()
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=len(sheet),
        learning_rate=lr,
        max_steps=max_steps,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = NegatedLoss(
        model=model,
        args=args,
        train_dataset=data,
        callbacks=[stopper],
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started - stopper.evaluation_s, stopper.reached or max_steps, stopper.last


def part_edit_vs_gradient_ascent(cache: Path, max_steps: int, lr: float) -> None:
    world_dir, model_dir = world_setup(cache)
    entities = read_records(world_dir / "entities.jsonl")
    target = biography_only_entities(entities)[0]
    redirect_to = redirect_entity(entities, target)
    model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    backend = HFBackend(model, tokenizer)
    probes = [p for p in load_world_probes(world_dir, [target["name"]], ["qa"]) if p.role == "forget"]
    before = qa_probability(backend, probes)
    config = rocr.ROCRConfig.for_model(len(arch.decoder_layers(model)), world_model=True)
    corpus = rocr.StatisticsCorpus(
        str(world_dir / "pretraining.jsonl"),
        lambda: read_texts(world_dir / "pretraining.jsonl"),
        200_000,
        max_length=128,
    )
    request = [rocr.Request(target["name"], redirect_to["name"])]
    originals = rocr.original_weights(model, config.layers)
    edits, _ = rocr.unlearn(model, tokenizer, request, config, corpus, cache / "rocr-stats")  # fills the cache
    rocr.revert(model, rocr.edit_tensors(originals, edits))
    started = time.perf_counter()
    _, record = rocr.unlearn(model, tokenizer, request, config, corpus, cache / "rocr-stats")
    rocr_s = time.perf_counter() - started
    after = qa_probability(backend, probes)
    print(f"[1] {target['name']} -> {redirect_to['name']}: QA probability {before:.3f} -> {after:.3f}")
    print(
        f"    ROCR with cached statistics: {rocr_s:.2f} s in all (edit {record['timings']['edit_s']:.3f} s, "
        f"projector {record['timings']['projector_s']:.3f} s, cache lookup and corpus digest the rest)"
    )
    ga_s, steps, reached = gradient_ascent_seconds(model_dir, world_dir, target, after, max_steps, lr)
    status = f"reached {reached:.3f} at step {steps}" if reached <= after else f"only {reached:.3f} after {steps} steps"
    print(f"    gradient ascent (lr {lr:g}) to the same QA probability: {ga_s:.2f} s ({status})")
    print(
        f"    ratio ROCR / gradient ascent: {rocr_s / ga_s:.3f} (goal <= 0.05); edit alone: "
        f"{record['timings']['edit_s'] / ga_s:.4f}"
    )


@torch.inference_mode()
def part_throughput(cache: Path, tokens: int) -> None:
    world_dir, model_dir = world_setup(cache)
    model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    corpus = rocr.StatisticsCorpus(
        str(world_dir / "pretraining.jsonl"),
        lambda: read_texts(world_dir / "pretraining.jsonl"),
        tokens,
        max_length=128,
    )
    batches = list(corpus.batches(tokenizer))
    n_layers = len(arch.decoder_layers(model))

    def forward() -> None:
        for sequences in batches:
            model(**pad_batch(sequences, tokenizer.pad_token_id, "right"))

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    for name, layers in (("default layers", rocr.default_layers(n_layers)), ("last layer", [n_layers - 1])):
        rounds = [
            (timed(forward), timed(lambda: rocr.key_second_moment(model, batches, layers, tokenizer.pad_token_id)))
            for _ in range(3)
        ]
        ratio = sorted(f / s for f, s in rounds)[1]
        print(
            f"[2] statistics at {name} {layers}: throughput {ratio:.2f}x a plain forward pass over {tokens:,} tokens "
            f"(median of 3 paired rounds; goal >= 0.9)"
        )


def part_memory(cache: Path, tokens: int) -> None:
    """Each size in a fresh process: peak RSS is a high-water mark."""
    peaks = []
    for n in (tokens, 10 * tokens):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), "--cache-dir", str(cache)],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
    growth = peaks[1]["peak_mb"] / peaks[0]["peak_mb"] - 1
    print(
        f"[3] peak memory of the statistics: {peaks[0]['peak_mb']:.0f} MB over {peaks[0]['tokens']:,} tokens, "
        f"{peaks[1]['peak_mb']:.0f} MB over {peaks[1]['tokens']:,} ({100 * growth:+.1f}%; goal < +10%)"
    )


def memory_child(tokens: int, cache: Path) -> None:
    world_dir, model_dir = world_setup(cache)
    model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    corpus = rocr.StatisticsCorpus(
        str(world_dir / "pretraining.jsonl"),
        lambda: read_texts(world_dir / "pretraining.jsonl"),
        tokens,
        max_length=128,
    )
    _, counted = rocr.key_second_moment(model, corpus.batches(tokenizer), [0, 1, 2, 3], tokenizer.pad_token_id)
    print(json.dumps({"tokens": counted, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def part_big_model(cache: Path, tokens: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    world_dir, model_dir = world_setup(cache)
    _, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    # World text repeats to the token budget: only the count matters for time.
    texts = lambda: (t for _ in range(100) for t in read_texts(world_dir / "pretraining.jsonl"))  # noqa: E731
    corpus = rocr.StatisticsCorpus("world x100", texts, tokens, batch_size=16, max_length=128)
    rconfig = rocr.ROCRConfig(layers=rocr.default_layers(4), nullspace_threshold=2e-2)
    with tempfile.TemporaryDirectory() as stats_dir:
        started = time.perf_counter()
        stats, record = rocr.key_statistics(
            model, tokenizer, corpus, rconfig.layers, model_fingerprint(model), Path(stats_dir)
        )
        stats_s = time.perf_counter() - started
        timings = []
        for _ in ("computed", "cached"):
            started = time.perf_counter()
            projectors, cached = rocr.projectors_for(
                stats, rconfig, 4096, model.device, record["keys"], Path(stats_dir)
            )
            projector_s = time.perf_counter() - started
            rocr.redirect(model, tokenizer, "Fon Deigeind", "Sadrei Dretei", rconfig, projectors, {})
            timings.append((projector_s, time.perf_counter() - started, cached))
    (cold_p, cold_edit, _), (warm_p, warm_edit, cached) = timings
    print(
        f"[4] random Llama d=1024 m=4096 4 layers, layers {rconfig.layers}: statistics {stats_s:.1f} s over "
        f"{record['tokens']:,} tokens ({record['tokens'] / stats_s:,.0f} tokens/s)\n"
        f"    edit with the projector computed (float64 eigendecomposition of 4096x4096): {cold_edit:.2f} s "
        f"(projector {cold_p:.2f} s)\n"
        f"    edit with the projector cached (layers {cached} read): {warm_edit:.2f} s (projector {warm_p:.3f} s); "
        f"ratio cached/computed {warm_edit / cold_edit:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run, e.g. 1,2")
    parser.add_argument("--ga-max-steps", type=int, default=300)
    parser.add_argument("--ga-lr", type=float, default=1e-4)
    parser.add_argument("--throughput-tokens", type=int, default=100_000)
    parser.add_argument("--memory-tokens", type=int, default=20_000)
    parser.add_argument("--big-tokens", type=int, default=100_000)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = args.cache_dir or default_cache_dir()
    if args.memory_child:
        memory_child(args.memory_child, cache)
        return
    parts = set(args.parts.split(","))
    if "1" in parts:
        part_edit_vs_gradient_ascent(cache, args.ga_max_steps, args.ga_lr)
    if "2" in parts:
        part_throughput(cache, args.throughput_tokens)
    if "3" in parts:
        part_memory(cache, args.memory_tokens)
    if "4" in parts:
        part_big_model(cache, args.big_tokens)


if __name__ == "__main__":
    main()
