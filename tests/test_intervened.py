"""The intervened backend (llmkit/methods/intervened.py): Neuron Adjust and KSD artifacts round
trip and refuse another model, and a KSD gate refuses generation and scores refused prompts at zero."""

import pytest
import torch

from conftest import SKILL_FORGET as FORGET
from conftest import SKILL_QUERIES as QUERIES
from conftest import SKILL_RETAIN as RETAIN
from llmkit.errors import BadInputError
from llmkit.generation import GenerationParams, HFBackend
from llmkit.interventions import read_artifact, write_artifact
from llmkit.methods.intervened import IntervenedBackend, load_interventions, read_interventions
from llmkit.methods.ksd import KSDConfig, fit_ksd, ksd_artifact
from llmkit.methods.neuron_adjust import NeuronAdjust, NeuronAdjustConfig, fit_neuron_adjust, neuron_adjust_artifact

pytestmark = pytest.mark.training  # fits Neuron Adjust and KSD: the outcome depends on the CPU's kernels


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
