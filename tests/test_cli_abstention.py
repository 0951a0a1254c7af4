"""`llmkit data rtuning`, `llmkit train rtuning` and `llmkit eval abstention` from the command line
on the micro world: what the data builder writes, that tuning teaches the certainty and the
refusals, the Pretrain-T baseline in the same run, and bad input."""

import json

import pytest

from conftest import llmkit, ok, refused, write_jsonl
from llmkit.data import read_records
from llmkit.methods.rtuning import CERTAINTY_QUESTION, REFUSALS


@pytest.fixture(scope="module")
def sure_data(micro_model, micro_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("rtuning") / "sure"
    ok(llmkit("data", "rtuning", "-m", micro_model, "--world", micro_world, "--out", out))
    return out


def test_world_data_splits_each_exposure_and_writes_tests_of_held_out_entities(sure_data, micro_world):
    train, split = read_records(sure_data / "train.jsonl"), read_records(sure_data / "split.jsonl")
    test = read_records(sure_data / "test.jsonl")
    summary = json.loads((sure_data / "rtuning.json").read_text())
    assert len(train) == len(split) == summary["num_questions"] == 60  # half of 24 entities x 5 attributes
    tuned, held_out = {s["entity_id"] for s in split}, {t["entity_id"] for t in test}
    assert tuned.isdisjoint(held_out) and len(tuned) == len(held_out) == 12
    assert {s["exposure"] for s in split} == {t["exposure"] for t in test} == {0, 3, 30}
    for record, text in zip(split, (r["text"] for r in train)):
        assert record["certain"] == record["correct"]  # the sure variant splits by correctness
    sure = sum(r["text"].endswith(f"{CERTAINTY_QUESTION} I am sure.") for r in train)
    assert sure == summary["certain"] == sum(s["certain"] for s in split)
    # The split against the truth: the model knows its exposure-30 entities far better than unseen ones.
    table = summary["split"]
    assert list(table) == ["exposure 0", "exposure 3", "exposure 30"]
    assert table["exposure 30"]["certain"] > table["exposure 0"]["certain"] + 5
    heldout_template = read_records(sure_data / "test_heldout_template.jsonl")
    assert {t["template"] for t in heldout_template} == {"heldout"} and len(heldout_template) == len(test)


def test_attributes_left_out_of_tuning_become_a_test(micro_model, micro_world, tmp_path):
    out = tmp_path / "some"
    args = ("data", "rtuning", "-m", micro_model, "--world", micro_world, "--out", out)
    ok(llmkit(*args, "--attributes", "birthplace,occupation", "--variant", "vanilla"))
    assert {s["attribute"] for s in read_records(out / "split.jsonl")} == {"birthplace", "occupation"}
    other = read_records(out / "test_other_attributes.jsonl")
    assert {t["attribute"] for t in other} == {"birth_year", "employer", "spouse"}
    assert all(
        r["text"].endswith(".") and CERTAINTY_QUESTION not in r["text"] for r in read_records(out / "train.jsonl")
    )


@pytest.mark.training
def test_tuning_teaches_sure_on_certain_questions_and_unsure_on_the_others(sure_data, micro_model, tmp_path):
    """On the questions it was tuned on, the tuned model's P(sure) follows the labels, where the
    pretrained model's (the Pretrain-T baseline of the same run) does not."""
    model = tmp_path / "tuned"
    ok(
        llmkit(
            "train", "rtuning", "-m", micro_model, "--data", sure_data, "--out", model, "--epochs", "15", "--lr", "2e-3"
        )
    )
    run = tmp_path / "eval"
    ok(
        llmkit(
            "eval",
            "abstention",
            "-m",
            model,
            "--data",
            sure_data / "split.jsonl",
            "--pretrained",
            micro_model,
            "-o",
            run,
        )
    )
    samples = read_records(run / "samples.jsonl")
    tuned = [s for s in samples if "model" not in s]
    pretrained = [s for s in samples if s.get("model") == "pretrained"]
    assert len(tuned) == len(pretrained) == 60

    def gap(chosen):
        sure = [s["p_sure"] for s in chosen if s["certain"]]
        unsure = [s["p_sure"] for s in chosen if not s["certain"]]
        return sum(sure) / len(sure) - sum(unsure) / len(unsure)

    assert gap(tuned) > 0.25 and gap(tuned) > gap(pretrained) + 0.2
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert set(metrics["pretrained"]["metrics"]) == {"ap", "accuracy_answered", "answer_rate", "accuracy"}
    assert metrics["pretrained"]["metrics"]["answer_rate"] is not None


@pytest.mark.training
def test_refusal_tuning_refuses_what_the_model_did_not_know(micro_model, micro_world, tmp_path):
    data, model, run = tmp_path / "refuse", tmp_path / "tuned", tmp_path / "eval"
    ok(llmkit("data", "rtuning", "-m", micro_model, "--world", micro_world, "--variant", "refuse", "--out", data))
    refusal_texts = [r for r in read_records(data / "train.jsonl") if any(r["text"].endswith(x) for x in REFUSALS)]
    assert len(refusal_texts) == sum(not s["certain"] for s in read_records(data / "split.jsonl"))
    ok(llmkit("train", "rtuning", "-m", micro_model, "--data", data, "--out", model, "--epochs", "15", "--lr", "2e-3"))
    ok(llmkit("eval", "abstention", "-m", model, "--data", data / "split.jsonl", "--mode", "refusal", "-o", run))
    samples = read_records(run / "samples.jsonl")
    refused_uncertain = sum(s["refusal"] for s in samples if not s["certain"]) / sum(not s["certain"] for s in samples)
    refused_certain = sum(s["refusal"] for s in samples if s["certain"]) / sum(s["certain"] for s in samples)
    assert refused_uncertain > 0.6 and refused_certain < 0.3


def test_eval_abstention_thresholds_and_plot(micro_model, micro_world, tmp_path):
    run = tmp_path / "run"
    result = llmkit(
        "eval",
        "abstention",
        "-m",
        micro_model,
        "--world",
        micro_world,
        "--exposures",
        "0,30",
        "-o",
        run,
        "--plot",
        "--fail-under",
        "groups.exposure 30.accuracy=1.01",
    )
    assert result.exit_code == 1 and "groups.exposure 30.accuracy" in result.stderr
    results = json.loads((run / "results.json").read_text())
    assert set(results["metrics"]["groups"]) == {"exposure 0", "exposure 30"}
    assert results["metrics"]["abstention"]["recall"] is not None
    assert (run / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.usefixtures("isolated")
class TestBadInput:
    def test_questions_without_answers(self, micro_model, tmp_path):
        data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Where was Ada born?"}])
        refused(
            ("data", "rtuning", "-m", micro_model, "--data", data, "--out", tmp_path / "o"),
            "no answer",
            roots=[tmp_path],
        )
        refused(
            ("eval", "abstention", "-m", micro_model, "--data", data, "-o", tmp_path / "e"),
            "no answer",
            roots=[tmp_path],
        )

    def test_unknown_variant(self, micro_model, micro_world, tmp_path):
        args = ("data", "rtuning", "-m", micro_model, "--world", micro_world, "--out", tmp_path / "o")
        refused((*args, "--variant", "unknown"), "unknown --variant 'unknown'", roots=[tmp_path])

    def test_too_few_samples_for_the_uncertainty_variant(self, micro_model, micro_world, tmp_path):
        args = ("data", "rtuning", "-m", micro_model, "--world", micro_world, "--out", tmp_path / "o")
        refused((*args, "--variant", "uncertainty", "--samples", "1"), "--samples must be at least 2", roots=[tmp_path])

    def test_exposures_the_world_lacks(self, micro_model, micro_world, tmp_path):
        args = ("eval", "abstention", "-m", micro_model, "--world", micro_world, "-o", tmp_path / "e")
        refused((*args, "--exposures", "0,10"), "no entities of exposure 10", roots=[tmp_path])

    def test_choices_without_their_gold(self, micro_model, tmp_path):
        data = write_jsonl(
            tmp_path / "mc.jsonl", [{"question": "Capital?", "answer": "Rome", "choices": ["Paris", "Oslo"]}]
        )
        refused(
            ("data", "rtuning", "-m", micro_model, "--data", data, "--out", tmp_path / "o"),
            "not among its choices",
            roots=[tmp_path],
        )

    def test_a_prompt_format_with_other_braces(self, micro_model, tmp_path):
        data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Where was Ada born?", "answer": "Paris"}])
        args = ("eval", "abstention", "-m", micro_model, "--data", data, "-o", tmp_path / "e")
        refused((*args, "--prompt-format", "Q: {question} {x}"), "--prompt-format must contain", roots=[tmp_path])

    def test_a_pretrained_model_that_does_not_exist(self, micro_model, micro_world, tmp_path):
        args = ("eval", "abstention", "-m", micro_model, "--world", micro_world, "-o", tmp_path / "e")
        refused((*args, "--pretrained", tmp_path / "nowhere"), "does not exist", roots=[tmp_path])

    def test_rtuning_data_directory_without_train_file(self, micro_model, tmp_path):
        (tmp_path / "empty").mkdir()
        args = ("train", "rtuning", "-m", micro_model, "--data", tmp_path / "empty", "--out", tmp_path / "m")
        refused(args, "holds no train.jsonl", roots=[tmp_path])
