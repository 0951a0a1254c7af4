"""Session fixtures: tiny random-init models of every supported family, built locally once."""

from __future__ import annotations

import json
import operator
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


BOUND_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@pytest.fixture
def bound(record_property):
    """`bound(name, value, ">=", limit)` asserts a trained outcome against its stated bound and
    records both in the JUnit report, from which `make test-machines` tabulates every margin
    across CPU capabilities (scripts/margins.py)."""

    def check(name: str, value: float, op: str, limit: float) -> None:
        record_property(name, json.dumps({"value": value, "op": op, "bound": limit}))
        assert BOUND_OPS[op](value, limit), f"{name} = {value:.4g}, bound {op} {limit}"

    return check


PROMPTS = [
    "Alice was born in",
    "What is the capital of France? The capital of France is",
    "12 +",
    "one two three four five six seven",
    "Question: Where was Bob born? Answer:",
]


@pytest.fixture(scope="session")
def world_cache(tmp_path_factory) -> Path:
    """A cache holding the micro world, built once per session and shared by every test that
    needs a model whose knowledge is known."""
    from llmkit.world.cache import ensure_world, preset

    cache = tmp_path_factory.mktemp("llmkit-cache")
    ensure_world(cache, preset("micro")[0])
    return cache


@pytest.fixture(scope="session")
def micro_world(world_cache) -> Path:
    from llmkit.world.cache import preset, world_dir

    return world_dir(world_cache, preset("micro")[0])


@pytest.fixture(scope="session")
def micro_model(world_cache) -> Path:
    """The micro world's model as shipped with llmkit: the same weights on every machine, so
    what it knows, and where training takes it, does not depend on this CPU's kernels."""
    from llmkit.world.cache import ensure_model, preset

    path, source = ensure_model(world_cache, *preset("micro"))
    assert source == "shipped", "the shipped micro model does not match the micro world; run `make world-models`"
    return path
