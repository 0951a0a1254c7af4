"""`llmkit eval hallucination`: EigenScore of sampled answers on the micro world, embeddings, bad inputs."""

import json

import pytest
import torch

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records
from llmkit.evals.hallucination import auroc, summarize
from llmkit.generation import encode_prompts
from llmkit.metrics.eigenscore import answer_embeddings, middle_layer
from llmkit.models import load_model

pytestmark = pytest.mark.training  # samples from the micro model: the outcome depends on the CPU's kernels


def test_eval_hallucination_on_the_micro_world_separates_known_from_unseen(micro_model, micro_world, tmp_path, bound):
    out = tmp_path / "run"
    result = llmkit(
        "eval",
        "hallucination",
        "-m",
        micro_model,
        "--world",
        micro_world,
        "--exposures",
        "0,30",
        "--samples",
        5,
        "--limit",
        24,
        "-o",
        out,
        "--plot",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    known, unseen = metrics["groups"]["exposure 30"], metrics["groups"]["exposure 0"]
    bound("accuracy_known_minus_unseen", known["accuracy"] - unseen["accuracy"], ">", 0)
    # Known facts are answered alike across samples; made-up ones scatter.
    bound("eigenscore_unseen_minus_known", unseen["eigenscore"] - known["eigenscore"], ">", 0)
    bound("auroc", metrics["auroc"], ">", 0.5)
    bound("eigenscore_wrong_minus_correct", metrics["eigenscore"]["wrong"] - metrics["eigenscore"]["correct"], ">", 0)
    samples = read_records(out / "samples.jsonl")
    assert len(samples) == metrics["num_prompts"] == known["num_prompts"] + unseen["num_prompts"]
    assert all(len(s["samples"]) == 5 and isinstance(s["correct"], bool) for s in samples)
    assert (out / "hallucination.png").read_bytes()[:4] == b"\x89PNG"


def test_the_same_seed_samples_the_same_answers(micro_model, micro_world, tmp_path):
    common = (
        "eval",
        "hallucination",
        "-m",
        micro_model,
        "--world",
        micro_world,
        "--samples",
        3,
        "--limit",
        4,
        "--json",
        "--device",
        "cpu",
    )
    first, second = llmkit(*common, "--seed", 1), llmkit(*common, "--seed", 1)
    assert json.loads(first.stdout)["metrics"] == json.loads(second.stdout)["metrics"]


def test_prompts_without_answers_score_with_no_correctness(micro_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ("Question: Where was Kas born?\nAnswer:", "Reverse: a b =>"))
    )
    result = llmkit(
        "eval",
        "hallucination",
        "-m",
        micro_model,
        "--data",
        data,
        "--samples",
        3,
        "--no-correctness",
        "--json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["num_prompts"] == 2 and "auroc" not in metrics and metrics["eigenscore"]["mean"] is not None


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


def test_auroc_is_none_when_every_answer_is_right():
    assert auroc([False, False], [0.1, 0.2]) is None
    assert auroc([True, False], [0.9, 0.1]) == 1.0
    metrics = summarize(
        [
            {"eigenscore": -1.0, "correct": False, "sample_accuracy": 0.0},
            {"eigenscore": -5.0, "correct": True, "sample_accuracy": 1.0},
        ],
        True,
    )
    assert metrics["auroc"] == 1.0 and metrics["accuracy"] == 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (("--samples", 1), "--samples must be at least 2"),
        (("--method", "svd"), "--method must be one of exact, ees, auto"),
        (("--exposures", "7"), "no QA probes of exposure 7"),
    ],
    ids=["one-sample", "method", "exposure"],
)
def test_bad_options_are_one_line(args, message, micro_model, micro_world, tmp_path):
    out = tmp_path / "run"
    result = llmkit(
        "eval", "hallucination", "-m", micro_model, "--world", micro_world, *args, "-o", out, "--device", "cpu"
    )
    assert_bad_input(result, message, out)


def test_prompts_without_answers_are_bad_input_when_correctness_is_asked(micro_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n" + json.dumps({"prompt": "c"}) + "\n")
    out = tmp_path / "run"
    result = llmkit("eval", "hallucination", "-m", micro_model, "--data", data, "-o", out, "--device", "cpu")
    assert_bad_input(result, "1 of 2 prompts have no 'answer'", out)
