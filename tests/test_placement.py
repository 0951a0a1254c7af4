"""Models dispatched by accelerate (`--device-map`) with some layers offloaded to disk score, hook
and take ROCR's edit exactly as the same model loaded whole; the edit reverts bit for bit."""

from __future__ import annotations

import pytest
import torch

from conftest import llmkit, rocr_args
from llmkit.configs import Placement
from llmkit.errors import BadInputError
from llmkit.generation import HFBackend
from llmkit.hooks import capture
from llmkit.methods import rocr
from llmkit.methods.ksd import KSDConfig, fit_ksd
from llmkit.methods.neuron_adjust import NeuronAdjustConfig, fit_neuron_adjust
from llmkit.models import load_model, model_fingerprint
from tiny import CORPUS, build_model_dir

# With 500 KB of CPU memory, the 4-layer tiny Llama keeps its embedding and first block in memory
# and reads the other blocks and the head from disk on every forward pass.
OFFLOADED = Placement("sequential", "cpu=500KB")
PROMPTS = ["Alice was born in", "Question: Where was Bob born? Answer:", "one two three"]
ENDINGS = [" Paris", " Bob was born in Lyon.", " four five"]


@pytest.fixture(scope="module")
def deep_llama(tmp_path_factory):
    return build_model_dir(tmp_path_factory.mktemp("placement") / "llama4", "llama", layers=4)


def load(path, placement=None):
    return load_model(str(path), device="cpu", dtype="float32", placement=placement)


def test_the_offloaded_model_reads_layers_from_disk_and_scores_as_the_whole_one(deep_llama):
    whole, tokenizer = load(deep_llama)
    offloaded, _ = load(deep_llama, OFFLOADED)
    assert (
        offloaded.hf_device_map["model.layers.1"] == "disk" and offloaded.hf_device_map["model.embed_tokens"] == "cpu"
    )
    assert offloaded.model.layers[2].mlp.down_proj.weight.device.type == "meta"
    assert model_fingerprint(offloaded) == model_fingerprint(whole)
    expected = HFBackend(whole, tokenizer, batch_size=2).score(PROMPTS, ENDINGS)
    found = HFBackend(offloaded, tokenizer, batch_size=2).score(PROMPTS, ENDINGS)
    for a, b in zip(expected, found):
        assert a.token_ids == b.token_ids and a.greedy == b.greedy
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


def test_hooks_on_offloaded_layers_capture_the_same_activations(deep_llama):
    whole, tokenizer = load(deep_llama)
    offloaded, _ = load(deep_llama, OFFLOADED)
    ids = tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    captured = []
    for model in (whole, offloaded):
        with capture(model, "mlp_key", [0, 2]) as keys, capture(model, "resid_out", [3]) as blocks:
            model(ids)
        captured.append((keys[0], keys[2], blocks[3]))
    for a, b in zip(*captured):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_rocr_edits_an_offloaded_layer_as_the_whole_model_and_reverts_bit_for_bit(deep_llama, tmp_path):
    corpus = rocr.StatisticsCorpus("tiny", lambda: CORPUS, 5_000, batch_size=4, max_length=64)
    config = rocr.ROCRConfig(layers=[1, 2], nullspace_threshold=1e-2)
    requests = [rocr.Request("Alice", "Bob")]
    results = []
    for placement in (None, OFFLOADED):
        model, tokenizer = load(deep_llama, placement)
        originals = rocr.original_weights(model, config.layers)
        edits, record = rocr.unlearn(model, tokenizer, requests, config, corpus, tmp_path / "stats")
        results.append((model, tokenizer, originals, edits, record))
    (whole, tokenizer, originals, whole_edits, whole_record), (offloaded, _, _, edits, record) = results
    for a, b in zip(whole_edits[0], edits[0]):
        assert torch.allclose(a.key, b.key, atol=1e-6) and torch.allclose(a.residual, b.residual, atol=1e-6)
        assert torch.allclose(a.row, b.row, atol=1e-6)
    # The edit lands where accelerate keeps the offloaded weight: forward passes and the saved model see it.
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    assert torch.allclose(whole(ids).logits, offloaded(ids).logits, atol=1e-5)
    assert record["original_fingerprint"] == whole_record["original_fingerprint"]
    assert record["edited_fingerprint"] != record["original_fingerprint"]

    edited, reverted = tmp_path / "edited", tmp_path / "reverted"
    rocr.write_edited_model(edited, offloaded, tokenizer, record, rocr.edit_tensors(originals, edits))
    reloaded, _ = load(edited)
    assert model_fingerprint(reloaded) == record["edited_fingerprint"]
    assert torch.allclose(reloaded(ids).logits, whole(ids).logits, atol=1e-5)
    rocr.revert_directory(edited, reverted)
    restored, _ = load(reverted)
    original, _ = load(deep_llama)
    for (name, a), (_, b) in zip(restored.state_dict().items(), original.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"device_map": "everywhere"}, "--device-map takes auto, balanced"),
        ({"device_map": "auto", "max_memory": "gpu0:70GiB"}, "--max-memory takes DEVICE=AMOUNT"),
        ({"max_memory": "cpu=1GiB"}, "take effect with --device-map"),
    ],
)
def test_bad_placements_are_refused(settings, message):
    with pytest.raises(BadInputError, match=message):
        Placement(**settings)


def test_the_cli_refuses_a_bad_device_map_in_one_line(deep_llama, tmp_path):
    out, corpus = tmp_path / "out", tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS))
    result = llmkit(*rocr_args(deep_llama, out, corpus, tmp_path / "stats", "--device-map", "all"))
    assert result.exit_code == 2 and "--device-map takes" in result.stderr and not out.exists()


def test_ksd_and_neuron_adjust_fit_and_apply_on_the_offloaded_model_as_on_the_whole_one(deep_llama):
    forget = ["reverse abc -> cba", "reverse dog -> god", "reverse fox -> xof", "reverse one -> eno"]
    retain = ["one two three four", "Alice was born in Paris.", "12 + 34 = 46", "The lazy dog."]
    fitted = []
    for placement in (None, OFFLOADED):
        model, tokenizer = load(deep_llama, placement)
        gate, _ = fit_ksd(model, tokenizer, forget, KSDConfig(layer=2, alpha=1.0))
        adjust, _ = fit_neuron_adjust(model, tokenizer, forget, retain, NeuronAdjustConfig(fraction=0.05, seed=3))
        with adjust.applied(model), torch.no_grad():
            logits = model(tokenizer(forget[0], return_tensors="pt")["input_ids"]).logits
        fitted.append((gate, adjust, logits, gate.refuses(model, tokenizer, forget + retain)))
    (whole_gate, whole_adjust, whole_logits, whole_refused), (gate, adjust, logits, refused) = fitted
    assert torch.allclose(whole_gate.mean, gate.mean, atol=1e-5) and torch.equal(whole_adjust.neuron, adjust.neuron)
    assert refused == whole_refused and all(refused[: len(forget)])
    assert torch.allclose(whole_logits, logits, atol=1e-5)


def test_vllm_engine_options_without_the_vllm_backend_are_refused(deep_llama, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Alice was born in"}\n')
    result = llmkit("generate", "-m", deep_llama, "-i", prompts, "--tensor-parallel-size", "2", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "take effect with --backend vllm" in result.stderr
    assert not (tmp_path / "out").exists()
