import pytest
import torch

from conftest import FAMILIES, PROMPTS
from llmkit import arch, hooks
from llmkit.batching import pad_batch, position_ids
from llmkit.errors import BadInputError


def _encode(tokenizer, prompts, side):
    return pad_batch([tokenizer(p)["input_ids"] for p in prompts], tokenizer.pad_token_id, side)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("point", arch.POINTS)
def test_batched_capture_equals_per_prompt_capture(family, side, point, loaded_models):
    model, tokenizer = loaded_models[family]
    batch = _encode(tokenizer, PROMPTS, side)
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1, "prompts must differ in length"
    with torch.no_grad():
        with hooks.capture(model, point, [0, 1], position="all") as every:
            model(**batch)
        with hooks.capture(model, point, [0, 1], position="last") as last:
            model(**batch)
        for row, prompt in enumerate(PROMPTS):
            with hooks.capture(model, point, [0, 1]) as single:
                model(**_encode(tokenizer, [prompt], side))
            real = batch["attention_mask"][row].bool()
            for layer in (0, 1):
                assert (every[layer][row][real] - single[layer][0]).abs().max() <= 1e-5
                assert (last[layer][row] - single[layer][0, -1]).abs().max() <= 1e-5


def test_last_position_during_cached_generation_is_the_newest_token(loaded_models):
    model, tokenizer = loaded_models["llama"]
    batch = _encode(tokenizer, PROMPTS[:3], "left")
    batch.pop("position_ids")
    with hooks.capture(model, "resid_out", [1], position="last") as acts:
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    # The capture holds the last decoding step, which read the second new token: recompute it
    # from the prompts plus the first two new tokens in one uncached forward.
    mask = torch.cat([batch["attention_mask"], torch.ones(3, 2, dtype=torch.long)], 1)
    full = {"input_ids": out[:, :-1], "attention_mask": mask, "position_ids": position_ids(mask)}
    with hooks.capture(model, "resid_out", [1], position="last") as reference, torch.no_grad():
        model(**full)
    assert acts[1].shape == (3, model.config.hidden_size)
    assert torch.allclose(acts[1], reference[1], atol=1e-5)


@pytest.mark.parametrize("point", arch.POINTS)
def test_zeroing_a_unit_changes_the_output_and_exit_restores_the_model(point, loaded_models):
    model, tokenizer = loaded_models["llama"]
    batch = _encode(tokenizer, PROMPTS, "left")
    with torch.no_grad():
        before = model(**batch).logits

        def zero_unit(activation, layer):
            activation = activation.clone()
            activation[..., 5] = 0
            return activation

        with hooks.intervene(model, point, [0], zero_unit):
            during = model(**batch).logits
        after = model(**batch).logits
    assert (during - before).abs().max() > 1e-4
    assert torch.equal(after, before)


def test_hooks_are_removed_when_the_body_raises(loaded_models):
    model, tokenizer = loaded_models["gpt2"]
    batch = _encode(tokenizer, PROMPTS, "right")

    def installed_hooks():  # transformers installs hooks of its own; llmkit's must all go
        return [(name, list(m._forward_hooks), list(m._forward_pre_hooks)) for name, m in model.named_modules()]

    with torch.no_grad():
        before = model(**batch).logits
        hooks_before = installed_hooks()
        with pytest.raises(RuntimeError, match="boom"):
            with hooks.intervene(model, "resid_out", [0, 1], lambda a, layer: a * 0):
                with hooks.capture(model, "mlp_pre", [0, 1]):
                    raise RuntimeError("boom")
        after = model(**batch).logits
    assert torch.equal(after, before)
    assert installed_hooks() == hooks_before


def test_intervention_receives_the_layer_it_runs_at(loaded_models):
    model, tokenizer = loaded_models["gpt_neox"]
    seen = []
    with hooks.intervene(model, "mlp_key", [1, 0], lambda a, layer: seen.append(layer) or a), torch.no_grad():
        model(**tokenizer(["hello"], return_tensors="pt"))
    assert seen == [0, 1]  # in execution order


def test_unknown_point_and_position_are_clear_errors(loaded_models):
    model, _ = loaded_models["llama"]
    with pytest.raises(BadInputError, match="unknown hook point 'mlp_post'"):
        with hooks.capture(model, "mlp_post", [0]):
            pass
    with pytest.raises(BadInputError, match="unknown position 'first'"):
        with hooks.capture(model, "resid_out", [0], position="first"):
            pass
