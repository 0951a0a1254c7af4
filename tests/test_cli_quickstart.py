"""`llmkit quickstart` on the micro preset, from the cache: one quickstart run (`report`) read by
one test per stage, then the printed tables, and bad input."""

import json

import pytest

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records
from llmkit.evals.quickstart import STAGES
from llmkit.evals.skills import world_skill_items

pytestmark = pytest.mark.training  # every quickstart stage depends on the CPU's kernels


# --- one quickstart run, one test per stage ---------------------------------------------------


@pytest.fixture(scope="module")
def report(world_cache, tmp_path_factory):
    """quickstart --json on the micro preset: (what it printed, its samples)."""
    out = tmp_path_factory.mktemp("quickstart") / "report"
    result = llmkit("quickstart", "--preset", "micro", "--cache-dir", world_cache, "--output-path", out, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "results.json").read_text())
    return printed, read_records(out / "samples.jsonl")


def stage_samples(report, task):
    return [s for s in report[1] if s["task"] == task]


def test_quickstart_reuses_the_cache_and_times_every_stage(report):
    printed, _ = report
    assert printed["config"]["model_source"] == "shipped"
    assert list(printed["metrics"]) == list(STAGES) == list(printed["stage_seconds"])


def test_knowledge_stage(report, micro_world):
    knowledge = report[0]["metrics"]["knowledge"]
    assert set(knowledge["accuracy"]) == {"0", "3", "30"}
    assert set(knowledge["accuracy"]["30"]) == {"qa", "cloze", "mc", "tf", "char"}
    assert len(stage_samples(report, "knowledge")) == len(read_records(micro_world / "probes.jsonl"))


def test_skills_stage(report, micro_world):
    assert len(stage_samples(report, "skills")) == len(world_skill_items(micro_world))


def test_ort_stage(report, micro_world, bound):
    # The micro preset's target: its most exposed demonstration entity (SETTINGS), known in every form.
    target = report[0]["config"]["ort_target"]
    entity = next(e for e in read_records(micro_world / "entities.jsonl") if e["name"] == target)
    assert entity["demonstration"] and entity["exposure"] == 30
    ort = report[0]["metrics"]["ort"]
    assert {s["target"] for s in stage_samples(report, "ort")} == {target}
    bound("ort_forget_qa_prob", ort["forget"]["qa"]["prob"], ">", 0.5)
    assert set(ort["forget"]) == {"qa", "cloze", "mc", "tf", "char"}


def test_rocr_stage(report, bound):
    # The same target redirected; its QA answers lose probability, the neighbours barely move,
    # and the edit is reverted (the ORT stage ran first).
    target = report[0]["config"]["ort_target"]
    stage = report[0]["metrics"]["rocr"]
    assert stage["target"] == target and stage["redirect"] != target and len(stage["answers"]) == 3
    bound("rocr_forget_qa_drop", stage["ort"]["drop"]["forget"]["qa"], ">", 0.1)
    bound("rocr_neighbor_qa_drop_abs", abs(stage["ort"]["drop"]["neighbor"]["qa"]), "<", 0.1)
    assert {s["target"] for s in stage_samples(report, "rocr")} == {target}


def test_npo_stage(report, bound):
    # The same target, trained on its QA facts only, on a copy of the model.
    target = report[0]["config"]["ort_target"]
    npo = report[0]["metrics"]["npo"]
    assert npo["target"] == target and npo["forget_records"] == 5
    bound("npo_forget_qa_drop", npo["ort"]["drop"]["forget"]["qa"], ">", 0.5)
    assert {s["target"] for s in stage_samples(report, "npo")} == {target}


def test_skill_unlearning_stage(report, micro_world, bound):
    # KSD abstains on the numeric skill only; Neuron Adjust moved its 3% of neurons.
    stage = report[0]["metrics"]["skill_unlearning"]
    abstention = dict(stage["ksd"]["skills"]["abstention"])
    bound("ksd_comparison_abstention", abstention.pop("comparison"), ">=", 0.9)
    assert set(abstention.values()) == {0.0}
    assert stage["neuron_adjust"]["neurons"] == 16  # ⌈3% of 2 layers × 256 neurons⌉
    assert len(stage_samples(report, "skills-ksd")) == len(world_skill_items(micro_world))


def test_hallucination_stage(report):
    # The micro preset's 12 questions per exposure group, one sample each (its 10 answers within).
    stage = report[0]["metrics"]["hallucination"]
    assert {group: g["num_prompts"] for group, g in stage["groups"].items()} == {"exposure 0": 12, "exposure 30": 12}
    assert len(stage_samples(report, "hallucination")) == stage["num_prompts"] == 24


def test_abstention_stage(report, bound):
    # Half of the 24 micro entities tuned on, the other half asked of the tuned and the pretrained model.
    stage = report[0]["metrics"]["abstention"]
    assert stage["train_questions"] == stage["test_questions"] == 60
    for model in ("tuned", "pretrained"):
        assert list(stage[model]["groups"]) == ["exposure 0", "exposure 3", "exposure 30"]
    # Untuned, the model has never read the certainty question; tuned on labels a third sure, its
    # mean P(sure) moves towards that share.
    share = stage["certain"] / stage["train_questions"]
    distance = {model: abs(stage[model]["p_sure_mean"] - share) for model in ("tuned", "pretrained")}
    bound("rtuning_p_sure_distance_to_share", distance["tuned"], "<", distance["pretrained"])
    samples = stage_samples(report, "abstention")
    assert len(samples) == 120 and {s["model"] for s in samples} == {"tuned", "pretrained"}


def test_restor_stage(report, bound):
    # The micro world's first misinformation target, corrupted by its k = 0 documents, then
    # unlearned by GA and NPO; every model asked the target's and the well-known entities' facts.
    stage = report[0]["metrics"]["restor"]
    assert list(stage)[-4:] == ["clean", "corrupted", "ga", "npo"]
    samples = stage_samples(report, "restor")
    assert {s["model"] for s in samples} == {"clean", "corrupted", "ga", "npo"}
    assert all(s["entity"] == stage["target"] for s in samples if s["target"])
    # Trained on the documents, the model finds the values they state likelier than before.
    bound("restor_corrupted_logprob_rise", stage["corrupted"]["logprob"]["corrupted"]
          - stage["clean"]["logprob"]["corrupted"], ">", 0.1)  # fmt: skip
    for method in ("ga", "npo"):
        assert set(stage[method]) >= {"target", "nontarget", "corrupted_rate", "logprob", "recovery"}


def test_quickstart_prints_every_stage_table(report, world_cache, tmp_path):
    # After `report`, so ROCR's key statistics come from the cache.
    target = report[0]["config"]["ort_target"]
    table = llmkit("quickstart", "--preset", "micro", "--cache-dir", world_cache, "--output-path", tmp_path / "t")
    assert table.exit_code == 0 and "What the model knows" in table.stdout and "chance" in table.stdout
    assert "model: shipped with llmkit" in table.stderr
    assert "NPO forget" in table.stdout and "Skill unlearning: comparison removed" in table.stdout
    assert f"ORT: is {target} known in every form?" in table.stdout
    assert f"ROCR: asked about {target}" in table.stdout and "(cached)" in table.stdout
    assert "Abstention: R-Tuning" in table.stdout
    assert "RESTOR: corrupting" in table.stdout


def test_quickstart_bad_input(world_cache, tmp_path):
    assert_bad_input(llmkit("quickstart", "--preset", "huge", "--cache-dir", world_cache), "unknown preset 'huge'")
    out = tmp_path / "report"
    out.mkdir()
    assert_bad_input(
        llmkit("quickstart", "--preset", "micro", "--cache-dir", world_cache, "-o", out),
        "already exists; pass --overwrite",
    )
