"""ROCR's edit on tiny models: the rank-one identity, the three preservation modes, every family."""

import pytest
import torch

from conftest import FAMILIES
from llmkit import arch
from llmkit.methods.rocr import ROCRConfig, corpus_batches, default_layers, key_second_moment, preservation_matrix, redirect
from llmkit.models import load_model
from tiny import CORPUS

TARGET, REDIRECT = "Alice", "Bob"


def fitted(model_dir, preserve, layers=(0, 1), threshold=None):
    """A fresh tiny model, its key statistics over the tiny corpus, and ROCR's matrices."""
    model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
    stats, tokens = key_second_moment(model, corpus_batches(tokenizer, CORPUS, 10_000, 8, 64), layers, tokenizer.pad_token_id)
    projectors = {}
    for layer in layers:
        # The tiny random model's keys have their own scale: put half the spectrum in the null space.
        cut = threshold if threshold is not None else torch.linalg.eigvalsh(stats[layer]).median().item()
        projectors[layer] = preservation_matrix(stats[layer], preserve, cut)
    return model, tokenizer, stats, projectors, tokens


def apply(model, tokenizer, projectors, layers=(0, 1), lam=1.0):
    before = {l: arch.mlp_out_weight(model, l).detach().clone() for l in layers}
    edits = redirect(model, tokenizer, TARGET, REDIRECT, ROCRConfig(layers=list(layers), lam=lam), projectors)
    after = {l: arch.mlp_out_weight(model, l).detach().clone() for l in layers}
    return edits, before, after


@pytest.mark.parametrize("preserve", ["nullspace", "covariance", "none"])
def test_each_layer_edit_is_the_closed_form_rank_one_update(preserve, llama_dir):
    model, tokenizer, stats, projectors, _ = fitted(llama_dir, preserve)
    edits, before, after = apply(model, tokenizer, projectors, lam=0.5)
    for edit in edits:
        delta, k, r = edit.delta, edit.key, edit.residual
        sigma = torch.linalg.svdvals(delta)
        assert sigma[1] <= 1e-6 * sigma[0]  # rank one
        P = {"nullspace": projectors[edit.layer], "covariance": torch.linalg.inv(stats[edit.layer]),
             "none": torch.eye(k.shape[0], dtype=torch.float64)}[preserve]
        s = k @ P @ k
        assert torch.allclose(delta @ k, r * s / (0.5 + s), rtol=1e-5, atol=1e-9 * r.norm().item())
        assert torch.allclose(delta, torch.outer(r, P @ k) / (0.5 + s), rtol=1e-5, atol=1e-12)
        assert torch.allclose(after[edit.layer] - before[edit.layer], delta.float(), atol=1e-5)


def test_nullspace_edit_leaves_corpus_keys_almost_untouched(llama_dir):
    model, tokenizer, stats, projectors, _ = fitted(llama_dir, "nullspace")
    edits, _, _ = apply(model, tokenizer, projectors)
    layer = edits[0].layer
    fresh, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    corpus_keys, _ = key_second_moment(fresh, corpus_batches(tokenizer, CORPUS[:6], 500, 6, 64), [layer], tokenizer.pad_token_id)
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
    assert default_layers(32) == [4, 5, 6] and default_layers(16) == [2, 3, 4] and default_layers(4) == [0, 1, 2]
    assert default_layers(2) == [0, 1]
