"""One run of the world study (docs/world.md, "The second edition: the study"): a preset's world
and recipe with some settings changed, pretrained from scratch, and what the model knows by
population (demonstration, biography-only), phrasing (trained, held-out template), exposure and
form; the skills; and which subject token carries identity.

    python scripts/world_study.py OUT [--preset default] [--world '{"sheet_forms": 1}']
                                      [--recipe '{"steps": 1400}']

OUT/world and OUT/model are reused when present; OUT/study.json holds every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from llmkit.data import read_records
from llmkit.evals.identity import subject_patching, world_pairs
from llmkit.evals.knowledge import POPULATIONS, evaluate_knowledge
from llmkit.evals.skills import evaluate_skills, world_skill_items
from llmkit.generation import load_backend
from llmkit.world.cache import PRESETS
from llmkit.world.forget_set import KNOWN_EXPOSURE
from llmkit.world.generator import build_world, write_world
from llmkit.world.pretrain import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", default="default", choices=list(PRESETS))
    parser.add_argument("--world", type=json.loads, default={}, help="WorldConfig fields to change, as JSON")
    parser.add_argument("--recipe", type=json.loads, default={}, help="PretrainConfig fields to change, as JSON")
    options = parser.parse_args()
    world, recipe = PRESETS[options.preset]
    world, recipe = replace(world, **options.world), replace(recipe, **options.recipe)
    world_dir, model_dir = options.out / "world", options.out / "model"
    if not (world_dir / "world.json").is_file():
        write_world(build_world(world), world_dir)
    started = time.perf_counter()
    if not (model_dir / "config.json").is_file():
        pretrain(world_dir, model_dir, recipe)
    pretrain_s = round(time.perf_counter() - started)

    backend = load_backend("hf", str(model_dir), device="cpu")
    metrics, samples = evaluate_knowledge(
        backend, read_records(world_dir / "probes.jsonl"), read_records(world_dir / "facts.jsonl")
    )
    skills, _ = evaluate_skills(backend, world_skill_items(world_dir))
    entities = read_records(world_dir / "entities.jsonl")
    patching = {
        population: subject_patching(
            backend.model,
            backend.tokenizer,
            world_pairs([e for e in entities if e["demonstration"] == flag], "birthplace", KNOWN_EXPOSURE, 20),
            "Question: Where was {} born?\n",
        )
        for population, flag in POPULATIONS.items()
    }
    study = {
        "world": options.world,
        "recipe": options.recipe,
        "pretrain_s": pretrain_s,
        "known": metrics["known"],
        "by_exposure": metrics["accuracy"],
        "chance": metrics["chance"],
        "skills": skills["accuracy"],
        "identity_patching": patching,
    }
    (options.out / "study.json").write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: study[k] for k in ("pretrain_s", "known", "by_exposure", "skills")}, indent=1))


if __name__ == "__main__":
    main()
