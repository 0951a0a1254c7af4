"""`llmkit unlearn rocr` and `llmkit unlearn revert` from the command line."""

import json

import pytest
import safetensors.torch
import torch
from transformers import AutoModelForCausalLM, OPTConfig

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records
from llmkit.evals.ort import form_demo_entities
from llmkit.generation import HFBackend
from llmkit.metrics.probability import answer_probability
from llmkit.models import load_model
from tiny import CORPUS, build_tokenizer


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


def rocr(model_dir, out, corpus_file, cache, *extra):
    return llmkit(
        "unlearn",
        "rocr",
        "--model",
        model_dir,
        "--target",
        "Alice",
        "--redirect",
        "Bob",
        "--out",
        out,
        "--layers",
        "0,1",
        "--stats-corpus",
        corpus_file,
        "--stats-cache",
        cache,
        "--device",
        "cpu",
        *extra,
    )


def all_tensors(model_dir):
    model, _ = load_model(str(model_dir), device="cpu", dtype="float32")
    return model.state_dict()


def test_rocr_writes_the_edit_and_revert_restores_every_weight_bit_for_bit(llama_dir, corpus_file, tmp_path):
    edited, restored = tmp_path / "edited", tmp_path / "restored"
    result = rocr(llama_dir, edited, corpus_file, tmp_path / "stats", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == json.loads((edited / "rocr.json").read_text())
    assert record["requests"] == [{"target": "Alice", "redirect": "Bob"}]
    assert record["config"]["layers"] == [0, 1] and record["statistics"]["tokens"] > 50
    assert record["original_fingerprint"] != record["edited_fingerprint"]
    factors = safetensors.torch.load_file(edited / "rocr_edit.safetensors")
    assert {"original.layer0", "original.layer1", "edit0.layer0.row", "edit0.layer1.residual"} <= set(factors)

    original, changed = all_tensors(llama_dir), all_tensors(edited)
    differing = [name for name in original if not torch.equal(original[name], changed[name])]
    assert sorted(differing) == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]

    result = llmkit("unlearn", "revert", edited, "--out", restored)
    assert result.exit_code == 0, result.output
    back = all_tensors(restored)
    assert set(back) == set(original) and all(torch.equal(original[name], back[name]) for name in original)


def test_a_second_edit_reuses_the_cached_statistics(llama_dir, corpus_file, tmp_path):
    assert rocr(llama_dir, tmp_path / "a", corpus_file, tmp_path / "stats").exit_code == 0
    result = rocr(llama_dir, tmp_path / "b", corpus_file, tmp_path / "stats")
    assert result.exit_code == 0, result.output
    assert "key statistics for layers [0, 1] reused from the cache" in result.stderr


def test_revert_refuses_a_model_that_is_not_the_edited_one(llama_dir, corpus_file, tmp_path):
    edited = tmp_path / "edited"
    assert rocr(llama_dir, edited, corpus_file, tmp_path / "stats").exit_code == 0
    assert_bad_input(
        llmkit("unlearn", "revert", llama_dir, "--out", tmp_path / "x"),
        "is not a directory written by `llmkit unlearn rocr`",
        tmp_path / "x",
    )
    # Fine-tuned (here: nudged) after the edit: reverting would not give the original back.
    weights = safetensors.torch.load_file(edited / "model.safetensors")
    weights["model.layers.1.self_attn.q_proj.weight"] += 1e-3
    safetensors.torch.save_file(weights, edited / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "restored"
    assert_bad_input(llmkit("unlearn", "revert", edited, "--out", out), "does not hold the model ROCR wrote", out)
    (edited / "rocr.json").write_text('{"method": "rocr"}')
    assert_bad_input(llmkit("unlearn", "revert", edited, "--out", out), "rocr.json is damaged", out)


@pytest.mark.training
def test_rocr_on_the_world_model_lowers_the_targets_answers(
    micro_model, micro_world, world_cache, tmp_path, monkeypatch, bound
):
    """With the defaults (statistics from the world's own pretraining text), the edited model gives
    the target's true answers a lower probability and the redirect's a higher one."""
    monkeypatch.setenv("LLMKIT_CACHE", str(world_cache))
    entities = read_records(micro_world / "entities.jsonl")
    target = form_demo_entities(entities)[0]
    other = next(
        e
        for e in entities
        if e["exposure"] == target["exposure"]
        and e["id"] != target["id"]
        and e["birthplace"] != target["birthplace"]
        and e["spouse"] != target["name"]
    )
    out = tmp_path / "edited"
    result = llmkit(
        "unlearn",
        "rocr",
        "--model",
        micro_model,
        "--target",
        target["name"],
        "--redirect",
        other["name"],
        "--out",
        out,
        "--device",
        "cpu",
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["statistics"]["corpus"].endswith("pretraining.jsonl") and record["config"]["subject_token"] == "first"

    # The target's QA facts whose value differs from the redirect's: mean probability of each answer.
    probes = [
        p
        for p in read_records(micro_world / "probes.jsonl")
        if p["entity_id"] == target["id"]
        and p["form"] == "qa"
        and p["attribute"] != "spouse"
        and other[p["attribute"]] != p["answer"]
    ]

    def probs(model_dir):
        model, tokenizer = load_model(str(model_dir), device="cpu", dtype="float32")
        backend = HFBackend(model, tokenizer)
        prompts = [p["prompt"] for p in probes]
        return [
            sum(answer_probability(s.logprobs) for s in backend.score(prompts, [" " + str(v) for v in values]))
            / len(probes)
            for values in ([p["answer"] for p in probes], [other[p["attribute"]] for p in probes])
        ]

    (true_before, redirect_before), (true_after, redirect_after) = probs(micro_model), probs(out)
    bound("true_answer_kept", true_after / true_before, "<", 0.9)
    bound("redirect_gain", redirect_after / redirect_before, ">", 2)


@pytest.fixture
def opt_dir(tmp_path):
    config = OPTConfig(
        hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, vocab_size=409, word_embed_proj_dim=16
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "opt")
    build_tokenizer().save_pretrained(tmp_path / "opt")
    return tmp_path / "opt"


@pytest.fixture
def dropping_tokenizer_dir(llama_dir, tmp_path):
    """The tiny Llama with a tokenizer whose normalizer deletes '~', as some tokenizers drop
    characters they cannot represent."""
    import shutil

    path = tmp_path / "dropping"
    shutil.copytree(llama_dir, path)
    spec = json.loads((path / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "Replace", "pattern": {"String": "~"}, "content": ""}
    (path / "tokenizer.json").write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("same", ["--target", "Alice", "--redirect", "Alice"], "the target and the redirect are both 'Alice'"),
        ("empty", ["--target", " ", "--redirect", "Bob"], "the target is empty"),
        ("no tokens", ["--target", "~~", "--redirect", "Bob"], "turns the target '~~' into no tokens"),
        (
            "layers",
            ["--target", "Alice", "--redirect", "Bob", "--layers", "1,2"],
            "--layers 1,2: the model has layers 0..1",
        ),
        ("gap", ["--target", "Alice", "--redirect", "Bob", "--layers", "0,2"], "the model has layers 0..1"),
        ("empty corpus", ["--target", "Alice", "--redirect", "Bob", "--stats-corpus", "EMPTY"], "has no text"),
        ("no corpus", ["--target", "Alice", "--redirect", "Bob", "--stats-corpus", "MISSING.txt"], "does not exist"),
        ("family", ["--target", "Alice", "--redirect", "Bob"], "model family 'opt' is not supported"),
        ("preserve", ["--target", "Alice", "--redirect", "Bob", "--preserve", "rome"], "--preserve takes nullspace"),
        ("lambda", ["--target", "Alice", "--redirect", "Bob", "--lambda", "-1"], "--lambda must be at least 0"),
        (
            "redirects",
            ["--target", "Alice", "--target", "Carol", "--target", "Dan", "--redirect", "Bob", "--redirect", "Eve"],
            "one per target",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    case, args, message, dropping_tokenizer_dir, opt_dir, corpus_file, tmp_path
):
    model = opt_dir if case == "family" else dropping_tokenizer_dir
    (tmp_path / "empty.txt").write_text("\n\n")
    args = [
        str(tmp_path / "empty.txt") if a == "EMPTY" else str(tmp_path / a) if a == "MISSING.txt" else a for a in args
    ]
    if "--stats-corpus" not in args:
        args += ["--stats-corpus", str(corpus_file)]
    out = tmp_path / "edited"
    result = llmkit(
        "unlearn", "rocr", "--model", model, "--out", out, "--stats-cache", tmp_path / "stats", "--device", "cpu", *args
    )
    assert_bad_input(result, message, out)
