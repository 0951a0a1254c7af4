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
