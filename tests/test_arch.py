import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, OPTConfig

from conftest import FAMILIES
from llmkit import arch, hooks
from llmkit.errors import BadInputError


@pytest.mark.parametrize("family", FAMILIES)
def test_every_point_resolves_with_the_right_shape(family, loaded_models):
    model, tokenizer = loaded_models[family]
    d, m = model.config.hidden_size, 128  # the sizes tiny.py builds
    layers = arch.decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers == 2

    batch = tokenizer(["Alice was born in Paris"], return_tensors="pt")
    seq = batch["input_ids"].shape[1]
    expected = {"mlp_pre": (1, seq, m), "mlp_key": (1, seq, m), "resid_out": (1, seq, d)}
    for point, shape in expected.items():
        with hooks.capture(model, point, [0, 1]) as acts:
            model(**batch)
        assert {layer: tuple(a.shape) for layer, a in acts.items()} == {0: shape, 1: shape}
    # resid_out of block 0 is the residual stream transformers reports after the first block.
    with hooks.capture(model, "resid_out", [0]) as acts:
        out = model(**batch, output_hidden_states=True)
    assert torch.allclose(acts[0], out.hidden_states[1])

    weight = arch.mlp_out_weight(model, 1)
    assert tuple(weight.shape) == (d, m)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_mlp_out_weight_is_a_view_that_maps_keys_to_the_residual(family, loaded_models):
    """W (d, m) applied to the captured key gives the MLP output projection, for Conv1D and Linear."""
    model, tokenizer = loaded_models[family]
    batch = tokenizer(["one two three"], return_tensors="pt")
    module = arch.mlp_out_module(model, 0)
    with hooks.capture(model, "mlp_key", [0]) as keys, torch.no_grad():
        outputs = []
        handle = module.register_forward_hook(lambda mod, args, out: outputs.append(out))
        model(**batch)
        handle.remove()
    weight = arch.mlp_out_weight(model, 0)
    bias = module.bias if module.bias is not None else 0
    assert torch.allclose(keys[0] @ weight.T + bias, outputs[0], atol=1e-5)
    assert weight.data_ptr() == module.weight.data_ptr()


def test_peft_wrapped_model_resolves_to_its_base(loaded_models):
    model, _ = loaded_models["llama"]
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    try:
        assert arch.decoder_layers(wrapped) is arch.decoder_layers(model)
    finally:
        wrapped.unload()


def test_unsupported_family_names_the_supported_ones():
    model = AutoModelForCausalLM.from_config(
        OPTConfig(
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            vocab_size=50,
            word_embed_proj_dim=16,
        )
    )
    with pytest.raises(BadInputError, match="'opt' is not supported.*gpt2.*llama"):
        arch.decoder_layers(model)


def test_layer_out_of_range_is_a_clear_error(loaded_models):
    model, _ = loaded_models["llama"]
    with pytest.raises(BadInputError, match="layer 7 does not exist; the model has layers 0..1"):
        arch.mlp_out_weight(model, 7)
