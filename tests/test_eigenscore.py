"""EigenScore (llmkit/metrics/eigenscore.py) against an independent numpy computation, EES against
the exact log-det, and the answer embeddings it scores, which do not depend on batching."""

import numpy as np
import pytest
import torch

from llmkit.errors import BadInputError
from llmkit.generation import encode_prompts
from llmkit.metrics.eigenscore import (
    ALPHA,
    EESConfig,
    answer_embeddings,
    centered,
    choose_method,
    eigenscore,
    logdet_ees,
    logdet_exact,
    middle_layer,
)
from llmkit.models import load_model


def numpy_eigenscore(embeddings: np.ndarray, alpha: float = ALPHA) -> float:
    """INSIDE's formula written out: Z is d×K, J_d = I − 11ᵀ/d, (1/K)·log det(Zᵀ J_d Z + αI)."""
    z = embeddings.T
    d, k = z.shape
    j = np.eye(d) - np.ones((d, d)) / d
    sign, logdet = np.linalg.slogdet(z.T @ j @ z + alpha * np.eye(k))
    assert sign > 0
    return logdet / k


def low_rank_plus_noise(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    rank, signal, noise = rng.integers(1, 9), rng.uniform(0.5, 5), rng.uniform(0.05, 1.0)
    return (rng.normal(size=(k, rank)) * signal) @ rng.normal(size=(rank, d)) + noise * rng.normal(size=(k, d))


@pytest.mark.parametrize("k,d", [(10, 64), (10, 5), (2, 300), (40, 40)])
def test_exact_eigenscore_equals_numpy_slogdet(k, d):
    rng = np.random.default_rng(k * d)
    for _ in range(5):
        embeddings = rng.normal(size=(k, d)) * rng.uniform(0.01, 10)
        assert eigenscore(torch.from_numpy(embeddings)) == pytest.approx(numpy_eigenscore(embeddings), abs=1e-8)


def test_identical_answers_give_the_lowest_score():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.normal(size=(1, 32)), 10, axis=0)
    varied = rng.normal(size=(10, 32))
    # K answers alike: J_d centres each embedding over its features, so Σ = K·‖z_c‖²·(1/K)11ᵀ has
    # rank one, and K − 1 eigenvalues are α.
    z = same[0] - same[0].mean()
    expected = (9 * np.log(ALPHA) + np.log(10 * z @ z + ALPHA)) / 10
    assert eigenscore(torch.from_numpy(same)) == pytest.approx(expected, abs=1e-9)
    assert eigenscore(torch.from_numpy(varied)) > eigenscore(torch.from_numpy(same)) + 5


def test_ees_of_identical_answers_far_from_the_origin_stays_near_the_exact_score():
    # All ten answers alike and long (‖z‖ ≈ 110; a trained world model's reach 56): float32 Lanczos
    # then returns Ritz values below α, even negative ones, which once put log's interval below
    # zero. What is left is float32's own error at a spectrum 10⁷ wide: about 0.1 per answer.
    same = torch.randn(1, 192, generator=torch.Generator().manual_seed(0)).repeat(10, 1) * 8
    assert eigenscore(same, method="ees") == pytest.approx(eigenscore(same, method="exact"), abs=0.15)


def test_ees_tracks_the_exact_logdet_at_2048x10():
    rng = np.random.default_rng(0)
    exact, estimated = [], []
    for i in range(100):
        z = centered(torch.from_numpy(low_rank_plus_noise(rng, 10, 2048)))
        exact.append(logdet_exact(z))
        estimated.append(logdet_ees(z, config=EESConfig(seed=i)))
    exact, estimated = np.array(exact), np.array(estimated)
    assert np.corrcoef(exact, estimated)[0, 1] >= 0.99
    assert np.median(np.abs(estimated - exact) / np.abs(exact)) <= 0.02


def test_ees_with_random_probes_and_more_answers_than_features():
    """Hutchinson with Rademacher probes (N_z < the Gram side), on both Gram sides."""
    rng = np.random.default_rng(1)
    for k, d in ((300, 120), (120, 300)):
        z = centered(torch.from_numpy(low_rank_plus_noise(rng, k, d)))
        exact = logdet_exact(z)
        assert logdet_ees(z, config=EESConfig(probes=10)) == pytest.approx(exact, rel=0.02)
    embeddings = torch.from_numpy(low_rank_plus_noise(rng, 300, 120))
    assert eigenscore(embeddings, method="ees") == pytest.approx(eigenscore(embeddings), rel=0.02)


def test_ees_is_seeded():
    z = centered(torch.from_numpy(low_rank_plus_noise(np.random.default_rng(2), 200, 100)))
    config = EESConfig(probes=5, seed=3)
    assert logdet_ees(z, config=config) == logdet_ees(z, config=config)
    assert logdet_ees(z, config=config) != logdet_ees(z, config=EESConfig(probes=5, seed=4))


def test_auto_picks_exact_for_few_answers_and_ees_for_large_matrices():
    assert choose_method(10, 4096) == "exact"
    assert choose_method(5000, 20000) == "ees"
    embeddings = torch.from_numpy(np.random.default_rng(3).normal(size=(10, 64)))
    assert eigenscore(embeddings, method="auto") == eigenscore(embeddings, method="exact")


@pytest.mark.parametrize("shape", [(1, 16), (16,)])
def test_fewer_than_two_answers_is_bad_input(shape):
    with pytest.raises(BadInputError, match="K ≥ 2"):
        eigenscore(torch.zeros(shape))


def test_unknown_method_is_bad_input():
    with pytest.raises(BadInputError, match="exact, ees, auto"):
        eigenscore(torch.zeros(3, 4), method="svd")


def test_ees_of_answers_in_two_clusters_matches_the_exact_score():
    """Repeated answers make Σ low-rank: Lanczos closes its Krylov space after a few steps."""
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 64))
    embeddings = torch.from_numpy(np.stack([a] * 6 + [b] * 4))
    assert eigenscore(embeddings, method="ees") == pytest.approx(eigenscore(embeddings), rel=1e-3)
    same = torch.from_numpy(np.stack([a] * 10))
    assert eigenscore(same, method="ees") == pytest.approx(eigenscore(same), rel=1e-3)


@pytest.mark.parametrize("rank", [16, 40])
def test_ees_with_more_dominant_directions_than_lanczos_steps(rank):
    """The bounding Lanczos run grows until the dominant directions are deflated."""
    rng = np.random.default_rng(rank)
    embeddings = (rng.normal(size=(300, rank)) * 3) @ rng.normal(size=(rank, 800)) + 0.1 * rng.normal(size=(300, 800))
    z = centered(torch.from_numpy(embeddings))
    assert logdet_ees(z) == pytest.approx(logdet_exact(z), rel=0.02)


@pytest.mark.training
def test_answer_embeddings_do_not_depend_on_batching(llama_dir):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    prompts = ["The capital of", "A much longer prompt about the weather in the north", "Hi"]
    answers = [" Paris", " it rains", ""]
    batched = answer_embeddings(model, tokenizer, prompts, answers, batch_size=3)
    alone = torch.cat([answer_embeddings(model, tokenizer, [p], [a], batch_size=1) for p, a in zip(prompts, answers)])
    assert torch.allclose(batched, alone, atol=1e-5)
    # The last answer token's state at hidden_states[L // 2], read independently.
    ids = torch.tensor([encode_prompts(tokenizer, [prompts[0] + answers[0]])[0]])
    hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(batched[0], hidden[middle_layer(model) + 1][0, -1], atol=1e-5)
