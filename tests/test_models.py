import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from llmkit.errors import BadInputError
from llmkit.models import load_model, resolve_dtype, set_pad_token
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
    with pytest.raises(BadInputError, match="cannot load model 'no-such-org-xyz/tiny'"):
        load_model("no-such-org-xyz/tiny", device="cpu")
