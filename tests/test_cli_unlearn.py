"""`llmkit unlearn` from the command line: ROCR and `revert`; the gradient methods (ga, graddiff,
npo, ...) with their outputs, adapters evaluated by `eval ort`, checkpoints of another run, torchrun
and bad inputs; KSD and Neuron Adjust removing one skill of the micro world model; and hostile
input: forget sets and statistics corpora that are not UTF-8, empty queries and texts, an output
name too long for its checkpoints, a NaN learning rate, damaged ROCR files and caches, concurrent
runs on one output."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, OPTConfig

from conftest import (
    BINARY,
    REFUSAL,
    TEXTS,
    assert_bad_input,
    leftovers,
    llmkit,
    ok,
    one_wins,
    refused,
    rocr_args,
    start_llmkit,
    write_jsonl,
)
from llmkit.data import read_records
from llmkit.evals.ort import biography_only_entities, redirect_entity
from llmkit.generation import HFBackend
from llmkit.metrics.probability import answer_probability
from llmkit.models import load_model
from tiny import CORPUS, build_tokenizer

# --- ROCR and revert --------------------------------------------------------------------------


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


def rocr(model_dir, out, corpus_file, cache, *extra):
    return llmkit(*rocr_args(model_dir, out, corpus_file, cache, *extra))


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


@pytest.fixture(scope="module")
def default_world(world_cache) -> tuple[Path, Path]:
    """The default world and the model llmkit ships for it."""
    from llmkit.world.cache import ensure_model, ensure_world, preset

    world, recipe = preset("default")
    path, source = ensure_model(world_cache, world, recipe)
    assert source == "shipped", "the shipped default model does not match the default world; run `make world-models`"
    return ensure_world(world_cache, world)[0], path


@pytest.mark.training
def test_rocr_on_the_world_model_redirects_a_biography_only_target(
    default_world, world_cache, monkeypatch, tmp_path, bound
):
    """With the CLI's defaults (the paper's settings, a world model's λ, statistics from the
    world's own pretraining text), the default model's answers about an entity it knows only from
    biographies lose their probability to the redirect's values (docs/unlearning.md: 79% QA drop
    over 5 such targets)."""
    monkeypatch.setenv("LLMKIT_CACHE", str(world_cache))
    world_dir, model_dir = default_world
    entities = read_records(world_dir / "entities.jsonl")
    target = biography_only_entities(entities)[0]
    redirect_to = redirect_entity(entities, target)
    out = tmp_path / "edited"
    result = llmkit(
        "unlearn", "rocr", "-m", model_dir, "-t", target["name"], "-r", redirect_to["name"], "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["statistics"]["corpus"].endswith("pretraining.jsonl")
    assert (record["config"]["subject_token"], record["config"]["lam"]) == ("last", 0.1)

    # The target's QA facts whose value differs from the redirect's: mean probability of each answer.
    probes = [
        p
        for p in read_records(world_dir / "probes.jsonl")
        if p["entity_id"] == target["id"]
        and p["form"] == "qa"
        and p["template"] == "trained"
        and p["attribute"] != "spouse"
        and redirect_to[p["attribute"]] != p["answer"]
    ]

    def probs(path):
        backend = HFBackend(*load_model(str(path), device="cpu", dtype="float32"))
        prompts = [p["prompt"] for p in probes]
        return [
            sum(answer_probability(s.logprobs) for s in backend.score(prompts, [" " + str(v) for v in values]))
            / len(probes)
            for values in ([p["answer"] for p in probes], [redirect_to[p["attribute"]] for p in probes])
        ]

    (true_before, redirect_before), (true_after, redirect_after) = probs(model_dir), probs(out)
    bound("true_answer_kept", true_after / true_before, "<", 0.5)
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


# --- the gradient methods: ga, graddiff, npo, simnpo, kl, rt, dpo, task-vector ----------------


QUESTIONS = [
    {"prompt": "Question: Where was Bob born? Answer:", "answer": "Lyon"},
    {"prompt": "Alice was born in", "answer": "Paris"},
    {"prompt": "What is the capital of France?", "answer": "Paris"},
    {"prompt": "12 + 34 =", "answer": "46"},
]


@pytest.fixture
def forget_file(tmp_path):
    return write_jsonl(tmp_path / "forget.jsonl", QUESTIONS)


@pytest.mark.training
def test_full_model_run_writes_a_model_and_its_record(llama_dir, forget_file, tmp_path):
    out = tmp_path / "ga"
    result = llmkit(
        "unlearn",
        "ga",
        "--model",
        llama_dir,
        "--forget",
        forget_file,
        "--out",
        out,
        "--max-steps",
        3,
        "--batch-size",
        2,
        "--lr",
        1e-3,
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == json.loads((out / "unlearn.json").read_text())
    assert record["steps"] == 3 and record["method"] == "ga" and record["forget_records"] == 4
    assert record["final_loss"] < record["first_loss"]  # ascent: the NLL grew
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (tmp_path / "ga.checkpoints").exists()
    original = load_file(llama_dir / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert any(not torch.equal(original[k], trained[k]) for k in original)


@pytest.mark.training
def test_lora_writes_an_adapter_that_eval_ort_loads(micro_model, micro_world, world_forget_set, tmp_path, bound):
    target, data = world_forget_set
    adapter = tmp_path / "npo-lora"
    result = llmkit(
        "unlearn",
        "npo",
        "--model",
        micro_model,
        "--forget",
        data / "forget.jsonl",
        "--retain",
        data / "retain.jsonl",
        "--out",
        adapter,
        "--lora",
        "--lora-rank",
        4,
        "--max-steps",
        20,
        "--batch-size",
        5,
        "--lr",
        3e-3,
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    weights = load_file(adapter / "adapter_model.safetensors")
    assert all("lora_A" in k or "lora_B" in k for k in weights)
    assert record["trainable_parameters"] == sum(t.numel() for t in weights.values())

    base_run, adapter_run = tmp_path / "ort-base", tmp_path / "ort-adapter"
    assert (
        llmkit(
            "eval", "ort", "--model", micro_model, "--probes", micro_world, "--targets", target, "-o", base_run
        ).exit_code
        == 0
    )
    result = llmkit(
        "eval",
        "ort",
        "--model",
        adapter,
        "--probes",
        micro_world,
        "--targets",
        target,
        "-o",
        adapter_run,
        "--baseline",
        base_run,
        "--json",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    bound("forget_qa_drop", metrics["drop"]["forget"]["qa"], ">", 0.5)


@pytest.mark.training
@pytest.mark.parametrize(
    "recorded, message", [(json.dumps({"method": "npo"}), "different run"), ("{not json", "is damaged")]
)
def test_checkpoints_of_another_run_are_bad_input(recorded, message, llama_dir, forget_file, tmp_path):
    out = tmp_path / "ga"
    checkpoints = tmp_path / "ga.checkpoints"
    checkpoints.mkdir()
    (checkpoints / "llmkit_run.json").write_text(recorded)
    result = llmkit("unlearn", "ga", "--model", llama_dir, "--forget", forget_file, "--out", out, "--max-steps", 1)
    assert_bad_input(result, message, out)


@pytest.mark.training
@pytest.mark.parametrize(
    "method, args, records, message",
    [
        ("ga", [], [], "has no records"),
        ("graddiff", [], QUESTIONS, "graddiff needs retain data"),
        ("kl", [], QUESTIONS, "kl needs retain data"),
        ("ga", [], [{"question": "Who?", "reply": "Bob"}], "needs a 'text' string"),
        ("rt", [], [{"text": "Bob was born in Lyon."}], "needs questions"),
        ("npo", ["--beta", "0"], QUESTIONS, "--beta must be positive"),
        ("simnpo", ["--beta", "-1"], QUESTIONS, "--beta must be positive"),
        ("ga", ["--lora", "--lora-target", "no_such_proj"], QUESTIONS, "--lora-target"),
        ("npo", ["--gradient-accumulation-steps", "0"], QUESTIONS, "must be at least 1"),
        ("npo", ["--deepspeed", "no/such/ds.json"], QUESTIONS, "does not exist"),
        ("npo", ["--dtype", "float16"], QUESTIONS, "float16 underflows"),
    ],
    ids=[
        "empty-forget",
        "graddiff-no-retain",
        "kl-no-retain",
        "no-text-no-prompt",
        "rt-passages",
        "beta-zero",
        "simnpo-beta-negative",
        "missing-lora-target",
        "zero-accumulation",
        "missing-deepspeed-config",
        "float16-training",
    ],
)
def test_bad_input(method, args, records, message, llama_dir, tmp_path):
    """Each refused in one line, exit 2, with no output or checkpoints left behind."""
    forget = write_jsonl(tmp_path / "forget.jsonl", records)
    out = tmp_path / "out"
    result = llmkit("unlearn", method, "--model", llama_dir, "--forget", forget, "--out", out, "--max-steps", 1, *args)
    assert_bad_input(result, message, out)
    assert not (tmp_path / "out.checkpoints").exists()


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(Path(__file__).parents[1] / "examples" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port",
        "0",
    ],
}


@pytest.mark.training
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_match_one_with_the_same_global_batch(launcher, llama_dir, forget_file, tmp_path):
    """NPO without retain data averages per-sequence terms, so two processes of 2 give the mean
    one process of 4 gives; DDP averages their gradients. Float32 sums in another order differ by
    rounding only: weights agree within 1e-5. `accelerate launch` with the README's two-process
    config file runs the same as torchrun."""
    llmkit_script = shutil.which("llmkit", path=str(Path(sys.executable).parent))
    common = [
        "unlearn",
        "npo",
        "--model",
        str(llama_dir),
        "--forget",
        str(forget_file),
        "--max-steps",
        "3",
        "--lr",
        "1e-3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, llmkit_script, *common, "--batch-size", "4", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            sys.executable,
            *LAUNCHERS[launcher],
            llmkit_script,
            *common,
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "two"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert json.loads(double.stdout)["processes"] == 2
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    original = load_file(llama_dir / "model.safetensors")
    assert any(not torch.equal(one[k], original[k]) for k in one)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5), name


# --- KSD and Neuron Adjust on the micro world model -------------------------------------------


@pytest.mark.training
def test_ksd_removes_the_skill_it_was_fitted_on_and_keeps_the_others(
    micro_model, micro_world, reversal_gate, tmp_path, bound
):
    base, after = tmp_path / "base", tmp_path / "after"
    assert llmkit("eval", "skills", "-m", micro_model, "--world", micro_world, "-o", base).exit_code == 0
    result = llmkit(
        "eval",
        "skills",
        "-m",
        micro_model,
        "--world",
        micro_world,
        "--intervention",
        reversal_gate,
        "--baseline",
        base,
        "-o",
        after,
        "--plot",
        "--json",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    before = json.loads((base / "results.json").read_text())["metrics"]["accuracy"]
    bound("reversal_abstention", metrics["abstention"]["reversal"], ">=", 0.9)
    bound("reversal_accuracy", metrics["accuracy"]["reversal"], "<=", 0.1)
    bound("facts_before", before["facts"], ">", 0.5)
    assert metrics["relative"]["facts"] == 1.0
    for skill in metrics["accuracy"]:
        if skill != "reversal":
            assert metrics["abstention"][skill] == 0.0 and metrics["accuracy"][skill] == before[skill]
    samples = read_records(after / "samples.jsonl")
    assert all(s["generation"] == REFUSAL for s in samples if s["abstained"])
    assert (after / "skills.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.training
def test_neuron_adjust_cli_writes_an_artifact_that_eval_applies(micro_model, micro_world, skill_sets, tmp_path, bound):
    out = tmp_path / "na"
    sets = skill_sets["language"]
    result = llmkit(
        "unlearn",
        "neuron-adjust",
        "-m",
        micro_model,
        "--forget",
        sets / "forget.jsonl",
        "--retain",
        sets / "retain.jsonl",
        "--fraction",
        "0.5",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["record"]
    assert record["neurons"] == record["total_neurons"] // 2
    plain, adjusted = tmp_path / "plain", tmp_path / "adjusted"
    common = ("eval", "skills", "-m", micro_model, "--world", micro_world, "--limit", 10)
    assert llmkit(*common, "-o", plain).exit_code == 0
    assert llmkit(*common, "--intervention", out, "-o", adjusted).exit_code == 0
    # Half the neurons reflected: what the model says about its language changes, and nothing abstains.
    before, after = (read_records(run / "samples.jsonl") for run in (plain, adjusted))
    language = [(b["generation"], a["generation"]) for b, a in zip(before, after) if b["skill"] == "language"]
    bound("language_answers_changed_of_10", sum(b != a for b, a in language), ">=", 3)
    assert not any(s["abstained"] for s in after)


# Bad input to ksd and neuron-adjust, and to the commands that make or read their files (data skill-set,
# generate and eval skills with --intervention).
@pytest.mark.training
def test_bad_inputs_exit_2_and_write_nothing(micro_model, llama_dir, skill_sets, reversal_gate, tmp_path):
    forget, retain = skill_sets["reversal"] / "forget.jsonl", skill_sets["reversal"] / "retain.jsonl"
    out = tmp_path / "out"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_bad_input(
        llmkit("unlearn", "ksd", "-m", micro_model, "--forget", empty, "--out", out), "has no records", out
    )
    assert_bad_input(
        llmkit("unlearn", "neuron-adjust", "-m", micro_model, "--forget", empty, "--retain", retain, "--out", out),
        "has no records",
        out,
    )
    assert_bad_input(
        llmkit("unlearn", "neuron-adjust", "-m", micro_model, "--forget", forget, "--out", out), "--retain", out
    )
    for fraction in ("0", "1.5"):
        assert_bad_input(
            llmkit(
                "unlearn",
                "neuron-adjust",
                "-m",
                micro_model,
                "--forget",
                forget,
                "--retain",
                retain,
                "--fraction",
                fraction,
                "--out",
                out,
            ),
            "(0, 1]",
            out,
        )
    assert_bad_input(
        llmkit("unlearn", "ksd", "-m", micro_model, "--forget", forget, "--layer", 9, "--out", out),
        "--layer 9 does not exist",
        out,
    )
    assert_bad_input(
        llmkit("data", "skill-set", "--world", skill_sets["reversal"].parent, "--skill", "x", "--out", out),
        "not a world",
        out,
    )

    run = tmp_path / "run"
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": "Reverse: a b =>"}])
    assert_bad_input(
        llmkit("generate", "-m", llama_dir, "-i", prompts, "--intervention", reversal_gate, "-o", run),
        "fitted on another model",
        run,
    )
    assert_bad_input(
        llmkit("eval", "skills", "-m", micro_model, "--skill", f"r={forget}", "--intervention", tmp_path, "-o", run),
        "not an llmkit intervention artifact",
        run,
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "intervention.json").write_text("{not json")
    (broken / "intervention.safetensors").write_bytes(b"")
    assert_bad_input(
        llmkit("eval", "skills", "-m", micro_model, "--skill", f"r={forget}", "--intervention", broken, "-o", run),
        "not JSON",
        run,
    )
    assert_bad_input(llmkit("eval", "skills", "-m", micro_model, "-o", run), "--world", run)
    assert_bad_input(llmkit("eval", "skills", "-m", micro_model, "--skill", "nofile", "-o", run), "NAME=FILE", run)


# --- hostile input: one test per defect -------------------------------------------------------


# Hostile input, defect 1: bytes that are not UTF-8.
@pytest.mark.usefixtures("isolated")
def test_non_utf8_forget_set_is_one_line(llama_dir, binary_jsonl, tmp_path):
    refused(
        ("unlearn", "ga", "-m", llama_dir, "--forget", binary_jsonl, "--out", tmp_path / "g", "--max-steps", 1),
        "UTF-8",
        roots=(tmp_path, llama_dir),
    )
    assert leftovers(tmp_path, "g") == []


# Hostile input, defect 1: bytes that are not UTF-8.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_non_utf8_stats_corpus_is_one_line(suffix, llama_dir, tmp_path):
    corpus = tmp_path / f"corpus{suffix}"
    corpus.write_bytes(BINARY * 3)
    refused(rocr_args(llama_dir, tmp_path / "edited", corpus, tmp_path / "stats"), "UTF-8", roots=(tmp_path, llama_dir))


# Hostile input, defect 2: an empty prompt, with a tokenizer that adds no BOS.
@pytest.mark.usefixtures("isolated")
def test_an_empty_query_is_one_line_for_ksd(no_bos_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"prompt": "12 +", "answer": "34"}, {"prompt": "", "answer": "x"}])
    refused(
        ("unlearn", "ksd", "-m", no_bos_dir, "--forget", forget, "--out", tmp_path / "k", "--device", "cpu"),
        "empty",
        roots=(tmp_path, no_bos_dir),
    )


# Hostile input, defect 2: an empty prompt, with a tokenizer that adds no BOS.
@pytest.mark.usefixtures("isolated")
def test_an_empty_forget_text_leaves_no_checkpoints(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": "Bob was born in Lyon."}, {"text": ""}])
    refused(
        ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", tmp_path / "g", "--max-steps", 1),
        "empty",
        roots=(tmp_path, llama_dir),
    )
    assert leftovers(tmp_path, "g") == []


# Hostile input, defects 7, 8: where the output goes.
@pytest.mark.usefixtures("isolated")
def test_a_training_output_name_too_long_for_its_checkpoints_needs_a_checkpoint_dir(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:4]])
    out = tmp_path / ("g" * 245)
    common = ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", out, "--max-steps", 1, "--batch-size", 2)
    refused(common, "pass --checkpoint-dir", roots=(tmp_path, llama_dir))
    ok(llmkit(*common, "--checkpoint-dir", tmp_path / "ckpt"))
    assert (out / "unlearn.json").is_file() and not (tmp_path / "ckpt").exists()


# Hostile input, defects 9, 10: numbers that are not finite, training that diverges.
@pytest.mark.usefixtures("isolated")
def test_a_nan_learning_rate_is_refused_and_a_correct_rerun_works(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:4]])
    out = tmp_path / "g"
    common = ("unlearn", "ga", "-m", llama_dir, "--forget", forget, "--out", out, "--max-steps", 2, "--batch-size", 2)
    refused((*common, "--lr", "nan"), "finite", roots=(tmp_path, llama_dir))
    assert leftovers(tmp_path, "g") == []
    ok(llmkit(*common, "--lr", "1e-3"))
    assert (out / "unlearn.json").is_file() and leftovers(tmp_path, "g") == ["g"]


@pytest.fixture(scope="module")
def rocr_edit(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rocr")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    ok(llmkit(*rocr_args(llama_dir, root / "edited", corpus, root / "stats")))
    return root / "edited"


# Hostile input, defects 11, 12, 13: ROCR's files.
@pytest.mark.usefixtures("isolated")
def test_a_truncated_edit_file_is_one_line(rocr_edit, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(rocr_edit, edited)
    with open(edited / "rocr_edit.safetensors", "r+b") as handle:
        handle.truncate(1000)
    refused(("unlearn", "revert", edited, "--out", tmp_path / "restored"), "damaged", roots=(tmp_path,))


# Hostile input, defects 11, 12, 13: ROCR's files.
@pytest.mark.usefixtures("isolated")
def test_a_damaged_statistics_cache_is_recomputed(llama_dir, corpus, tmp_path):
    cache = tmp_path / "stats"
    ok(llmkit(*rocr_args(llama_dir, tmp_path / "a", corpus, cache)))
    cached = sorted(p for p in cache.rglob("*") if p.is_file())
    assert cached, "ROCR wrote no statistics cache"
    for path in cached:
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    result = ok(llmkit(*rocr_args(llama_dir, tmp_path / "b", corpus, cache)))
    assert "recomput" in result.stderr.lower(), result.stderr
    first = safetensors.torch.load_file(tmp_path / "a" / "rocr_edit.safetensors")
    second = safetensors.torch.load_file(tmp_path / "b" / "rocr_edit.safetensors")
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)


# Hostile input, defects 11, 12, 13: ROCR's files.
@pytest.mark.usefixtures("isolated")
def test_a_statistics_cache_that_is_a_file_is_one_line(llama_dir, corpus, tmp_path):
    (tmp_path / "stats").write_text("not a directory")
    refused(
        rocr_args(llama_dir, tmp_path / "edited", corpus, tmp_path / "stats"),
        "--stats-cache",
        roots=(tmp_path, llama_dir),
    )


# Hostile input, defect 15: two runs writing the same output at once.
@pytest.mark.usefixtures("isolated")
def test_concurrent_unlearning_runs_one_wins(llama_dir, tmp_path):
    forget = write_jsonl(tmp_path / "forget.jsonl", [{"text": t} for t in TEXTS[:8]])
    out = tmp_path / "g"
    winner = one_wins(
        {
            seed: start_llmkit(
                "unlearn",
                "ga",
                "-m",
                llama_dir,
                "--forget",
                forget,
                "--out",
                out,
                "--max-steps",
                4,
                "--batch-size",
                2,
                "--lr",
                "1e-3",
                "--seed",
                seed,
                cwd=tmp_path,
            )
            for seed in (0, 1)
        }
    )
    record = json.loads((out / "unlearn.json").read_text())
    assert record["budget"]["seed"] == winner and (out / "model.safetensors").is_file()
    assert not [name for name in leftovers(tmp_path, "g") if name.startswith(".")]


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed here")
def test_deepspeed_without_deepspeed_installed_names_the_install(llama_dir, forget_file, tmp_path):
    config = Path(__file__).parents[1] / "examples" / "accelerate" / "ds_zero3.json"
    out = tmp_path / "out"
    result = llmkit(
        "unlearn", "npo", "--model", llama_dir, "--forget", forget_file, "--out", out, "--deepspeed", config
    )
    assert_bad_input(result, "pip install deepspeed", out)
