"""ROCR's edit on tiny models: the rank-one identity, the three preservation modes, every family."""

import os

import pytest
import torch

from conftest import FAMILIES
from llmkit import arch
from llmkit.batching import corpus_batches
from llmkit.errors import BadInputError
from llmkit.methods.rocr import (
    Request,
    ROCRConfig,
    StatisticsCorpus,
    default_layers,
    edit_tensors,
    key_second_moment,
    key_statistics,
    original_weights,
    preservation_matrix,
    redirect,
    revert,
    statistics_key,
)
from llmkit.methods.rocr import unlearn as rocr_unlearn
from llmkit.models import load_model, model_fingerprint
from tiny import CORPUS

pytestmark = pytest.mark.training  # fits ROCR edits: the outcome depends on the CPU's kernels

TARGET, REDIRECT = "Alice", "Bob"


def fitted(model_dir, preserve, layers=(0, 1), threshold=None):
    """A fresh tiny model, its key statistics over the tiny corpus, and ROCR's matrices."""
    model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    stats, tokens = key_second_moment(
        model, corpus_batches(tokenizer, CORPUS, 10_000, 8, 64), layers, tokenizer.pad_token_id
    )
    projectors = {}
    for layer in layers:
        # The tiny random model's keys have their own scale: put half the spectrum in the null space.
        cut = threshold if threshold is not None else torch.linalg.eigvalsh(stats[layer]).median().item()
        projectors[layer] = preservation_matrix(stats[layer], preserve, cut)
    return model, tokenizer, stats, projectors, tokens


def apply(model, tokenizer, projectors, layers=(0, 1), lam=1.0):
    before = {i: arch.mlp_out_weight(model, i).detach().clone() for i in layers}
    edits = redirect(model, tokenizer, TARGET, REDIRECT, ROCRConfig(layers=list(layers), lam=lam), projectors)
    after = {i: arch.mlp_out_weight(model, i).detach().clone() for i in layers}
    return edits, before, after


@pytest.mark.parametrize("preserve", ["nullspace", "covariance", "none"])
def test_each_layer_edit_is_the_closed_form_rank_one_update(preserve, llama_dir):
    model, tokenizer, stats, projectors, _ = fitted(llama_dir, preserve)
    edits, before, after = apply(model, tokenizer, projectors, lam=0.5)
    for edit in edits:
        delta, k, r = edit.delta, edit.key, edit.residual
        sigma = torch.linalg.svdvals(delta)
        assert sigma[1] <= 1e-6 * sigma[0]  # rank one
        P = {
            "nullspace": projectors[edit.layer],
            "covariance": torch.linalg.inv(stats[edit.layer]),
            "none": torch.eye(k.shape[0], dtype=torch.float64),
        }[preserve]
        s = k @ P @ k
        assert torch.allclose(delta @ k, r * s / (0.5 + s), rtol=1e-5, atol=1e-9 * r.norm().item())
        assert torch.allclose(delta, torch.outer(r, P @ k) / (0.5 + s), rtol=1e-5, atol=1e-12)
        assert torch.allclose(after[edit.layer] - before[edit.layer], delta.float(), atol=1e-5)


def test_nullspace_edit_leaves_corpus_keys_almost_untouched(llama_dir):
    model, tokenizer, stats, projectors, _ = fitted(llama_dir, "nullspace")
    edits, _, _ = apply(model, tokenizer, projectors)
    layer = edits[0].layer
    fresh, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    corpus_keys, _ = key_second_moment(
        fresh, corpus_batches(tokenizer, CORPUS[:6], 500, 6, 64), [layer], tokenizer.pad_token_id
    )
    # E[(ΔW k')²] over corpus keys k', against the edit's effect on its own key.
    on_corpus = torch.trace(edits[0].delta @ corpus_keys[layer] @ edits[0].delta.T).sqrt()
    on_target = (edits[0].delta @ edits[0].key).norm()
    print(f"corpus-key / target-key response: {on_corpus / on_target:.3g}")
    assert on_corpus / on_target < 0.2


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_edited_where_the_arch_map_says(family, model_dirs):
    model, tokenizer, _, projectors, _ = fitted(model_dirs[family], "none", layers=(0,))
    edits, before, after = apply(model, tokenizer, projectors, layers=(0,))
    assert not torch.equal(before[0], after[0])
    assert torch.allclose(after[0] - before[0], edits[0].delta.float(), atol=1e-5)


def test_a_second_target_accumulates_the_first_ones_keys(llama_dir):
    """Sequential targets, as AlphaEdit: ΔW₂ = r₂ k₂ᵀP ((k₂k₂ᵀ + C_prev)P + λI)⁻¹, C_prev = k₁k₁ᵀ."""
    model, tokenizer, _, projectors, _ = fitted(llama_dir, "nullspace", layers=(0,))
    c_prev: dict = {}
    config = ROCRConfig(layers=[0])
    [first] = redirect(model, tokenizer, TARGET, REDIRECT, config, projectors, c_prev)
    assert torch.allclose(c_prev[0], torch.outer(first.key, first.key))
    [second] = redirect(model, tokenizer, "Paris", REDIRECT, config, projectors, c_prev)
    P, k = projectors[0], second.key
    system = (torch.outer(k, k) + torch.outer(first.key, first.key)) @ P + torch.eye(k.shape[0], dtype=k.dtype)
    expected = torch.outer(second.residual, k) @ P @ torch.linalg.inv(system)
    assert torch.allclose(second.delta, expected, rtol=1e-6, atol=1e-10)


def test_default_layers_scale_the_papers_choice():
    assert default_layers(32) == [4, 5, 6] and default_layers(16) == [2, 3] and default_layers(12) == [1, 2]
    assert default_layers(4) == [0] and default_layers(1) == [0]


# --- key statistics: streamed, cached, refused from another model ------------------------------


def test_statistics_are_cached_and_a_second_edit_runs_no_forward_pass(llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    corpus = StatisticsCorpus("tiny", lambda: CORPUS, 10_000, batch_size=4, max_length=64)
    fingerprint = model_fingerprint(model)
    first, record = key_statistics(model, tokenizer, corpus, [0, 1], fingerprint, tmp_path)
    assert record["cached_layers"] == [] and record["tokens"] > 50

    def no_forward(*args):
        raise AssertionError("a forward pass ran although the statistics were cached")

    handle = model.register_forward_pre_hook(no_forward)
    try:
        second, record = key_statistics(model, tokenizer, corpus, [0, 1], fingerprint, tmp_path)
    finally:
        handle.remove()
    assert record["cached_layers"] == [0, 1]
    assert all(torch.equal(first[layer], second[layer]) for layer in (0, 1)) and record["tokens"] > 50
    # A different token budget is a different key: computed afresh.
    shorter = StatisticsCorpus("tiny", lambda: CORPUS, 40, batch_size=4, max_length=64)
    assert key_statistics(model, tokenizer, shorter, [0], fingerprint, tmp_path)[1]["cached_layers"] == []


def test_a_statistics_cache_from_another_model_is_refused(llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    corpus = StatisticsCorpus("tiny", lambda: CORPUS, 10_000, batch_size=4, max_length=64)
    _, record = key_statistics(model, tokenizer, corpus, [0], model_fingerprint(model), tmp_path)
    # The file lands where another model's statistics would be looked up.
    cached = tmp_path / f"{record['keys'][0]}.safetensors"
    other = statistics_key("0123456789abcdef", 0, record["corpus_digest"], corpus.max_tokens)
    cached.rename(tmp_path / f"{other}.safetensors")
    with pytest.raises(BadInputError, match="was computed on model .* not this model"):
        key_statistics(model, tokenizer, corpus, [0], "0123456789abcdef", tmp_path)


@pytest.mark.parametrize("size", [0, 100, 1000])
def test_a_damaged_statistics_cache_entry_is_recomputed(llama_dir, tmp_path, size):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    corpus = StatisticsCorpus("tiny", lambda: CORPUS, 10_000, batch_size=4, max_length=64)
    fingerprint = model_fingerprint(model)
    first, record = key_statistics(model, tokenizer, corpus, [0, 1], fingerprint, tmp_path)
    os.truncate(tmp_path / f"{record['keys'][1]}.safetensors", size)
    second, record = key_statistics(model, tokenizer, corpus, [0, 1], fingerprint, tmp_path)
    assert record["cached_layers"] == [0] and record["recomputed_damaged_layers"] == [1]
    assert all(torch.equal(first[layer], second[layer]) for layer in (0, 1))
    # The recomputed entry replaced the damaged one.
    assert key_statistics(model, tokenizer, corpus, [0, 1], fingerprint, tmp_path)[1]["cached_layers"] == [0, 1]


def test_statistics_stop_the_forward_pass_at_the_deepest_layer_asked_for(llama_dir):
    """Layer 0's statistics never run layer 1 or the LM head."""
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    ran = []
    handles = [
        module.register_forward_pre_hook(lambda *args, name=name: ran.append(name))
        for name, module in (("layer 1", arch.block_module(model, 1)), ("lm_head", model.lm_head))
    ]
    stats, tokens = key_second_moment(
        model, corpus_batches(tokenizer, CORPUS, 10_000, 4, 64), [0], tokenizer.pad_token_id
    )
    for handle in handles:
        handle.remove()
    assert ran == [] and tokens > 50 and stats[0].shape == (128, 128)


@pytest.mark.parametrize("family", FAMILIES)
def test_revert_puts_every_familys_weights_back_bit_for_bit(family, model_dirs):
    model, tokenizer, _, projectors, _ = fitted(model_dirs[family], "none", layers=(0,))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    originals = original_weights(model, [0])
    edits = redirect(model, tokenizer, TARGET, REDIRECT, ROCRConfig(layers=[0]), projectors)
    tensors = edit_tensors(originals, [edits])
    assert revert(model, tensors) == [0]
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())


def test_a_second_edit_with_the_same_statistics_reuses_the_cached_projector(llama_dir, tmp_path, monkeypatch):
    corpus = StatisticsCorpus("tiny", lambda: CORPUS, 10_000, batch_size=4, max_length=64)
    config = ROCRConfig(layers=[0, 1], nullspace_threshold=1e-2)
    requests = [Request(TARGET, REDIRECT)]
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    first, record = rocr_unlearn(model, tokenizer, requests, config, corpus, tmp_path)
    assert record["statistics"]["cached_projector_layers"] == []
    assert len(list(tmp_path.glob("projector-*-nullspace-0.01.safetensors"))) == 2

    def no_eigendecomposition(*args, **kwargs):
        raise AssertionError("an eigendecomposition ran although the projector was cached")

    monkeypatch.setattr(torch.linalg, "eigh", no_eigendecomposition)
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    second, record = rocr_unlearn(model, tokenizer, requests, config, corpus, tmp_path)
    assert record["statistics"]["cached_projector_layers"] == [0, 1]
    assert all(torch.allclose(a.delta, b.delta, rtol=1e-5, atol=1e-8) for a, b in zip(first[0], second[0]))
    # Another threshold is another projector: computed, so eigh runs (and here raises).
    with pytest.raises(AssertionError, match="eigendecomposition ran"):
        rocr_unlearn(model, tokenizer, requests, ROCRConfig(layers=[0], nullspace_threshold=1e-3), corpus, tmp_path)
