"""What every `llmkit eval` command shares (commands/evaluate.py): thresholds on metric names a run
cannot have are refused before any model loads, and the names each evaluation knows up front
cover every metric its runs report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import assert_refused, tree_snapshot
from llmkit.commands.cli import app
from llmkit.data import read_records
from llmkit.evals.common import flatten_metrics
from llmkit.evals.ort import FORMS, OrtEval, form_demo_entities

runner = CliRunner()


def llmkit(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def target(micro_world):
    return form_demo_entities(read_records(micro_world / "entities.jsonl"))[0]["name"]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    path = tmp_path_factory.mktemp("items") / "items.jsonl"
    records = [
        {"prompt": "Question: Where was Kas born?\nAnswer:", "answer": "Paris", "group": "a"},
        {"prompt": "Reverse: a b =>", "answer": "b a", "group": "b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def eval_args(command, micro_world, target, items):
    return {
        "ort": ("ort", "--probes", micro_world, "--targets", target, "--limit", 2),
        "skills": ("skills", "--world", micro_world, "--limit", 2),
        "hallucination": ("hallucination", "--data", items, "--samples", 2, "--max-new-tokens", 3, "--device", "cpu"),
    }[command]


@pytest.mark.parametrize(
    "command, metric",
    [
        ("ort", "forget.qa.probability"),
        ("ort", "drop.forget.qa"),  # a run without --baseline has no drops
        ("skills", "accuracy.juggling"),
        ("hallucination", "groups.c.accuracy"),
    ],
)
def test_a_threshold_on_a_metric_the_run_cannot_have_is_refused_before_the_model_loads(
    command, metric, micro_world, target, items, tmp_path, monkeypatch
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("llmkit.commands.evaluate.open_backend", no_model)
    roots = [tmp_path, micro_world]
    before = tree_snapshot(*roots)
    result = llmkit(
        "eval",
        *eval_args(command, micro_world, target, items),
        "-m",
        tmp_path / "never-loaded",
        "-o",
        tmp_path / "run",
        "--fail-under",
        f"{metric}=0.5",
    )
    line = assert_refused(result, f"no metric named '{metric}'; this run has: ", before=before, roots=roots)
    names = line.partition("this run has: ")[2].split(", ")
    assert names and not [n for n in names if n.startswith(("drop.", "relative.", "baseline."))]  # --baseline's only


def test_ort_knows_its_metric_names_before_scoring(micro_model, micro_world, target, tmp_path):
    base = tmp_path / "base"
    args = ("eval", "ort", "-m", micro_model, "--probes", micro_world, "--targets", target, "--limit", 2)
    assert llmkit(*args, "-o", base).exit_code == 0
    compared = llmkit(*args, "--baseline", base, "--json")
    assert compared.exit_code == 0, compared.output
    evaluation = OrtEval.load(micro_world, [target], FORMS, limit=2)
    plain = json.loads((base / "results.json").read_text())["metrics"]
    assert set(flatten_metrics(plain)) == evaluation.metric_names(compared=False)
    assert set(flatten_metrics(json.loads(compared.stdout)["metrics"])) <= evaluation.metric_names(compared=True)


@pytest.mark.parametrize("command", ["skills", "hallucination"])
def test_up_front_metric_names_cover_every_metric_reported(command, micro_model, micro_world, target, items, tmp_path):
    from llmkit.evals.hallucination import HallucinationEval
    from llmkit.evals.skills import SkillsEval

    base = tmp_path / "base"
    args = ("eval", *eval_args(command, micro_world, target, items), "-m", micro_model)
    assert llmkit(*args, "-o", base).exit_code == 0
    compared = llmkit(*args, "--baseline", base, "--json")
    assert compared.exit_code == 0, compared.output
    if command == "skills":
        evaluation = SkillsEval.load(micro_world, limit=2)
    else:
        evaluation = HallucinationEval.load(data=items, samples=2, max_new_tokens=3)
    plain = json.loads((base / "results.json").read_text())["metrics"]
    assert set(flatten_metrics(plain)) <= evaluation.metric_names(compared=False)
    assert set(flatten_metrics(json.loads(compared.stdout)["metrics"])) <= evaluation.metric_names(compared=True)
