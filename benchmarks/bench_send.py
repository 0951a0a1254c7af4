"""SeND's training overhead: time per epoch of `train send` against plain continued training
(`train sft`) on the same texts, in the same process (paired rounds, medians).

Both train the default world model from its weights on the same knowledge texts (biographies and
QA sheets of the world's pretraining text), same seed and batch size, no per-epoch evaluation.
SeND runs in its steady state: a selection of 20% of the indices is dropped on every forward pass
(the mask), and the tracking split is embedded after every epoch, as its schedule does. Goal:
SeND / sft ≤ 1.05 per epoch (the paper reports about 1.11).

    python benchmarks/bench_send.py                    # both drop targets
    python benchmarks/bench_send.py --texts 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import paired

from llmkit.data import read_records
from llmkit.methods import send
from llmkit.models import load_model
from llmkit.training import TrainingBudget, train
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset

GOAL = 1.05


def knowledge_texts(world_dir, count: int) -> list[str]:
    docs = read_records(world_dir / "pretraining.jsonl")
    return [d["text"] for d in docs if d["kind"] in ("biography", "questions")][:count]


def run_epochs(model_path: str, texts: list[str], epochs: int, target: str | None) -> None:
    """Train a fresh copy for `epochs` epochs: plain (target None) or SeND dropping on `target`."""
    model, tokenizer = load_model(model_path, device="cpu", dtype="float32")
    train_texts, tracking, _ = send.split_texts(texts, 0.1, 0.0, seed=0)
    callbacks = []
    if target is not None:
        dropout = send.SensitivityDropout(
            send.SendConfig(target=target), send.encode_texts(tokenizer, tracking, 512), tokenizer.pad_token_id
        )
        d = model.config.hidden_size
        dropout.indices, dropout.drop_until = (
            torch.randperm(d, generator=torch.Generator().manual_seed(0))[: d // 5].sort().values,
            10**6,
        )
        callbacks.append(dropout)
    budget = TrainingBudget(epochs=epochs, learning_rate=1e-4, batch_size=16, save_steps=10**6)
    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = send.build_text_trainer(model, tokenizer, train_texts, checkpoints, budget, callbacks=callbacks)
        train(trainer, {"bench": target})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory [default: the quickstart's default world model]")
    parser.add_argument("--texts", type=int, default=1500, help="knowledge texts (10%% become the tracking split)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    cache = default_cache_dir()
    world_dir, _ = ensure_world(cache, preset("default")[0])
    model_path = options.model or str(ensure_model(cache, *preset("default"))[0])
    texts = knowledge_texts(world_dir, options.texts)

    print(f"model {model_path}: {len(texts)} texts, {options.epochs} epochs a run, batch 16, paired rounds")
    print(f"{'drop target':<12} {'sft s/epoch':>12} {'SeND s/epoch':>13} {'ratio':>7} {'goal':>6}")
    for target in send.TARGETS:
        base, cand, ratio = paired(
            lambda: run_epochs(model_path, texts, options.epochs, None),
            lambda: run_epochs(model_path, texts, options.epochs, target),
            options.repeats,
            warmup=0,
        )
        print(
            f"{target:<12} {base / options.epochs:>12.2f} {cand / options.epochs:>13.2f} {ratio:>6.3f}x {GOAL:>5.2f}x "
            f"{'ok' if ratio <= GOAL else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
