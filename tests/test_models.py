import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from llmkit.errors import BadInputError
from llmkit.models import check_context, context_length, load_model, resolve_dtype, set_pad_token
from tiny import build_tokenizer, tiny_config


def test_missing_pad_token_becomes_eos(llama_dir):
    model, tokenizer = load_model(str(llama_dir), device="cpu")
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.eos_token_id
    assert not model.training


def test_tokenizer_without_eos_gets_a_new_pad_token():
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer().backend_tokenizer)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer)))
    set_pad_token(model, tokenizer)
    assert tokenizer.pad_token == "<pad>"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == tokenizer.pad_token_id + 1


def test_dtype_is_applied(llama_dir):
    model, _ = load_model(str(llama_dir), device="cpu", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_a_file_is_not_a_model(llama_dir):
    with pytest.raises(BadInputError, match="is a file; --model takes a model directory or a hub id"):
        load_model(str(llama_dir / "config.json"))


def test_unreachable_hub_id_is_one_clear_error():
    with pytest.raises(
        BadInputError, match="model no-such-org-xyz/tiny is not a local path .*cannot come from the hub"
    ):
        load_model("no-such-org-xyz/tiny", device="cpu")


def test_unreachable_hub_endpoint_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port
    with pytest.raises(BadInputError, match=r"hub \(http://127.0.0.1:9\) cannot be reached"):
        load_model("no-such-org-xyz/tiny", device="cpu")


def _copy_with_weights(source, target, edit):
    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    edit(weights)
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_a_checkpoint_missing_a_weight_is_refused(llama_dir, tmp_path):
    copy = _copy_with_weights(llama_dir, tmp_path / "copy", lambda w: w.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(BadInputError, match=r"misses weights \(model.layers.1.mlp.down_proj.weight\)"):
        load_model(str(copy), device="cpu")


def test_a_checkpoint_with_an_unexpected_weight_is_refused(llama_dir, tmp_path):
    copy = _copy_with_weights(llama_dir, tmp_path / "copy", lambda w: w.update(extra=torch.zeros(2)))
    with pytest.raises(BadInputError, match=r"has unexpected weights \(extra\)"):
        load_model(str(copy), device="cpu")


@pytest.mark.parametrize("size", [1000, 100_000])
def test_a_truncated_weights_file_is_refused(llama_dir, tmp_path, size):
    copy = tmp_path / "copy"
    shutil.copytree(llama_dir, copy)
    os.truncate(copy / "model.safetensors", size)
    with pytest.raises(BadInputError, match="a weights file is damaged or incomplete"):
        load_model(str(copy), device="cpu")


def test_input_beyond_the_context_is_refused(tmp_path):
    tokenizer = build_tokenizer()
    config = tiny_config("gpt2", len(tokenizer))
    config.n_positions = 64
    model = AutoModelForCausalLM.from_config(config)
    assert context_length(model) == 64
    check_context(context_length(model), [40], 24)
    with pytest.raises(BadInputError, match=r"the longest prompt has 40 tokens .* context of 64 tokens.*at most 24"):
        check_context(context_length(model), [40, 3], 25)
    with pytest.raises(BadInputError, match="the longest input has 65 tokens, beyond the model's context of 64"):
        check_context(context_length(model), [65])
