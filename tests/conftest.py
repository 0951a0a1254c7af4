"""Session fixtures: tiny random-init models of every supported family, built locally once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path

import pytest

from llmkit.arch import ARCHITECTURES
from llmkit.models import load_model
from tiny import build_model_dir

FAMILIES = sorted(ARCHITECTURES)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {family: build_model_dir(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def llama_dir(model_dirs) -> Path:
    return model_dirs["llama"]


@pytest.fixture(scope="session")
def loaded_models(model_dirs):
    """family -> (model, tokenizer), loaded on CPU in float32."""
    return {family: load_model(str(path), device="cpu", dtype="float32") for family, path in model_dirs.items()}


PROMPTS = [
    "Alice was born in",
    "What is the capital of France? The capital of France is",
    "12 +",
    "one two three four five six seven",
    "Question: Where was Bob born? Answer:",
]


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> Path:
    """A cache holding the micro world and its pretrained micro model, built once per session
    (about a minute) and shared by every test that needs a model whose knowledge is known."""
    from llmkit.world.cache import ensure_model, preset

    cache = tmp_path_factory.mktemp("llmkit-cache")
    ensure_model(cache, *preset("micro"))
    return cache


@pytest.fixture(scope="session")
def micro_world(world_cache) -> Path:
    from llmkit.world.cache import preset, world_dir

    return world_dir(world_cache, preset("micro")[0])


@pytest.fixture(scope="session")
def micro_model(world_cache) -> Path:
    from llmkit.world.cache import model_dir, preset

    return model_dir(world_cache, *preset("micro"))
