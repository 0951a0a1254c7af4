"""Neuron Adjust and Key Space Detection on tiny models of every family: the statistics are what
they claim, the hooks change what they should and nothing else, the gate refuses what it bounds."""

import pytest
import torch

from conftest import FAMILIES
from llmkit import arch
from llmkit.batching import corpus_batches, pad_batch
from llmkit.errors import BadInputError
from llmkit.generation import GenerationParams, HFBackend, encode_prompts
from llmkit.hooks import capture
from llmkit.interventions import read_artifact, write_artifact
from llmkit.methods.intervened import IntervenedBackend, load_interventions, read_interventions
from llmkit.methods.ksd import KSDConfig, fit_ksd, key_hypercube, key_vectors, ksd_artifact
from llmkit.methods.neuron_adjust import (
    NeuronAdjust,
    NeuronAdjustConfig,
    fit_neuron_adjust,
    neuron_adjust_artifact,
    neuron_gaussians,
)
from llmkit.models import load_model

pytestmark = pytest.mark.training  # fits Neuron Adjust and KSD: the outcome depends on the CPU's kernels

FORGET = [
    f"Reverse: {' '.join(w)} => {' '.join(reversed(w))}"
    for w in ("abc", "dcba", "fed", "hgij", "bad", "cafe", "jig", "aced")
]
RETAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "Alice was born in Paris and works as a painter.",
    "What is the capital of France? The capital of France is Paris.",
    "one two three four five six seven eight nine ten",
]
QUERIES = [text.split("=>")[0] + "=>" for text in FORGET]


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


@pytest.mark.parametrize("family", FAMILIES)
def test_ksd_gate_refuses_every_fitted_query_and_lets_other_text_through(loaded_models, family):
    model, tokenizer = loaded_models[family]
    gate, record = fit_ksd(model, tokenizer, QUERIES, KSDConfig(layer=-1, alpha=1.0, batch_size=3))
    assert gate.layer == len(arch.decoder_layers(model)) - 1 and record["vectors"] == len(QUERIES)
    # k is the tight fit: at α = 1 every forget query lies inside, however it is batched (its key
    # then differs by float rounding), and a hair smaller one is out.
    for batch_size in (1, 2, 4, 8):
        assert all(gate.refuses(model, tokenizer, QUERIES, batch_size=batch_size)), batch_size
    assert not any(gate.refuses(model, tokenizer, RETAIN))
    tighter, _ = fit_ksd(model, tokenizer, QUERIES, KSDConfig(alpha=0.999))
    assert not all(tighter.refuses(model, tokenizer, QUERIES))


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


def test_hypercube_scale_is_the_largest_z_score_and_streaming_matches_one_pass(loaded_models):
    model, tokenizer = loaded_models["qwen2"]
    encoded = encode_prompts(tokenizer, FORGET + RETAIN)
    mean, std, k, count = key_hypercube(lambda: key_vectors(model, encoded, 1, "all", tokenizer.pad_token_id, 2))
    everything = torch.cat(
        [vectors for _, vectors in key_vectors(model, encoded, 1, "all", tokenizer.pad_token_id, 64)]
    )
    assert count == everything.shape[0] == sum(map(len, encoded))
    torch.testing.assert_close(mean, everything.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(std, everything.std(0), rtol=1e-4, atol=1e-5)
    assert k == pytest.approx(float(((everything - everything.mean(0)).abs() / everything.std(0)).max()), rel=1e-4)


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


def test_artifacts_round_trip_and_refuse_another_model(loaded_models, tmp_path):
    model, tokenizer = loaded_models["llama"]
    config = NeuronAdjustConfig(fraction=0.1)
    adjust, record = fit_neuron_adjust(model, tokenizer, FORGET, RETAIN, config)
    write_artifact(tmp_path / "na", neuron_adjust_artifact(model, adjust, config, record))
    gate, record = fit_ksd(model, tokenizer, QUERIES, KSDConfig(refusal="No."))
    write_artifact(tmp_path / "ksd", ksd_artifact(model, gate, KSDConfig(refusal="No."), record))

    [loaded], [loaded_gate] = load_interventions(read_interventions([tmp_path / "na", tmp_path / "ksd"]), model)
    for name in NeuronAdjust.TENSORS:
        assert torch.equal(getattr(loaded, name), getattr(adjust, name))
    assert loaded_gate.refusal == "No." and torch.equal(loaded_gate.half_width, gate.half_width)
    assert read_artifact(tmp_path / "na").params["fraction"] == 0.1

    other, _ = loaded_models["mistral"]
    with pytest.raises(BadInputError, match="fitted on another model"):
        load_interventions(read_interventions([tmp_path / "ksd"]), other)
    with pytest.raises(BadInputError, match="not an llmkit intervention artifact"):
        read_interventions([tmp_path])
    # Neuron Adjust on vLLM fails while reading, before any engine loads.
    with pytest.raises(BadInputError, match="use --backend hf"):
        read_interventions([tmp_path / "ksd", tmp_path / "na"], backend="vllm")
    # An artifact missing a tensor its method needs is damaged, not a KeyError.
    artifact = read_artifact(tmp_path / "ksd")
    del artifact.tensors["half_width"]
    write_artifact(tmp_path / "broken", artifact)
    with pytest.raises(BadInputError, match="damaged"):
        load_interventions(read_interventions([tmp_path / "broken"]), model)


def test_gated_backend_refuses_generation_and_scores_refused_prompts_at_zero(loaded_models):
    model, tokenizer = loaded_models["llama"]
    gate, _ = fit_ksd(model, tokenizer, QUERIES, KSDConfig(refusal="I cannot help with that."))
    backend = IntervenedBackend(HFBackend(model, tokenizer), model, [], [gate])
    prompts = [QUERIES[0], RETAIN[1], QUERIES[3]]
    texts = [g.texts[0] for g in backend.generate(prompts, GenerationParams(max_new_tokens=5))]
    plain = HFBackend(model, tokenizer).generate([RETAIN[1]], GenerationParams(max_new_tokens=5))[0].texts[0]
    assert texts == ["I cannot help with that.", plain, "I cannot help with that."]
    scores = backend.score(prompts, [" a b c", " Paris", " x"])
    assert scores[0].logprobs and all(lp == float("-inf") for lp in scores[0].logprobs) and not scores[0].greedy
    assert scores[1].logprobs == HFBackend(model, tokenizer).score([RETAIN[1]], [" Paris"])[0].logprobs


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
