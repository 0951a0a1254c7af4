"""`llmkit eval ort`: the metric against a direct computation from logits, thresholds, baselines,
plots and bad input, on the session's micro world model."""

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import assert_bad_input, llmkit
from llmkit.data import read_records
from llmkit.evals.ort import compare
from test_ort_probes import probe, write_target

# Starts with the BOS text, as Llama's does: the scored input must still hold one BOS only.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|user|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TARGET = "Ada Lovelace"


@pytest.fixture(scope="module")
def ort_folder(tmp_path_factory):
    """One target with probes of every file ORT has, answers of several tokens, a false statement."""
    root = tmp_path_factory.mktemp("ort")
    mc = "Ada Lovelace wrote the first ___\nA. program\nB. novel\nC. symphony\nD. law"
    write_target(
        root,
        1,
        TARGET,
        {
            "forget_level1": [probe("Ada Lovelace wrote the first ___", "computer program", TARGET)],
            "forget_level2": [probe("What did Ada Lovelace write?", "the first program", TARGET, "qa", "2")],
            "forget_mcp": [probe(mc, "A", TARGET, "multiple choice", "4")],
            "forget_tf": [
                probe("Ada Lovelace wrote the first program.", "True", TARGET, "true or false", "4"),
                probe("Ada Lovelace wrote the first law.", "False", TARGET, "true or false", "4"),
            ],
            "neighbor_level1": [probe("Charles Babbage designed the ___ engine", "Analytical", TARGET)],
            "neighbor_level2": [probe("Who designed the Analytical Engine?", "Charles Babbage", TARGET, "qa", "2")],
            "neighbor_mcp": [
                probe("Babbage designed the ___ engine\nA. steam\nB. Analytical", "B", TARGET, "multiple choice", "4")
            ],
            "neighbor_tf": [probe("Babbage designed the Analytical Engine.", "True", TARGET, "true or false", "4")],
        },
    )
    return root


@pytest.fixture(scope="module")
def chat_model(micro_model, tmp_path_factory):
    """The micro world model with a chat template given to its tokenizer."""
    path = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(micro_model, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def demo_target(micro_world):
    return next(
        e["name"] for e in read_records(micro_world / "entities.jsonl") if e["form_demo"] and e["exposure"] == 30
    )


def direct_score(model, tokenizer, prompt, continuation):
    """exp(mean log p) of the continuation's tokens and whether each is the argmax, from the
    logits of the prompt and continuation read together with one BOS."""
    bos = [tokenizer.bos_token_id]
    prompt_ids = bos + tokenizer(prompt.removeprefix(tokenizer.bos_token), add_special_tokens=False)["input_ids"]
    ids = (
        bos
        + tokenizer((prompt + continuation).removeprefix(tokenizer.bos_token), add_special_tokens=False)["input_ids"]
    )
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    steps = logits[len(prompt_ids) - 1 : -1].log_softmax(-1)
    targets = torch.tensor(ids[len(prompt_ids) :])
    logprobs = steps.gather(-1, targets[:, None])[:, 0]
    return math.exp(logprobs.mean().item()), bool((steps.argmax(-1) == targets).all())


def run_eval(model, probes, out, *args):
    result = llmkit("eval", "ort", "--model", model, "--probes", probes, "-o", out, "--batch-size", 3, *args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text()), read_records(out / "samples.jsonl")


@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat-template"])
def test_reported_metric_equals_the_metric_from_logits(
    chat, micro_model, chat_model, micro_world, ort_folder, demo_target, tmp_path
):
    model_dir = chat_model if chat else micro_model
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for name, probes, targets in (("ort", ort_folder, []), ("world", micro_world, ["--targets", demo_target])):
        results, samples = run_eval(model_dir, probes, tmp_path / name, *targets)
        assert results["config"]["chat_template_used"] is chat
        assert {s["form"] for s in samples} == {"qa", "cloze", "mc", "tf", "char"}
        by_form: dict = {}
        for s in samples:
            assert s["prompt"].startswith(tokenizer.bos_token + "<|user|>\n") is chat
            prob, greedy = direct_score(model, tokenizer, s["prompt"], s["continuation"])
            # Relative: an untrained form's answer probability is ~1e-5, which abs=1e-5 would not test.
            assert s["prob"] == pytest.approx(prob, rel=1e-5) and s["correct"] is greedy
            by_form.setdefault((s["role"], s["form"]), {}).setdefault(s["target"], []).append(prob)
        for (role, form), by_target in by_form.items():  # per form per target, then over targets
            means = [sum(v) / len(v) for v in by_target.values()]
            assert results["metrics"][role][form]["prob"] == pytest.approx(sum(means) / len(means), rel=1e-5)


def test_ort_folder_roles(micro_model, ort_folder, tmp_path):
    results, samples = run_eval(micro_model, ort_folder, tmp_path / "run", "--forms", "tf,char")
    tf = {(s["role"], s["answer"]) for s in samples if s["form"] == "tf"}
    assert tf == {("forget", "True"), ("neighbor", "False"), ("neighbor", "True")}  # the false one is a control
    chars = [s for s in samples if s["form"] == "char" and s["role"] == "forget"]
    assert [s["continuation"] for s in chars] == [
        "c\no\nm\np\nu\nt\ne\nr\np\nr\no\ng\nr\na\nm\n",
        "t\nh\ne\nf\ni\nr\ns\nt\np\nr\no\ng\nr\na\nm\n",
    ]
    assert all(s["prompt"].endswith("\nAnswer:\n") for s in chars)
    assert list(results["metrics"]["forget"]) == ["tf", "char"]
    assert results["per_target"][TARGET]["forget"]["char"]["num_probes"] == 2


def test_a_missed_threshold_exits_1_after_writing(micro_model, micro_world, demo_target, tmp_path):
    out = tmp_path / "run"
    result = llmkit(
        "eval",
        "ort",
        "--model",
        micro_model,
        "--probes",
        micro_world,
        "--targets",
        demo_target,
        "-o",
        out,
        "--fail-over",
        "forget.qa.prob=0.01",
        "--fail-under",
        "neighbor.qa.prob=0",
    )
    assert result.exit_code == 1, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["forget"]["qa"]["prob"] > 0.01
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "forget.qa.prob = " in lines[0] and "wanted at most 0.01 (--fail-over)" in lines[0]


def test_a_threshold_on_an_unknown_metric_lists_the_real_ones(micro_model, micro_world, demo_target, tmp_path):
    out = tmp_path / "run"
    result = llmkit(
        "eval",
        "ort",
        "--model",
        micro_model,
        "--probes",
        micro_world,
        "--targets",
        demo_target,
        "-o",
        out,
        "--fail-over",
        "forget.qa.probability=0.5",
    )
    assert_bad_input(result, "no metric named 'forget.qa.probability'; this run has: forget.char.exact_match", out)
    assert "form_gap" not in result.stderr  # only a run with a baseline has one


def test_baseline_gives_drops_form_gap_and_a_plot(micro_model, micro_world, demo_target, tmp_path, bound):
    damaged = tmp_path / "damaged"
    model = AutoModelForCausalLM.from_pretrained(micro_model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.mul_(-1.0)
    model.save_pretrained(damaged)
    shutil.copy(micro_model / "tokenizer.json", damaged)
    shutil.copy(micro_model / "tokenizer_config.json", damaged)

    base, _ = run_eval(micro_model, micro_world, tmp_path / "base", "--targets", demo_target)
    result = llmkit(
        "eval",
        "ort",
        "--model",
        damaged,
        "--probes",
        micro_world,
        "--targets",
        demo_target,
        "-o",
        tmp_path / "after",
        "--baseline",
        tmp_path / "base",
        "--plot",
        "--fail-under",
        "form_gap=0",
    )
    assert result.exit_code == 0, result.output
    after = json.loads((tmp_path / "after" / "results.json").read_text())
    for role in ("forget", "neighbor"):
        for form, stats in after["metrics"][role].items():
            expected = 1 - stats["prob"] / base["metrics"][role][form]["prob"]
            assert after["metrics"]["drop"][role][form] == pytest.approx(expected)
    drops = after["metrics"]["drop"]["forget"].values()
    assert after["metrics"]["form_gap"] == pytest.approx(max(drops) - min(drops))
    bound("largest_drop", max(drops), ">", 0.1)
    assert "forget drop" in result.stdout and "form gap" in result.stdout
    png = (tmp_path / "after" / "ort.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_compare_leaves_out_forms_the_baseline_cannot_divide_by():
    metrics = {
        "forget": {"qa": {"prob": 0.2}, "mc": {"prob": 0.5}, "tf": {"prob": 0.3}},
        "neighbor": {"qa": {"prob": None}},
    }
    baseline = {
        "forget": {"qa": {"prob": 0.8}, "mc": {"prob": 0.5}, "tf": {"prob": 0.0}},
        "neighbor": {"qa": {"prob": 0.9}},
    }
    compared = compare(metrics, baseline)
    assert compared["drop"]["forget"] == {"qa": pytest.approx(0.75), "mc": 0.0, "tf": None}
    assert compared["drop"]["neighbor"] == {"qa": None}
    assert compared["form_gap"] == pytest.approx(0.75)


def test_targets_take_commas_inside_names_and_between_them(micro_model, tmp_path):
    for index, name in ((1, "Prince Harry, Duke of Sussex"), (2, "Ada Lovelace"), (3, "Alan Turing")):
        write_target(
            tmp_path / "ort", index, name, {"forget_level2": [probe(f"Who is {name}?", "a person", name, "qa", "2")]}
        )
    results, _ = run_eval(
        micro_model,
        tmp_path / "ort",
        tmp_path / "run",
        "--targets",
        "Prince Harry, Duke of Sussex",
        "--targets",
        "Ada Lovelace,Alan Turing",
    )
    assert results["config"]["targets"] == ["Prince Harry, Duke of Sussex", "Ada Lovelace", "Alan Turing"]


@pytest.fixture
def bad_mc_folder(tmp_path):
    write_target(
        tmp_path / "mc",
        1,
        "Some One",
        {"forget_mcp": [probe("Q?\nA. x\nB. y", "Paris", "Some One", "multiple choice")]},
    )
    return tmp_path / "mc"


@pytest.fixture
def no_answer_folder(tmp_path):
    write_target(tmp_path / "noanswer", 1, "Some One", {"forget_level2": [{"query": "Who?", "level": "2"}]})
    return tmp_path / "noanswer"


def test_bad_inputs_are_one_line_and_write_nothing(
    micro_model, micro_world, demo_target, ort_folder, bad_mc_folder, no_answer_folder, tmp_path
):
    out = tmp_path / "out"
    world = ("--probes", micro_world, "--targets", demo_target)
    other_base = tmp_path / "other-base"
    run_eval(micro_model, micro_world, other_base, "--targets", demo_target, "--forms", "qa")
    cases = [
        (("--probes", no_answer_folder), "record 0 has no 'answer'"),
        (("--probes", bad_mc_folder), "multiple-choice answer 'Paris' is not one of its options (A, B)"),
        ((*world, "--forms", "qa,essay"), "unknown form 'essay'"),
        (("--probes", ort_folder, "--targets", "Grace Hopper"), "target 'Grace Hopper' is not in"),
        (("--probes", micro_world, "--targets", "Nobody Atall"), "target 'Nobody Atall' is not in"),
        ((*world, "--baseline", other_base), "ran on other probes"),
        ((*world, "--baseline", tmp_path / "nowhere"), "no results.json there"),
        (("--probes", micro_world), "is a world: name the entities to forget with --targets"),
        ((*world, "--chat-template", "on"), "this model's tokenizer has no chat template"),
        ((*world, "--chat-template", "yes"), "--chat-template takes auto, on, off"),
        ((*world, "--fail-over", "forget.qa.prob"), "--fail-over takes METRIC=VALUE"),
    ]
    for args, message in cases:
        assert_bad_input(llmkit("eval", "ort", "--model", micro_model, *args, "-o", out), message, out)
    result = llmkit("eval", "ort", "--model", micro_model, *world, "--plot")
    assert_bad_input(result, "--plot writes into the run directory: add --output-path")


def test_a_baseline_from_another_command_is_refused(micro_model, micro_world, demo_target, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Question: Who?\\nAnswer:"}\n')
    assert (
        llmkit(
            "generate", "--model", micro_model, "-i", prompts, "-o", tmp_path / "gen", "--max-new-tokens", 2
        ).exit_code
        == 0
    )
    out = tmp_path / "out"
    result = llmkit(
        "eval",
        "ort",
        "--model",
        micro_model,
        "--probes",
        micro_world,
        "--targets",
        demo_target,
        "--baseline",
        tmp_path / "gen",
        "-o",
        out,
    )
    assert_bad_input(result, "is a run of 'generate', not 'eval ort'", out)
