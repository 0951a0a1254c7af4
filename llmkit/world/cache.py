"""Named world + recipe presets, and a cache that builds each world and model once.

Cache layout (default ~/.cache/llmkit, or $LLMKIT_CACHE):
    worlds/seed<S>-<hash of the world config>/     a `world build` output
    models/<hash of world config and recipe>/       a `world pretrain` output
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from llmkit.errors import BadInputError
from llmkit.world.generator import WorldConfig, build_world, load_world_config, write_world
from llmkit.world.pretrain import PretrainConfig, config_digest, pretrain, recipe_id

PRESETS: dict[str, tuple[WorldConfig, PretrainConfig]] = {
    # The embedded default: a 2M-parameter Llama that knows the facts it saw 10+ times.
    "default": (WorldConfig(), PretrainConfig()),
    # A one-minute version for tests and smoke runs: fewer entities, a smaller model. Two heads
    # (head size 32): vLLM's CPU attention kernels take no head size below 32.
    "micro": (
        WorldConfig(
            entities=24, exposures=(0, 3, 30), num_cities=8, num_companies=6, skill_train_items=300,
            skill_test_items=30, misinformation_targets=2, misinformation_docs=2,
        ),
        PretrainConfig(
            layers=2, d_model=64, heads=2, d_mlp=256, vocab_size=600, batch_size=16, steps=1000,
            learning_rate=3e-3, warmup_steps=10,
        ),
    ),
}


def preset(name: str) -> tuple[WorldConfig, PretrainConfig]:
    if name not in PRESETS:
        raise BadInputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLMKIT_CACHE", Path.home() / ".cache" / "llmkit")).expanduser()


def world_dir(cache_dir: Path, world: WorldConfig) -> Path:
    return cache_dir / "worlds" / f"seed{world.seed}-{config_digest(world=world)}"


def model_dir(cache_dir: Path, world: WorldConfig, recipe: PretrainConfig) -> Path:
    return cache_dir / "models" / recipe_id(world, recipe)


def ensure_world(cache_dir: Path, world: WorldConfig) -> tuple[Path, bool]:
    """The cached world directory, built if missing; and whether it was built now."""
    path = world_dir(cache_dir, world)
    if (path / "world.json").is_file():
        return path, False
    write_world(build_world(world), path)
    return path, True


def ensure_model(
    cache_dir: Path,
    world: WorldConfig,
    recipe: PretrainConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, bool]:
    """The cached model pretrained on the cached world, trained if missing; and whether it was
    trained now. Outputs appear whole or not at all, so an existing directory is complete."""
    path = model_dir(cache_dir, world, recipe)
    if (path / "config.json").is_file():
        return path, False
    source, _ = ensure_world(cache_dir, world)
    pretrain(source, path, recipe, progress=progress)
    return path, True


def pretraining_corpus(model_path: str | Path, cache_dir: Path | None = None) -> Path | None:
    """The pretraining text of a world model (`pretraining.jsonl` of its world, rebuilt into the
    cache if missing), or None when `model_path` is not a model `llmkit world pretrain` wrote."""
    summary = Path(model_path).expanduser() / "llmkit_pretrain.json"
    if not summary.is_file():
        return None
    world = load_world_config(summary, "world", "pretrain the model again with `llmkit world pretrain`")
    path, _ = ensure_world(cache_dir or default_cache_dir(), world)
    return path / "pretraining.jsonl"
