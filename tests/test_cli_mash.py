"""`llmkit data mash`, `llmkit train mash` and `llmkit eval abstention --mode search` from the
command line on the micro world: the traces, a short warm start + GRPO run with its curve, plot
and resume, the search-mode metrics against direct computations, and bad input."""

import json

import pytest

from conftest import llmkit, ok, refused, write_jsonl
from llmkit.data import read_records
from llmkit.evals.abstention import summarize_search

SHORT_RUN = (
    "--top-k", "1", "--warm-start-epochs", "1", "--warm-start-lr", "1e-3", "--max-steps", "2",
    "--batch-size", "1", "--num-generations", "2", "--segment-tokens", "12", "--lr", "1e-5",
)  # fmt: skip


@pytest.fixture(scope="module")
def mash_data(micro_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("mash") / "data"
    ok(llmkit("data", "mash", "--world", micro_world, "--out", out, "--top-k", "1"))
    return out


@pytest.fixture(scope="module")
def trained(mash_data, micro_model, micro_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("mash") / "model"
    corpus = mash_data / "corpus.jsonl"
    ok(llmkit("train", "mash", "-m", micro_model, "--data", mash_data, "--corpus", corpus, "--out", out, *SHORT_RUN))
    return out


def test_world_traces_split_questions_and_decompose_two_hop_ones(mash_data, micro_world):
    traces = read_records(mash_data / "train.jsonl")
    questions, test = read_records(mash_data / "questions.jsonl"), read_records(mash_data / "test.jsonl")
    summary = json.loads((mash_data / "mash.json").read_text())
    world_questions = read_records(micro_world / "search_questions.jsonl")
    assert len(questions) + len(test) == len(world_questions)
    assert {q["id"] for q in questions}.isdisjoint(q["id"] for q in test)
    assert len(traces) == len(questions) == summary["num_questions"]
    assert summary["traces"]["direct"] == round(0.332 * len(traces))
    by_id = {q["id"]: q for q in questions}
    for trace in traces:
        question = by_id[trace["id"]]
        assert trace["prompt"] == f"Question: {question['question']}\nAnswer:"
        assert trace["searches"] == (0 if trace["direct"] else question["hops"])
        documents = [text for text, by_policy in trace["segments"] if not by_policy]
        # Each search, the person's name and the fact's word, finds the sentence that states it.
        if documents:
            name = question["queries"][0].rsplit(" ", 1)[0]
            assert documents[0].startswith(f"\n<document>\n(Title: {name}) {name} ")
            assert question["answers"][0] in documents[-1]


def test_train_writes_the_model_the_curve_and_the_plot(trained):
    record = json.loads((trained / "train.json").read_text())
    assert record["steps"] == 2 and [p["step"] for p in record["curve"]] == [1, 2]
    for point in record["curve"]:
        assert 0 <= point["reward"] <= 1 and 0 <= point["search_rate"] <= 1
    assert record["warm_start_run"]["steps"] > 0
    assert (trained / "reward_curve.png").read_bytes().startswith(b"\x89PNG")
    tokenizer = json.loads((trained / "tokenizer.json").read_text())
    assert {"<search>", "</search>", "<answer>", "</answer>"} <= {t["content"] for t in tokenizer["added_tokens"]}


def test_search_mode_metrics_equal_direct_computations(trained, mash_data, micro_model, tmp_path):
    out = tmp_path / "eval"
    corpus = mash_data / "corpus.jsonl"
    args = ("eval", "abstention", "--mode", "search", "-m", trained, "--data", mash_data / "test.jsonl")
    ok(llmkit(*args, "--corpus", corpus, "--top-k", "1", "--pretrained", micro_model, "--samples", "4",
              "--limit", "4", "-o", out))  # fmt: skip
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    samples = [s for s in read_records(out / "samples.jsonl") if "model" not in s]
    base = [s for s in read_records(out / "samples.jsonl") if s.get("model") == "pretrained"]
    assert len(samples) == len(base) == metrics["num_questions"]
    direct = [s for s in samples if s["searches"] == 0]
    assert metrics["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / len(samples))
    assert metrics["parametric_accuracy"] == pytest.approx(sum(s["correct"] for s in direct) / len(samples))
    assert metrics["tool_productivity"] == pytest.approx(
        sum(s["correct"] / (1 + s["searches"]) for s in samples) / len(samples)
    )
    assert metrics["abstention_rate"] == pytest.approx(sum(s["searches"] > 0 for s in samples) / len(samples))
    for s in samples:
        assert s["abstained"] == (s["searches"] > 0)
        assert s["trajectory"].count("</search>") >= s["searches"]  # each search closed, by the model or the tool
    assert metrics["hops"]["1"] == summarize_search([s for s in samples if s["hops"] == 1])
    # Answerability: each question's bucket from the base model's 4 samples.
    buckets = metrics["pretrained"]["answerability"]["buckets"]
    assert sum(b["questions"] for b in buckets.values()) == len(samples)
    assert all(0 <= b["knowns"] <= 4 for b in base)
    shares = {s["id"]: s["abstained"] for s in samples}
    never = [shares[b["id"]] for b in base if b["knowns"] == 0]
    assert metrics["pretrained"]["answerability"]["abs_0"] == (sum(never) / len(never) if never else None)


def test_resumed_run_skips_the_finished_warm_start(mash_data, micro_model, micro_world, tmp_path, monkeypatch):
    """A run interrupted after its warm start leaves the warm-started model in its checkpoint
    directory; the rerun of the same command loads it (no supervised step runs) and trains GRPO."""
    import llmkit.methods.mash as mash
    import llmkit.training as training

    out, checkpoints = tmp_path / "m", tmp_path / "ck"
    args = ("train", "mash", "-m", micro_model, "--data", mash_data, "--corpus", mash_data / "corpus.jsonl",
            "--out", out, "--checkpoint-dir", checkpoints, *SHORT_RUN)  # fmt: skip

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(mash, "grpo_trainer", interrupted)
        assert llmkit(*args).exit_code != 0
    assert (checkpoints / mash.WARM_STARTED / training.COMPLETE_FILE).is_file() and not out.exists()
    saved = json.loads((checkpoints / mash.WARM_STARTED / "warm_start.json").read_text())

    def no_tuning(*a, **k):
        raise AssertionError("the warm start ran again")

    monkeypatch.setattr(training, "build_sft_trainer", no_tuning)
    ok(llmkit(*args))
    record = json.loads((out / "train.json").read_text())
    assert record["warm_start_run"] == saved and record["steps"] == 2
    assert not checkpoints.exists()


class TestBadInput:
    def test_empty_corpus(self, mash_data, micro_model, tmp_path):
        empty = tmp_path / "empty.jsonl"
        empty.write_text("")
        refused(
            ("train", "mash", "-m", micro_model, "--data", mash_data, "--corpus", empty, "--out", tmp_path / "m"),
            "no records",
            roots=[tmp_path, mash_data],
        )
        refused(
            ("data", "mash", "--data", write_jsonl(tmp_path / "q.jsonl", [{"question": "q?", "answer": "a"}]),
             "--corpus", empty, "--out", tmp_path / "d"),
            "no records",
            roots=[tmp_path],
        )  # fmt: skip

    def test_questions_without_gold_answers(self, micro_model, micro_world, tmp_path):
        questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Where was Ada born?"}])
        corpus = micro_world / "corpus.jsonl"
        refused(
            ("data", "mash", "--data", questions, "--corpus", corpus, "--out", tmp_path / "d"),
            "no answer",
            roots=[tmp_path],
        )
        refused(
            ("eval", "abstention", "--mode", "search", "-m", micro_model, "--data", questions, "--corpus", corpus,
             "-o", tmp_path / "e"),
            "no answer",
            roots=[tmp_path],
        )  # fmt: skip

    def test_queries_that_are_not_a_list_of_strings(self, micro_world, tmp_path):
        questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Where?", "answer": "Zako", "queries": "Ada"}])
        refused(
            ("data", "mash", "--data", questions, "--corpus", micro_world / "corpus.jsonl", "--out", tmp_path / "d",
             "--direct-share", "0"),
            "'queries' must be a list of non-empty strings",
            roots=[tmp_path],
        )  # fmt: skip

    @pytest.mark.parametrize(
        ("option", "value", "message"),
        [
            ("--lam", "0", "--lam must be in (0, 1]"),
            ("--lam", "1.2", "--lam must be in (0, 1]"),
            ("--num-generations", "1", "--num-generations must be at least 2"),
            ("--penalty", "cubic", "unknown --penalty 'cubic'"),
        ],
    )
    def test_bad_settings(self, option, value, message, mash_data, micro_model, micro_world, tmp_path):
        refused(
            ("train", "mash", "-m", micro_model, "--data", mash_data, "--corpus", micro_world / "corpus.jsonl",
             "--out", tmp_path / "m", option, value),
            message,
            roots=[tmp_path, mash_data],
        )  # fmt: skip

    def test_data_directory_without_traces(self, micro_model, micro_world, tmp_path):
        refused(
            ("train", "mash", "-m", micro_model, "--data", tmp_path, "--corpus", micro_world / "corpus.jsonl",
             "--out", tmp_path / "m"),
            "llmkit data mash",
            roots=[tmp_path],
        )  # fmt: skip

    def test_search_mode_needs_a_corpus(self, micro_model, micro_world, tmp_path):
        refused(
            ("eval", "abstention", "--mode", "search", "-m", micro_model, "--world", micro_world, "-o", tmp_path / "e"),
            "--mode search needs --corpus",
            roots=[tmp_path],
        )
