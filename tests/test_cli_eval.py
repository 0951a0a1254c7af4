"""`llmkit eval ort | skills | hallucination` from the command line, on the session's micro world model.

What every eval command shares (commands/evaluate.py): thresholds on metric names a run cannot
have are refused before any model loads, and the names each evaluation knows up front cover every
metric its runs report. `eval ort`: the metric against a direct computation from logits,
thresholds, baselines, plots, bad input, and a KSD gate's refused probes scored at zero. `eval
skills`: skill files named on the command line. `eval hallucination`: EigenScore of sampled answers
on the micro world, seeds, prompts without answers, bad options. Hostile input: a world with
garbage probes, an empty prompt, a probe longer than the model's context, damaged baselines."""

import json
import math
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import (
    BINARY,
    assert_bad_input,
    assert_refused,
    llmkit,
    ok,
    probe,
    refused,
    tree_snapshot,
    write_jsonl,
    write_target,
)
from llmkit.data import read_records
from llmkit.evals.common import flatten_metrics
from llmkit.evals.ort import FORMS, OrtEval, biography_only_entities

# --- what every eval command shares -----------------------------------------------------------


@pytest.fixture(scope="module")
def target(micro_world):
    return biography_only_entities(read_records(micro_world / "entities.jsonl"))[0]["name"]


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
    from llmkit.configs import HallucinationConfig
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
        evaluation = HallucinationEval.load(HallucinationConfig(data=items, samples=2, max_new_tokens=3))
    plain = json.loads((base / "results.json").read_text())["metrics"]
    assert set(flatten_metrics(plain)) <= evaluation.metric_names(compared=False)
    assert set(flatten_metrics(json.loads(compared.stdout)["metrics"])) <= evaluation.metric_names(compared=True)


# --- eval ort ---------------------------------------------------------------------------------


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
        e["name"] for e in read_records(micro_world / "entities.jsonl") if e["demonstration"] and e["exposure"] == 30
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


@pytest.mark.training
def test_ort_with_a_gate_scores_refused_probes_at_zero(micro_model, micro_world, tmp_path):
    target = biography_only_entities(read_records(micro_world / "entities.jsonl"))[0]["id"]
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


# --- eval skills ------------------------------------------------------------------------------


@pytest.mark.training
def test_eval_skills_reads_named_skill_files(micro_model, tmp_path):
    items = tmp_path / "rev.jsonl"
    write_jsonl(
        items, [{"prompt": "Reverse: a b c =>", "answer": "c b a"}, {"prompt": "Reverse: d e =>", "answer": "e d"}]
    )
    result = llmkit("eval", "skills", "-m", micro_model, "--skill", f"rev={items}", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert list(metrics["accuracy"]) == ["rev"] and metrics["num_items"] == {"rev": 2}


# --- eval hallucination -----------------------------------------------------------------------


@pytest.mark.training
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


@pytest.mark.training
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


@pytest.mark.training
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


@pytest.mark.training
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


@pytest.mark.training
def test_prompts_without_answers_are_bad_input_when_correctness_is_asked(micro_model, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n" + json.dumps({"prompt": "c"}) + "\n")
    out = tmp_path / "run"
    result = llmkit("eval", "hallucination", "-m", micro_model, "--data", data, "-o", out, "--device", "cpu")
    assert_bad_input(result, "1 of 2 prompts have no 'answer'", out)


# --- hostile input: one test per defect -------------------------------------------------------


# Hostile input, defect 1: bytes that are not UTF-8.
@pytest.mark.usefixtures("isolated")
def test_a_world_with_garbage_probes_is_one_line(micro_model, micro_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(micro_world, world)
    (world / "probes.jsonl").write_bytes(BINARY * 50)
    target = read_records(world / "entities.jsonl")[0]["id"]
    refused(
        ("eval", "ort", "-m", micro_model, "--probes", world, "--targets", target, "-o", tmp_path / "run"),
        "UTF-8",
        roots=(tmp_path, micro_model),
    )


# Hostile input, defect 2: an empty prompt, with a tokenizer that adds no BOS.
@pytest.mark.usefixtures("isolated")
def test_an_empty_prompt_is_one_line_for_eval_skills(no_bos_dir, tmp_path):
    items = write_jsonl(tmp_path / "items.jsonl", [{"prompt": "12 +", "answer": "34"}, {"prompt": "", "answer": "x"}])
    refused(
        ("eval", "skills", "-m", no_bos_dir, "--skill", f"s={items}", "-o", tmp_path / "run"),
        "empty",
        roots=(tmp_path, no_bos_dir),
    )


# Hostile input, defect 5: longer than the model's context.
@pytest.mark.usefixtures("isolated")
def test_a_probe_longer_than_the_context_is_one_line(short_context_dir, tmp_path):
    root = tmp_path / "ort"
    write_target(
        root,
        1,
        "Ada Lovelace",
        {
            "forget_level2": [
                probe(
                    "What did Ada Lovelace write in the year she was born? " * 12,
                    "a program",
                    "Ada Lovelace",
                    "qa",
                    "2",
                )
            ]
        },
    )
    refused(
        ("eval", "ort", "-m", short_context_dir, "--probes", root, "-o", tmp_path / "run", "--forms", "qa"),
        "context",
        roots=(tmp_path, short_context_dir),
    )


@pytest.fixture(scope="module")
def baselines(micro_model, micro_world, tmp_path_factory):
    """Real baseline runs of `eval ort` and `eval skills`, and the arguments that compare with them."""
    root = tmp_path_factory.mktemp("baselines")
    target = read_records(micro_world / "entities.jsonl")[0]["id"]
    items = write_jsonl(
        root / "items.jsonl", [{"prompt": "Reverse: a b =>", "answer": "b a"}, {"prompt": "12 +", "answer": "34"}]
    )
    commands = {
        "ort": (
            "eval",
            "ort",
            "-m",
            micro_model,
            "--probes",
            micro_world,
            "--targets",
            target,
            "--forms",
            "qa",
            "--limit",
            1,
        ),
        "skills": ("eval", "skills", "-m", micro_model, "--skill", f"s={items}"),
    }
    for name, args in commands.items():
        ok(llmkit(*args, "-o", root / name))
    return root, commands


def _strings(metrics):
    return {k: _strings(v) if isinstance(v, dict) else str(v) for k, v in metrics.items()}


# Hostile input, defect 6: damaged baselines.
@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize("command", ["ort", "skills"])
@pytest.mark.parametrize("damage", ["a-list", "no-metrics", "string-metrics"])
def test_a_damaged_baseline_is_one_line(command, damage, baselines, micro_model, tmp_path):
    root, commands = baselines
    baseline = tmp_path / "baseline"
    shutil.copytree(root / command, baseline)
    results = json.loads((baseline / "results.json").read_text())
    if damage == "a-list":
        results = [1, 2, 3]
    elif damage == "no-metrics":
        del results["metrics"]
    else:
        results["metrics"] = _strings(results["metrics"])
    (baseline / "results.json").write_text(json.dumps(results))
    refused(
        (*commands[command], "--baseline", baseline, "-o", tmp_path / "run"), "baseline", roots=(tmp_path, micro_model)
    )
