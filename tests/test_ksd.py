"""Key Space Detection (llmkit/methods/ksd.py) on tiny models of every family: the gate refuses
every query it was fitted on and lets other text through, and the hypercube's scale is the largest
z-score, streamed or in one pass."""

import pytest
import torch

from conftest import FAMILIES
from conftest import SKILL_FORGET as FORGET
from conftest import SKILL_QUERIES as QUERIES
from conftest import SKILL_RETAIN as RETAIN
from llmkit import arch
from llmkit.generation import encode_prompts
from llmkit.methods.ksd import KSDConfig, fit_ksd, key_hypercube, key_vectors

pytestmark = pytest.mark.training  # fits KSD: the outcome depends on the CPU's kernels


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
