"""Named world + recipe presets, the models llmkit ships for them, and a cache that builds each
world and model once.

Every preset's model ships with the package (`llmkit/world/models/<preset>/`, pretrained once by
`make world-models`), because the same recipe trains a different model on every CPU: PyTorch picks
its kernels by instruction set. The shipped model is used whenever its recorded world digest and
recipe match what would be trained now; otherwise, or when asked to rebuild, the model is pretrained
into the cache.

Cache layout (default ~/.cache/llmkit, or $LLMKIT_CACHE):
    worlds/seed<S>-<hash of the world config>/     a `world build` output
    models/<hash of world config and recipe>/       a `world pretrain` output
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from llmkit.configs import PretrainConfig, config_digest, recipe_id
from llmkit.errors import BadInputError
from llmkit.world.generator import WorldConfig, build_world, load_world_config, world_digest, write_world

PRESETS: dict[str, tuple[WorldConfig, PretrainConfig]] = {
    # The embedded default: a 1.6M-parameter GPT-NeoX that knows the facts it saw 10+ times.
    "default": (WorldConfig(), PretrainConfig()),
    # A one-minute version for tests and smoke runs: fewer entities, a smaller model. Two heads
    # (head size 32): vLLM's CPU attention kernels take no head size below 32.
    "micro": (
        WorldConfig(
            entities=24,
            exposures=(0, 3, 30),
            num_cities=8,
            num_companies=6,
            first_names=5,
            last_names=5,
            # Three demonstration entities in four: the 2-layer model extracts almost nothing from
            # biographies alone, and the tests need entities it knows in every form.
            demonstration_fraction=0.75,
            skill_train_items=300,
            skill_test_items=30,
            misinformation_targets=2,
            misinformation_docs=2,
        ),
        PretrainConfig(
            family="llama",
            layers=2,
            d_model=64,
            heads=2,
            d_mlp=256,
            vocab_size=600,
            batch_size=16,
            steps=1400,
            learning_rate=3e-3,
            warmup_steps=10,
        ),
    ),
}


SHIPPED_MODELS = Path(__file__).parent / "models"
ModelSource = Literal["shipped", "cached", "pretrained"]


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


def shipped_record(name: str) -> dict | None:
    """The pretraining record (`llmkit_pretrain.json`) of the model shipped for preset `name`."""
    path = SHIPPED_MODELS / name / "llmkit_pretrain.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def shipped_model(world_dir: Path, world: WorldConfig, recipe: PretrainConfig) -> Path | None:
    """The shipped model that `recipe` would train on the world in `world_dir`, if there is one:
    same configurations and the same world files (a changed generator makes another world)."""
    wanted = recipe_id(world, recipe)
    for name in PRESETS:
        record = shipped_record(name)
        if record and record["recipe_id"] == wanted and record["world_digest"] == world_digest(world_dir):
            return SHIPPED_MODELS / name
    return None


def ensure_model(
    cache_dir: Path,
    world: WorldConfig,
    recipe: PretrainConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    rebuild: bool = False,
) -> tuple[Path, ModelSource]:
    """The model `recipe` trains on `world`, and where it came from: the one shipped with llmkit,
    the cache, or pretrained now into the cache (always, when `rebuild`). Outputs appear whole or
    not at all, so an existing cache directory is complete."""
    source, _ = ensure_world(cache_dir, world)
    shipped = None if rebuild else shipped_model(source, world, recipe)
    if shipped is not None:
        return shipped, "shipped"
    path = model_dir(cache_dir, world, recipe)
    if not rebuild and (path / "config.json").is_file():
        return path, "cached"
    from llmkit.world.pretrain import pretrain

    pretrain(source, path, recipe, overwrite=rebuild, progress=progress)
    return path, "pretrained"


def pretraining_corpus(model_path: str | Path, cache_dir: Path | None = None) -> Path | None:
    """The pretraining text of a world model (`pretraining.jsonl` of its world: a synthetic world
    rebuilt into the cache if missing, a facts world where it was rendered), or None when
    `model_path` is not a model `llmkit world pretrain` wrote (or its facts world is gone)."""
    summary = Path(model_path).expanduser() / "llmkit_pretrain.json"
    if not summary.is_file():
        return None
    record = json.loads(summary.read_text(encoding="utf-8"))
    if record.get("world_kind") == "facts":
        corpus = Path(record["world_path"]) / "pretraining.jsonl"
        return corpus if corpus.is_file() else None
    world = load_world_config(summary, "world", "pretrain the model again with `llmkit world pretrain`")
    path, _ = ensure_world(cache_dir or default_cache_dir(), world)
    return path / "pretraining.jsonl"
