"""Which subject token carries a world entity's identity, layer by layer (llmkit.evals.identity):
the table in docs/world.md, "Which token carries identity".

    python scripts/identity_patching.py [MODEL WORLD_DIR] [--min-exposure 10] [--pairs 40]

Without MODEL and WORLD_DIR: the shipped default model and its world (built into the cache).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit.data import read_records
from llmkit.evals.identity import subject_patching, world_pairs
from llmkit.world.cache import default_cache_dir, ensure_model, preset, world_dir

TEMPLATE = "Question: Where was {} born?\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("world", nargs="?", type=Path)
    parser.add_argument("--min-exposure", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=40)
    options = parser.parse_args()
    if options.model is None:
        config = preset("default")
        options.model, _ = ensure_model(default_cache_dir(), *config)
        options.world = world_dir(default_cache_dir(), config[0])
    model = AutoModelForCausalLM.from_pretrained(options.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    entities = read_records(options.world / "entities.jsonl")
    pairs = world_pairs(entities, "birthplace", options.min_exposure, options.pairs)
    print(json.dumps(subject_patching(model, tokenizer, pairs, TEMPLATE), indent=1))


if __name__ == "__main__":
    main()
