"""Step time of each loss-based unlearning method against plain fine-tuning (SFT) steps on the
same batches, in the same process (paired rounds, medians).

A step is the trainer's `compute_loss` and its backward pass over the same fixed batches of the
world's QA facts. The SFT baseline reads what the method reads: forget batches alone for GA, and
forget + retain batches (NLL_f + NLL_r, two forwards) for the methods with a retain term. NPO and
KL also pay one forward of the frozen reference, on the forget and the retain batch respectively.
Goals: ≤ 1.1x for GA and GradDiff, ≤ 1.6x for NPO and KL (SimNPO has no reference).

    python benchmarks/bench_unlearn.py                 # the quickstart's default model
    python benchmarks/bench_unlearn.py --model DIR     # any model directory
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import paired

from llmkit.data import read_records
from llmkit.methods import gradient
from llmkit.models import load_model
from llmkit.training import TrainingBudget, build_trainer, training_arguments
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset

GOALS = {"ga": 1.1, "graddiff": 1.1, "npo": 1.6, "simnpo": 1.6, "kl": 1.6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory [default: the quickstart's default world model]")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    torch.manual_seed(0)
    cache = default_cache_dir()
    world_dir, _ = ensure_world(cache, preset("default")[0])
    model_path = options.model or str(ensure_model(cache, *preset("default"))[0])
    facts = [
        {"prompt": p["prompt"], "answer": p["answer"]}
        for p in read_records(world_dir / "probes.jsonl")
        if p["form"] == "qa"
    ]
    size = options.batch_size * options.batches
    forget, retain = facts[:size], facts[size : 2 * size]
    model, tokenizer = load_model(model_path, device="cpu", dtype="float32")
    budget = TrainingBudget(epochs=1, learning_rate=1e-5, batch_size=options.batch_size, save_steps=1000)

    def steps(method: str, with_retain: bool):
        trainer = gradient.build_unlearning_trainer(
            model, tokenizer, method, forget, retain if with_retain else None, tempfile.mkdtemp(), budget
        )
        return run_steps(trainer)

    print(f"model {model_path}: {options.batches} batches of {options.batch_size} QA facts (+ as many retain facts)")
    print(f"{'method':<10} {'sft step ms':>12} {'method step ms':>15} {'ratio':>7} {'goal':>6}")
    for method, goal in GOALS.items():
        with_retain = method != "ga"
        sft = sft_steps(model, tokenizer, forget, retain if with_retain else None, budget)
        base, cand, ratio = paired(sft, steps(method, with_retain), options.repeats)
        per = 1000 / options.batches
        print(
            f"{method:<10} {base * per:>12.1f} {cand * per:>15.1f} {ratio:>6.2f}x {goal:>5.1f}x "
            f"{'ok' if ratio <= goal else 'MISSED'}"
        )


def sft_steps(model, tokenizer, forget, retain, budget):
    """Plain fine-tuning steps on the same batches: NLL_f (+ NLL_r when there is retain data)."""
    trainer = build_trainer(
        model,
        gradient.unlearning_dataset(tokenizer, forget, retain, 0),
        training_arguments(tempfile.mkdtemp(), budget),
        trainer_class=gradient.UnlearningTrainer,
        data_collator=gradient.PadCollator(tokenizer.pad_token_id),
        unlearning=gradient.GradientConfig("sft"),
    )
    return run_steps(trainer)


def run_steps(trainer):
    batches = list(trainer.get_train_dataloader())
    trainer.model.train()
    return lambda: [trainer.compute_loss(trainer.model, batch).backward() for batch in batches]


if __name__ == "__main__":
    main()
