"""Core performance: hook overhead and batched generation, as ratios against a baseline measured
in the same run (absolute times beside them).

    python benchmarks/bench_core.py

Model: a random-init Llama with 4 layers, d=256; forward batch 16 x 128 tokens.
Goals: capture overhead (hooked / plain forward) <= 1.10; batched generation of 32 prompts
>= 4x faster than a per-prompt loop.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model builder
from _timing import paired  # noqa: E402

from llmkit import arch, hooks  # noqa: E402
from llmkit.generation import GenerationParams, HFBackend  # noqa: E402
from llmkit.models import load_model  # noqa: E402
from tiny import build_model_dir  # noqa: E402


def main() -> None:
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp) / "llama", "llama", layers=4, d_model=256, d_mlp=1024)
        model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    layers = list(range(len(arch.decoder_layers(model))))
    batch = {"input_ids": torch.randint(1, len(tokenizer), (16, 128))}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])

    def plain():
        with torch.inference_mode():
            model(**batch)

    def hooked(point, position):
        def run():
            with torch.inference_mode(), hooks.capture(model, point, layers, position=position):
                model(**batch)

        return run

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print("\ncapture overhead: forward pass, batch 16 x 128 tokens, all 4 layers captured (goal <= 1.10)")
    print("                                     plain      hooked   hooked/plain")
    for point in arch.POINTS:
        for position in ("all", "last"):
            base, t, ratio = paired(plain, hooked(point, position), repeats=21)
            print(
                f"  capture {point:9s} position={position:4s}  {base * 1e3:7.2f} ms  {t * 1e3:7.2f} ms   {ratio:.3f}x"
            )

    prompts = [f"prompt number {i}: " + "one two three " * (1 + i % 5) for i in range(32)]
    params = GenerationParams(max_new_tokens=32)
    batched_backend = HFBackend(model, tokenizer, batch_size=32)
    single_backend = HFBackend(model, tokenizer, batch_size=1)
    looped, batched, ratio = paired(
        lambda: [single_backend.generate([p], params) for p in prompts],
        lambda: batched_backend.generate(prompts, params),
        repeats=3,
    )
    print("\ngeneration: 32 prompts, 32 new tokens, greedy (goal >= 4x)")
    print(f"  per-prompt loop   {looped:6.2f} s")
    print(f"  one batch of 32   {batched:6.2f} s   speed-up {1 / ratio:.2f}x")


if __name__ == "__main__":
    main()
