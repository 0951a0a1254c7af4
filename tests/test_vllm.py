"""HF and vLLM must agree; runs only where vllm is importable (a GPU machine with the extra)."""

import pytest

pytest.importorskip("vllm")

from llmkit.generation import GenerationParams, load_backend
from conftest import PROMPTS
from tiny import build_model_dir

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    # head_dim 64: the attention kernels vLLM ships do not all take the smallest head sizes.
    return build_model_dir(tmp_path_factory.mktemp("vllm") / "llama", "llama", d_model=256, d_mlp=512)


def test_hf_and_vllm_greedy_outputs_and_scores_agree(vllm_model_dir):
    params = GenerationParams(max_new_tokens=16)
    hf = load_backend("hf", str(vllm_model_dir), dtype="float32")
    vllm = load_backend("vllm", str(vllm_model_dir), dtype="float32")
    assert [g.texts for g in vllm.generate(PROMPTS, params)] == [g.texts for g in hf.generate(PROMPTS, params)]
    continuations = [" Paris"] * len(PROMPTS)
    for a, b in zip(hf.score(PROMPTS, continuations), vllm.score(PROMPTS, continuations)):
        assert a.token_ids == b.token_ids
        assert a.total == pytest.approx(b.total, abs=1e-2)
