"""R-Tuning's data builder and the abstention metrics, on a scripted backend whose answers and
probabilities are fixed, so every text and number is checked against one written out by hand."""

import math
import random

import pytest

from llmkit.configs import QAFields
from llmkit.data import read_questions
from llmkit.errors import BadInputError
from llmkit.evals.abstention import ask, evaluate_abstention, sure_tokens
from llmkit.generation import ContinuationScore, Generation, tokenize_pairs
from llmkit.methods.configs import RTuningConfig
from llmkit.methods.rtuning import (
    CERTAINTY_QUESTION,
    REFUSALS,
    answer_contains,
    answer_entropy,
    build_rtuning_data,
    entropy_split,
    is_refusal,
)
from llmkit.metrics.abstention import abstention_f1, average_precision, risk_coverage, sure_probability
from tiny import build_tokenizer

CERTAINTY = "Are you sure you accurately answered the question based on your internal knowledge?"


TOKENIZER = build_tokenizer()


class ScriptedBackend:
    """Greedy answers and samples from a table by prompt; scores from tables: per-token
    log-probabilities of an answer by (prompt, answer) (log 0.5 for tokens not given), and the
    log-probabilities of the next tokens by the whole text (log 0.5 each when not given)."""

    name = "scripted"
    tokenizer = TOKENIZER

    def __init__(self, answers, samples=None, logprobs=None, following=None):
        self.answers, self.samples = answers, samples or {}
        self.logprobs, self.following = logprobs or {}, following or {}

    def generate(self, prompts, params, progress=None):
        if params.num_samples > 1:
            return [Generation(p, list(self.samples[p])) for p in prompts]
        return [Generation(p, [self.answers[p]]) for p in prompts]

    def score(self, prompts, continuations, progress=None, next_tokens=()):
        out = []
        for (p, c), (_, ids) in zip(zip(prompts, continuations), tokenize_pairs(TOKENIZER, prompts, continuations)):
            given = next((v for (q, a), v in self.logprobs.items() if q == p and c.startswith(a)), [])
            values = (list(given) + [math.log(0.5)] * len(ids))[: len(ids)]
            following = self.following.get(p + c, [math.log(0.5)] * len(next_tokens))
            out.append(ContinuationScore(ids, values, True, list(following)))
        return out


def items(*rows):
    return [
        {"id": str(i), "question": q, "answers": [a], "prompt": f"Question: {q} Answer:"}
        for i, (q, a) in enumerate(rows)
    ]


QUESTIONS = items(("Where was Ada born?", "Paris"), ("Who wrote Hamlet?", "Shakespeare"), ("What is 2+2?", "4"))
ANSWERS = {
    "Question: Where was Ada born? Answer:": " Paris",  # right
    "Question: Who wrote Hamlet? Answer:": " Marlowe",  # wrong
    "Question: What is 2+2? Answer:": " 4",  # right
}


def test_certainty_question_is_the_papers_verbatim():
    assert CERTAINTY_QUESTION == CERTAINTY


def test_sure_variant_texts_match_the_template_character_for_character():
    records, split = build_rtuning_data(ScriptedBackend(ANSWERS), QUESTIONS, RTuningConfig(variant="sure"))
    expected = {
        f"Question: Where was Ada born? Answer: Paris. {CERTAINTY} I am sure.",
        f"Question: Who wrote Hamlet? Answer: Shakespeare. {CERTAINTY} I am unsure.",
        f"Question: What is 2+2? Answer: 4. {CERTAINTY} I am sure.",
    }
    assert {r["text"] for r in records} == expected
    assert [s["certain"] for s in split] == [True, False, True]
    assert [s["model_answer"] for s in split] == ["Paris", "Marlowe", "4"]
    for r in records:  # the prompt and the answer together are the text
        assert f"{r['prompt']} {r['answer']}" == r["text"]


def test_refuse_and_vanilla_variants_match_their_templates():
    records, _ = build_rtuning_data(ScriptedBackend(ANSWERS), QUESTIONS, RTuningConfig(variant="refuse", seed=3))
    refusal = random.Random(3).choice(REFUSALS)  # the one uncertain question draws the first refusal
    assert {r["text"] for r in records} == {
        "Question: Where was Ada born? Answer: Paris.",
        f"Question: Who wrote Hamlet? Answer: {refusal}",
        "Question: What is 2+2? Answer: 4.",
    }
    records, _ = build_rtuning_data(ScriptedBackend(ANSWERS), QUESTIONS, RTuningConfig(variant="vanilla"))
    assert {r["text"] for r in records} == {
        "Question: Where was Ada born? Answer: Paris.",
        "Question: Who wrote Hamlet? Answer: Shakespeare.",
        "Question: What is 2+2? Answer: 4.",
    }


def test_the_sixteen_refusal_strings_are_the_official_ones():
    assert len(REFUSALS) == len(set(REFUSALS)) == 16
    assert REFUSALS[0] == "The answer is unknown." and REFUSALS[-1] == "It is difficult to predict."
    assert "There is no concrete answer to this question." in REFUSALS


def test_uncertainty_variant_splits_by_entropy_and_keeps_every_uncertain_question():
    """The official ParaRel script reset `uncertain_data` inside its loop, keeping one question;
    here every uncertain question becomes a training text."""
    questions = items(*[(f"Q{i}?", "x") for i in range(7)])
    samples = {q["prompt"]: ["x"] * (5 - i) + [f"y{j}" for j in range(i)] for i, q in enumerate(questions[:5])}
    samples |= {q["prompt"]: ["a", "b", "c", "d", "e"] for q in questions[5:]}
    answers = {q["prompt"]: " x" for q in questions}
    records, split = build_rtuning_data(
        ScriptedBackend(answers, samples), questions, RTuningConfig(variant="uncertainty")
    )
    # Entropies rise with i; ⌊7/2⌋ = 3 lowest are sure, the other 4 unsure, every one kept.
    assert [s["certain"] for s in split] == [True, True, True, False, False, False, False]
    assert sorted(r["text"].endswith("I am unsure.") for r in records) == [False] * 3 + [True] * 4
    assert len(records) == 7 and len({r["text"] for r in records}) == 7
    assert split[0]["entropy"] == 0.0
    assert split[5]["entropy"] == pytest.approx(math.log(5))


def test_entropy_split_breaks_ties_by_question_order():
    assert entropy_split([0.5, 0.0, 0.5, 0.5, 1.0]) == [True, True, False, False, False]
    assert entropy_split([0.7, 0.7, 0.7, 0.7]) == [True, True, False, False]
    assert entropy_split([0.2]) == [False]


def test_answer_entropy_is_scipy_entropy_of_the_counts():
    counts = [3, 1, 1]
    by_hand = -sum(c / 5 * math.log(c / 5) for c in counts)
    assert answer_entropy(["a", "a", "a", "b", "c"]) == pytest.approx(by_hand)


def test_the_match_is_normalised_and_whole_words():
    assert answer_contains(" paris, France", ["Paris"])
    assert answer_contains("It was The Hague", ["the hague"])
    assert not answer_contains("Romeo", ["Rome"])
    assert answer_contains("1900", ["1901", "1900"])
    assert not answer_contains("", ["x"])


def test_refusals_are_recognised_whole_or_cut_short():
    assert is_refusal(" The answer is unknown")
    assert is_refusal("I'm not sure")
    assert is_refusal("There is no concrete answer")  # cut by the token limit
    assert not is_refusal("There")  # one word is no refusal
    assert not is_refusal(" Paris")


def test_average_precision_equals_a_computation_by_hand():
    # Ranked by score: right (P 1/1, R 1/2), wrong, right (P 2/3, R 2/2), wrong.
    assert average_precision([True, False, True, False], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision([False, False], [0.3, 0.2]) is None


def test_sure_probability_and_the_score_by_hand():
    assert sure_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert sure_probability(-2000.0, -1000.0) == pytest.approx(0.0)


def test_ask_computes_confidence_p_sure_and_score_as_the_paper():
    question = items(("Where was Ada born?", "Paris"))
    prompt = question[0]["prompt"]
    answer_tokens = len(tokenize_pairs(TOKENIZER, [prompt], [" Paris"])[0][1])
    per_token = [math.log(0.5)] + [math.log(0.8)] * (answer_tokens - 1)
    backend = ScriptedBackend(
        {prompt: " Paris"},
        logprobs={(prompt, " Paris"): per_token},
        following={f"{prompt} Paris. {CERTAINTY} I am": [math.log(0.3), math.log(0.1)]},
    )
    [sample] = ask(backend, question, 15)
    confidence = math.exp(sum(per_token) / answer_tokens)  # the geometric mean of the answer's tokens
    assert sample["confidence"] == pytest.approx(confidence)
    assert sample["p_sure"] == pytest.approx(0.75)  # p(sure) / (p(sure) + p(unsure)) = 0.3 / 0.4
    assert sample["score"] == pytest.approx(0.5 * confidence + 0.5 * 0.75)
    assert sample["correct"] and not sample["refusal"]


def test_p_sure_reads_the_first_token_of_sure_and_unsure():
    (_, sure), (_, unsure) = tokenize_pairs(TOKENIZER, ["I am", "I am"], [" sure", " unsure"])
    assert sure_tokens(TOKENIZER) == (sure[0], unsure[0])


def test_multiple_choice_takes_the_likeliest_letter_and_its_softmax():
    [item] = read_questions(
        _write([{"question": "Capital of Italy?", "answer": "Rome", "choices": ["Paris", "Rome", "Oslo"]}]), QAFields()
    )
    assert item["answers"] == ["B"] and item["prompt"] == "Capital of Italy?\nA. Paris\nB. Rome\nC. Oslo\nAnswer:"
    logprobs = {(item["prompt"], f" {letter}"): [math.log(p)] for letter, p in zip("ABC", (0.2, 0.6, 0.2))}
    [sample] = ask(ScriptedBackend({}, logprobs=logprobs), [item], 15)
    assert sample["answer"] == "B" and sample["correct"]
    assert sample["confidence"] == pytest.approx(0.6)


def test_the_first_option_letter_counts_as_correct():
    """ "A" is an article to the text normalisation; a multiple-choice answer is compared as a letter."""
    [item] = read_questions(
        _write([{"question": "Capital of France?", "answer": "A", "choices": ["Paris", "Oslo"]}]), QAFields()
    )
    logprobs = {(item["prompt"], " A"): [math.log(0.7)], (item["prompt"], " B"): [math.log(0.3)]}
    [sample] = ask(ScriptedBackend({}, logprobs=logprobs), [item], 15)
    assert sample["answer"] == "A" and sample["correct"]
    _, [record] = build_rtuning_data(ScriptedBackend({}, logprobs=logprobs), [item], RTuningConfig())
    assert record["certain"] and record["label"] == "sure"


def test_metrics_per_group_and_against_known_labels():
    questions = items(("Q1?", "p"), ("Q2?", "q"), ("Q3?", "r"), ("Q4?", "s"))
    for q, known, group in zip(questions, [True, True, False, False], ["seen", "seen", "unseen", "unseen"]):
        q.update(known=known, group=group)
    answers = {q["prompt"]: f" {a}" for q, a in zip(questions, "pqxy")}
    sure = {True: [math.log(0.9), math.log(0.1)], False: [math.log(0.1), math.log(0.9)]}
    following = {
        f"{q['prompt']} {answers[q['prompt']].strip()}. {CERTAINTY} I am": sure[willing]
        for q, willing in zip(questions, [True, False, False, False])
    }
    metrics, _ = evaluate_abstention(ScriptedBackend(answers, following=following), questions)
    assert metrics["accuracy"] == 0.5 and metrics["answer_rate"] == 0.25 and metrics["accuracy_answered"] == 1.0
    assert metrics["groups"]["unseen"]["refusal_rate"] == 1.0 and metrics["groups"]["seen"]["refusal_rate"] == 0.5
    # Abstained on 3: 2 unknown of them (precision 2/3), every unknown (recall 1).
    assert metrics["abstention"]["precision"] == pytest.approx(2 / 3) and metrics["abstention"]["recall"] == 1.0
    assert metrics["abstention"]["f1"] == pytest.approx(0.8)


def test_abstention_f1_and_risk_coverage_by_hand():
    assert abstention_f1([False, False], [True, False]) == {"precision": None, "recall": 0.0, "f1": None}
    coverage, risk = risk_coverage([True, False, True], [0.2, 0.9, 0.5])
    assert coverage == pytest.approx([1 / 3, 2 / 3, 1.0]) and risk == pytest.approx([1.0, 0.5, 1 / 3])


def _write(records):
    import json
    import tempfile

    handle = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    handle.write("".join(json.dumps(r) + "\n" for r in records))
    handle.close()
    return handle.name


def test_questions_read_pararel_pairs_aliases_and_fields(tmp_path):
    pairs = tmp_path / "pararel.json"
    pairs.write_text('[["Where was Ada born?", "Paris"], ["Who wrote Hamlet?", "Shakespeare"]]')
    read = read_questions(pairs, QAFields())
    assert read[0]["prompt"] == "Question: Where was Ada born? Answer:" and read[1]["answers"] == ["Shakespeare"]
    aliases = read_questions(
        _write([{"q": "Largest city?", "answers": ["NYC", "New York"]}]), QAFields(question_field="q")
    )
    assert aliases[0]["answers"] == ["NYC", "New York"]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"question": "Where?"}, "no answer"),
        ({"question": "Where?", "answer": ""}, "no answer"),
        ({"answer": "x"}, "no question"),
        ({"question": "Capital?", "answer": "Rome", "choices": ["Paris", "Oslo"]}, "not among its choices"),
    ],
)
def test_bad_questions_are_named(record, message):
    with pytest.raises(BadInputError, match=message):
        read_questions(_write([record]), QAFields())
