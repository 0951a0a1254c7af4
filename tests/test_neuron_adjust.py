"""Neuron Adjust (llmkit/methods/neuron_adjust.py) on tiny models of every family: the statistics
are what they claim, the hooks move the selected neurons and nothing else, what it generates does
not depend on batching, and bad configurations (KSD's among them) are refused."""

import pytest
import torch

from conftest import FAMILIES
from conftest import SKILL_FORGET as FORGET
from conftest import SKILL_QUERIES as QUERIES
from conftest import SKILL_RETAIN as RETAIN
from llmkit import arch
from llmkit.batching import corpus_batches, pad_batch
from llmkit.errors import BadInputError
from llmkit.generation import GenerationParams, HFBackend, encode_prompts
from llmkit.hooks import capture
from llmkit.methods.intervened import IntervenedBackend
from llmkit.methods.ksd import KSDConfig, fit_ksd
from llmkit.methods.neuron_adjust import NeuronAdjustConfig, fit_neuron_adjust, neuron_gaussians
from llmkit.models import load_model

pytestmark = pytest.mark.training  # fits Neuron Adjust: the outcome depends on the CPU's kernels


def logits_of(model, tokenizer, texts):
    batch = pad_batch(encode_prompts(tokenizer, texts), tokenizer.pad_token_id, "right")
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_adjust_fits_and_moves_only_the_selected_neurons(loaded_models, family):
    model, tokenizer = loaded_models[family]
    config = NeuronAdjustConfig(fraction=0.05, seed=3, batch_size=3)
    adjust, record = fit_neuron_adjust(model, tokenizer, FORGET, RETAIN, config)
    num_layers, width = len(arch.decoder_layers(model)), arch.summarize(model).d_mlp
    assert record["neurons"] == len(adjust.layer) == round(0.05 * num_layers * width + 0.5)
    assert sum(record["neurons_per_layer"].values()) == record["neurons"]

    layer = int(adjust.layer[0])
    selected = adjust.neuron[adjust.layer == layer]
    with capture(model, "mlp_pre", [layer]) as plain, torch.no_grad():
        model(**pad_batch(encode_prompts(tokenizer, FORGET), tokenizer.pad_token_id, "right"))
    with adjust.applied(model), capture(model, "mlp_pre", [layer]) as adjusted, torch.no_grad():
        model(**pad_batch(encode_prompts(tokenizer, FORGET), tokenizer.pad_token_id, "right"))
    # The capture hook runs after the adjusting hook; capture holds what the next module reads.
    others = torch.ones(width, dtype=torch.bool)
    others[selected] = False
    assert torch.equal(plain[layer][..., others], adjusted[layer][..., others])
    assert not torch.equal(plain[layer][..., selected], adjusted[layer][..., selected])
    # Leaving the context removes the hooks: the model is exactly as before.
    before = logits_of(model, tokenizer, FORGET)
    with adjust.applied(model):
        during = logits_of(model, tokenizer, FORGET)
    assert not torch.equal(before, during)
    assert torch.equal(before, logits_of(model, tokenizer, FORGET))


def test_neuron_statistics_are_the_mean_and_std_over_every_real_token(loaded_models):
    model, tokenizer = loaded_models["llama"]
    texts = FORGET + RETAIN
    stats = neuron_gaussians(model, corpus_batches(tokenizer, texts, 10**9, 3, 64), tokenizer.pad_token_id)
    batch = pad_batch(encode_prompts(tokenizer, texts), tokenizer.pad_token_id, "right")
    layers = list(range(len(arch.decoder_layers(model))))
    with capture(model, "mlp_pre", layers) as acts, torch.no_grad():
        model(**batch)
    real = batch["attention_mask"].bool()
    assert stats.tokens == int(real.sum())
    for layer in layers:
        values = acts[layer][real].double()
        torch.testing.assert_close(stats.mean[layer], values.mean(0).float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stats.std[layer], values.std(0, unbiased=False).float(), rtol=1e-4, atol=1e-6)


def test_neuron_adjust_is_deterministic_batched_or_one_at_a_time(micro_model):
    model, tokenizer = load_model(str(micro_model), device="cpu", dtype="float32")
    world_texts = ["Question: Where was", "Reverse: a b c =>", "Translate to", "Compute: 1 + 2 ="]
    adjust, _ = fit_neuron_adjust(
        model, tokenizer, world_texts[1:2] * 3, world_texts[::2], NeuronAdjustConfig(fraction=0.2)
    )
    prompts = [
        "Reverse: a b c d =>",
        "Question: Where was",
        "Reverse: j i h =>",
        "Compute: 12 + 7 =",
        "Reverse: c a =>",
    ]
    params = GenerationParams(max_new_tokens=12)

    def run(batch_size, seed):
        adjust.seed = seed
        backend = IntervenedBackend(HFBackend(model, tokenizer, batch_size=batch_size), model, [adjust], [])
        return [g.texts for g in backend.generate(prompts, params)]

    plain = [g.texts for g in HFBackend(model, tokenizer).generate(prompts, params)]
    batched = run("auto", seed=0)
    assert batched == run(1, seed=0) == run(2, seed=0)
    assert batched != plain  # the intervention changed what the model says


def test_bad_configs_are_refused(loaded_models):
    model, tokenizer = loaded_models["llama"]
    for fraction in (0, -0.1, 1.5):
        with pytest.raises(BadInputError, match=r"\(0, 1\]"):
            NeuronAdjustConfig(fraction=fraction)
    with pytest.raises(BadInputError, match="does not exist"):
        fit_ksd(model, tokenizer, QUERIES, KSDConfig(layer=7))
    with pytest.raises(BadInputError, match="at least 2"):
        fit_ksd(model, tokenizer, QUERIES[:1], KSDConfig())
    with pytest.raises(BadInputError, match="empty"):
        fit_neuron_adjust(model, tokenizer, FORGET, [], NeuronAdjustConfig())
