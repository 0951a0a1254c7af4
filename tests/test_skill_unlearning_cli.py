"""`llmkit data skill-set`, `llmkit unlearn neuron-adjust | ksd`, `llmkit eval skills` and
`--intervention` on `generate` and `eval ort`, from the command line on the micro world model."""

import json

import pytest

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records, write_jsonl
from llmkit.evals.ort import form_demo_entities

pytestmark = pytest.mark.training  # fits Neuron Adjust and KSD: the outcome depends on the CPU's kernels

REFUSAL = "I will not answer that."


@pytest.fixture(scope="module")
def skill_sets(micro_world, tmp_path_factory):
    """skill -> directory with forget.jsonl and retain.jsonl."""
    root = tmp_path_factory.mktemp("skill-sets")
    skills = list(dict.fromkeys(item["skill"] for item in read_records(micro_world / "skills.jsonl")))
    for skill in skills:
        result = llmkit("data", "skill-set", "--world", micro_world, "--skill", skill, "--out", root / skill)
        assert result.exit_code == 0, result.output
    return {skill: root / skill for skill in skills}


@pytest.fixture(scope="module")
def reversal_gate(micro_model, skill_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "ksd-reversal"
    result = llmkit(
        "unlearn",
        "ksd",
        "-m",
        micro_model,
        "--forget",
        skill_sets["reversal"] / "forget.jsonl",
        "--refusal",
        REFUSAL,
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    return out


def test_skill_set_splits_one_skills_training_items_from_the_others(micro_world, skill_sets):
    forget = read_records(skill_sets["reversal"] / "forget.jsonl")
    retain = read_records(skill_sets["reversal"] / "retain.jsonl")
    train = [i for i in read_records(micro_world / "skills.jsonl") if i["split"] == "train"]
    assert {r["skill"] for r in forget} == {"reversal"} and "reversal" not in {r["skill"] for r in retain}
    assert len(forget) + len(retain) == len(train)
    assert not {r["prompt"] for r in forget} & {
        i["prompt"] for i in read_records(micro_world / "skills.jsonl") if i["split"] == "test"
    }


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


def test_eval_skills_reads_named_skill_files(micro_model, tmp_path):
    items = tmp_path / "rev.jsonl"
    write_jsonl(
        items, [{"prompt": "Reverse: a b c =>", "answer": "c b a"}, {"prompt": "Reverse: d e =>", "answer": "e d"}]
    )
    result = llmkit("eval", "skills", "-m", micro_model, "--skill", f"rev={items}", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert list(metrics["accuracy"]) == ["rev"] and metrics["num_items"] == {"rev": 2}


def test_ort_with_a_gate_scores_refused_probes_at_zero(micro_model, micro_world, tmp_path):
    target = form_demo_entities(read_records(micro_world / "entities.jsonl"))[0]["id"]
    probes = [p for p in read_records(micro_world / "probes.jsonl") if p["entity_id"] == target]
    forget = tmp_path / "forget.jsonl"
    write_jsonl(forget, [{"prompt": p["prompt"], "answer": p["answer"]} for p in probes])
    gate = tmp_path / "gate"
    assert (
        llmkit("unlearn", "ksd", "-m", micro_model, "--forget", forget, "--positions", "last", "--out", gate).exit_code
        == 0
    )
    run = tmp_path / "run"
    result = llmkit(
        "eval",
        "ort",
        "-m",
        micro_model,
        "--probes",
        micro_world,
        "--target",
        target,
        "--intervention",
        gate,
        "-o",
        run,
        "--json",
    )
    assert result.exit_code == 0, result.output
    samples = read_records(run / "samples.jsonl")
    forget_samples = [s for s in samples if s["role"] == "forget"]
    assert forget_samples and all(s["prob"] == 0.0 and not s["correct"] for s in forget_samples)
    assert any(s["prob"] > 0 for s in samples if s["role"] == "neighbor")


def test_generate_with_a_gate_answers_refused_prompts_with_the_refusal(micro_model, reversal_gate, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"prompt": "Reverse: a b c d =>"}, {"prompt": "Question: Where was"}])
    result = llmkit(
        "generate", "-m", micro_model, "-i", prompts, "--intervention", reversal_gate, "--max-new-tokens", 8
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["generations"] == [REFUSAL] and lines[1]["generations"] != [REFUSAL]


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
