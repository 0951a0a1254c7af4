"""R-Tuning: refusal-aware instruction tuning (Zhang et al., "R-Tuning: Instructing Large Language
Models to Say 'I Don't Know'", NAACL 2024).

The instruction data D is split by what the *pretrained* model already knows, then tuned on:

1. Ask the pretrained model every question of D: its greedy answer (at most 15 tokens, cut at the
   first "." as the official code does, or at a newline), or for multiple choice the option letter
   with the highest probability.
2. Certain (D1) when a gold answer occurs in the model's answer (for multiple choice: it is the
   gold letter), uncertain (D0) otherwise.
   R-Tuning-U splits without labels instead: k answers sampled at temperature 0.7, their entropy
   u(q) = −Σ_j p_j ln p_j over the counts of identical answers, the lower half (⌊N/2⌋ questions,
   sorted by u) certain.
3. The training text always holds the gold answer (`rtuning_text`):
       R-Tuning    "{prompt} {gold}. Are you sure you accurately answered the question based on
                   your internal knowledge? I am sure."   (D1; "I am unsure." for D0)
       R-Tuning-R  "{prompt} {gold}." (D1), "{prompt} {refusal}" (D0, one of `REFUSALS` at random)
       vanilla     "{prompt} {gold}." (the paper's baseline)
   and the model is tuned on it, the loss on the whole text (LMFlow's text_only, the paper's setup).

Deliberate differences from the official code: the match normalises both texts (lower case, no
punctuation or articles) and needs the gold answer as whole words, where the code tests a raw,
case-sensitive substring (`label in output`, so "Paris" is not found in "paris" and "Rome" is in
"Romeo"); and R-Tuning-U keeps every uncertain question (the ParaRel script's `uncertain_data = []`
inside its loop keeps only the last one).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from llmkit.configs import GenerationParams
from llmkit.data import LETTERS
from llmkit.generation import Backend, Progress
from llmkit.methods.configs import RTuningConfig
from llmkit.metrics.text import normalize_answer
from llmkit.results import group_order

CERTAINTY_QUESTION = "Are you sure you accurately answered the question based on your internal knowledge?"
SURE, UNSURE = "sure", "unsure"
REFUSALS = (
    "The answer is unknown.",
    "The answer is uncertain.",
    "The answer is unclear.",
    "It is not known.",
    "I do not know the answer.",
    "I'm not sure.",
    "There is no definitive answer.",
    "There is much debate.",
    "There is no concrete answer to this question.",
    "It is impossible to answer.",
    "There is no known case.",
    "There is no public information available.",
    "There is no scientific evidence.",
    "There is no right answer.",
    "It is impossible to know.",
    "It is difficult to predict.",
)
"""R-Tuning-R's refusals, verbatim from the official code."""
ANSWER_STOP = (".", "\n")
"""An answer ends at the first "." (the official code's cut) or newline (where a world answer ends)."""


# ---- the templates --------------------------------------------------------------------------------


def certainty_prompt(prompt: str, answer: str) -> str:
    """The text after which P(sure) is read: "{prompt} {answer}. {CERTAINTY_QUESTION} I am"."""
    return f"{prompt} {answer.strip()}. {CERTAINTY_QUESTION} I am"


def rtuning_text(prompt: str, gold: str, label: str) -> str:
    """The training text for one question: `label` is "sure" or "unsure" (R-Tuning), "refuse:<refusal>"
    (R-Tuning-R's D0) or "answer" (R-Tuning-R's D1, vanilla)."""
    if label in (SURE, UNSURE):
        return f"{certainty_prompt(prompt, gold)} {label}."
    if label.startswith("refuse:"):
        return f"{prompt} {label.removeprefix('refuse:')}"
    return f"{prompt} {gold}."


def is_refusal(answer: str) -> bool:
    """Whether an answer (cut at its first ".") is one of `REFUSALS`, or the start of one of at
    least two words that the token limit cut short."""
    said = normalize_answer(answer)
    if not said:
        return False
    return any(said == r or (len(said.split()) >= 2 and r.startswith(said + " ")) for r in _NORMALISED_REFUSALS)


_NORMALISED_REFUSALS = tuple(normalize_answer(r) for r in REFUSALS)


def answer_contains(answer: str, golds: Sequence[str]) -> bool:
    """Whether a gold answer (any alias) occurs in `answer` as whole words, both normalised."""
    said = f" {normalize_answer(answer)} "
    return any(f" {g} " in said for g in (normalize_answer(gold) for gold in golds) if g)


def is_correct(item: Mapping[str, Any], answer: str) -> bool:
    """A multiple-choice answer is its gold letter (compared as written: normalising would drop
    "A" as an article); a free answer contains a gold answer (`answer_contains`)."""
    if item.get("choices"):
        return answer.strip() in item["answers"]
    return answer_contains(answer, item["answers"])


# ---- asking the pretrained model ----------------------------------------------------------------


def greedy_answers(
    backend: Backend, items: Sequence[Mapping[str, Any]], max_new_tokens: int, progress: Progress | None = None
) -> list[tuple[str, float | None]]:
    """The model's answer to each item: greedy text up to `ANSWER_STOP` (spaces kept, as the model
    wrote it), or for a multiple-choice item the option letter of highest probability, with that
    probability (`option_probabilities`; None for free text)."""
    answers: list[tuple[str, float | None]] = [("", None)] * len(items)
    free = [i for i, item in enumerate(items) if not item.get("choices")]
    params = GenerationParams(max_new_tokens=max_new_tokens, stop=ANSWER_STOP)
    for i, generation in zip(free, backend.generate([items[i]["prompt"] for i in free], params, progress)):
        answers[i] = (generation.texts[0], None)
    chosen = [i for i, item in enumerate(items) if item.get("choices")]
    for i, (letter, p) in zip(chosen, option_probabilities(backend, [items[i] for i in chosen])):
        answers[i] = (f" {letter}", p)
    return answers


def option_probabilities(backend: Backend, items: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
    """For each multiple-choice item, the option letter the model puts first and its probability
    under a softmax over the option letters' first tokens (the paper's conf for multiple choice)."""
    pairs = [(item["prompt"], f" {letter}") for item in items for letter in LETTERS[: len(item["choices"])]]
    scores = backend.score([p for p, _ in pairs], [c for _, c in pairs]) if pairs else []
    out, start = [], 0
    for item in items:
        n = len(item["choices"])
        first = [s.logprobs[0] for s in scores[start : start + n]]
        start += n
        best = max(range(n), key=first.__getitem__)
        normaliser = math.log(sum(math.exp(lp - first[best]) for lp in first)) + first[best]
        out.append((LETTERS[best], math.exp(first[best] - normaliser)))
    return out


def sampled_answers(
    backend: Backend, items: Sequence[Mapping[str, Any]], config: RTuningConfig, progress: Progress | None = None
) -> list[list[str]]:
    """R-Tuning-U's k answers per item, sampled at the config's temperature (one token for multiple choice)."""
    out: list[list[str]] = [[] for _ in items]
    for choice in (False, True):
        chosen = [i for i, item in enumerate(items) if bool(item.get("choices")) == choice]
        if not chosen:
            continue
        params = GenerationParams(
            max_new_tokens=1 if choice else config.max_new_tokens,
            temperature=config.temperature,
            num_samples=config.samples,
            stop=() if choice else ANSWER_STOP,
            seed=config.seed,
        )
        for i, generation in zip(chosen, backend.generate([items[i]["prompt"] for i in chosen], params, progress)):
            out[i] = [text.strip() for text in generation.texts]
    return out


def answer_entropy(answers: Sequence[str]) -> float:
    """u(q) = −Σ_j p_j ln p_j, p_j the share of the answers equal to the j-th distinct one
    (`scipy.stats.entropy` of the counts, as the official code computes it)."""
    from scipy.stats import entropy

    return float(entropy(list(Counter(answers).values())))


def entropy_split(entropies: Sequence[float]) -> list[bool]:
    """Certain (True) for the ⌊N/2⌋ questions of lowest entropy; ties are broken by the order of
    the questions, so the split is deterministic."""
    order = sorted(range(len(entropies)), key=lambda i: (entropies[i], i))
    certain = [False] * len(entropies)
    for i in order[: len(entropies) // 2]:
        certain[i] = True
    return certain


# ---- the training data --------------------------------------------------------------------------


def training_labels(variant: str, certain: Sequence[bool], rng: random.Random) -> list[str]:
    """Each question's label for `rtuning_text`: R-Tuning's and R-Tuning-U's sure/unsure,
    R-Tuning-R's answer or a refusal drawn uniformly, vanilla's answer."""
    if variant in ("sure", "uncertainty"):
        return [SURE if c else UNSURE for c in certain]
    if variant == "refuse":
        return ["answer" if c else f"refuse:{rng.choice(REFUSALS)}" for c in certain]
    return ["answer"] * len(certain)


def build_rtuning_data(
    backend: Backend, items: Sequence[Mapping[str, Any]], config: RTuningConfig, progress: Progress | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, split records). Training records are shuffled (seeded), each with `text`
    (what the loss covers by default) and its `prompt` and `answer` (the rest of the text, for a
    loss on the answer only). Split records keep the items' order: the model's greedy answer,
    whether it was right (`certain`; for R-Tuning-U the entropy split, with `entropy` and the
    samples), the label, and every field of the item."""
    answers = [answer for answer, _ in greedy_answers(backend, items, config.max_new_tokens, progress)]
    correct = [is_correct(item, a) for a, item in zip(answers, items)]
    split = [{**item, "model_answer": a.strip(), "correct": c} for item, a, c in zip(items, answers, correct)]
    certain = list(correct)
    if config.variant == "uncertainty":
        samples = sampled_answers(backend, items, config)
        entropies = [answer_entropy(s) for s in samples]
        certain = entropy_split(entropies)
        for record, s, u in zip(split, samples, entropies):
            record.update(samples=s, entropy=u)
    rng = random.Random(config.seed)
    labels = training_labels(config.variant, certain, rng)
    records = []
    for item, record, c, label in zip(items, split, certain, labels):
        record.update(certain=c, label=label)
        text = rtuning_text(item["prompt"], item["answers"][0], label)
        records.append({"text": text, "prompt": item["prompt"], "answer": text[len(item["prompt"]) :].strip()})
    rng.shuffle(records)
    return records, split


def split_table(split: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """The certain/uncertain split against the truth: per group (a world's exposure), how many
    questions fell on each side, and how many of those the model answered correctly."""
    table: dict[str, dict[str, int]] = {}
    for record in split:
        row = table.setdefault(str(record.get("group", "all")), {"certain": 0, "uncertain": 0, "correct": 0})
        row["certain" if record["certain"] else "uncertain"] += 1
        row["correct"] += bool(record["correct"])
    return {group: table[group] for group in group_order(table)}
