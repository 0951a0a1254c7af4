"""`llmkit model inspect` from the command line: the map of a model's hook points, and a model
family or an adapter directory it cannot read."""

import json

import pytest
from transformers import AutoModelForCausalLM, OPTConfig

from conftest import assert_bad_input, llmkit
from tiny import build_tokenizer


def test_model_inspect_reports_the_map(model_dirs):
    result = llmkit("model", "inspect", "-m", model_dirs["gpt2"], "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["family"] == "gpt2" and report["num_layers"] == 2
    points = {p["point"]: p for p in report["points"]}
    assert points["mlp_key"]["module"] == "transformer.h.{i}.mlp.c_proj"
    assert points["mlp_out_weight"]["shape"] == [64, 128]
    assert points["resid_out"]["shape"] == ["batch", "seq", 64]
    table = llmkit("model", "inspect", "-m", model_dirs["llama"], "--device", "cpu")
    assert table.exit_code == 0 and "model.layers.{i}.mlp.gate_proj" in table.stdout


def test_model_inspect_on_an_unsupported_family(tmp_path):
    config = OPTConfig(
        hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, vocab_size=409, word_embed_proj_dim=16
    )
    model_dir = tmp_path / "opt"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    result = llmkit("model", "inspect", "-m", model_dir, "--device", "cpu")
    assert_bad_input(result, "model family 'opt' is not supported by llmkit's hooks; supported families: gemma")


@pytest.mark.training
@pytest.mark.parametrize(
    "config, message",
    [("{broken", "not valid JSON"), (json.dumps({"peft_type": "LORA"}), "names no base_model_name_or_path")],
    ids=["damaged", "no-base"],
)
def test_a_broken_adapter_directory_is_bad_input(config, message, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(config)
    assert_bad_input(llmkit("model", "inspect", "-m", adapter, "--device", "cpu"), message)
