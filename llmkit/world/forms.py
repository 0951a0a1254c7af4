"""Every fact rendered in the forms ORT evaluates: question-answer, cloze (fill in the blank),
multiple choice (A-D, shuffled options), true/false, and character by character.

A probe is a prompt and the answer that should follow it; greedy generation is stopped at the
first newline and compared to the answer. The character form spells the answer with spaces
("V e l m o r a") rather than ORT's one character per line, so that every form stops the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FORMS = ("qa", "cloze", "mc", "tf", "char")
LETTERS = "ABCD"

QUESTIONS = {
    "birthplace": "Where was {name} born?",
    "birth_year": "In which year was {name} born?",
    "occupation": "What was the occupation of {name}?",
    "employer": "Which company did {name} work for?",
    "spouse": "Who was {name} married to?",
}

# Paraphrases never used in pretraining: held-out questions for hallucination and abstention.
HELDOUT_QUESTIONS = {
    "birthplace": "What is the birthplace of {name}?",
    "birth_year": "When was {name} born?",
    "occupation": "What job did {name} have?",
    "employer": "Who employed {name}?",
    "spouse": "Who is the spouse of {name}?",
}

STATEMENTS = {
    "birthplace": "{name} was born in {value}.",
    "birth_year": "{name} was born in the year {value}.",
    "occupation": "{name} worked as a {value}.",
    "employer": "{name} worked for {value}.",
    "spouse": "{name} was married to {value}.",
}


@dataclass(frozen=True)
class Probe:
    form: str
    prompt: str
    answer: str


def qa_text(question: str, answer: str) -> str:
    """The question-answer layout shared by pretraining text and probes."""
    return f"Question: {question}\nAnswer: {answer}"


def render(name: str, attribute: str, value: str, form: str, distractors: list[str], rng: random.Random) -> Probe:
    """The probe for one fact in one form. `distractors` are other values of the same attribute
    (up to three are used for multiple choice, one for a false true/false statement)."""
    question = QUESTIONS[attribute].format(name=name)
    if form == "qa":
        return Probe(form, qa_text(question, "").rstrip(), value)
    if form == "cloze":
        blank = STATEMENTS[attribute].format(name=name, value="___")
        return Probe(form, f"Fill in the blank: {blank}\nAnswer:", value)
    if form == "mc":
        options = [value, *rng.sample(distractors, min(3, len(distractors)))]
        rng.shuffle(options)
        listed = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options))
        return Probe(form, f"Question: {question}\n{listed}\nAnswer:", LETTERS[options.index(value)])
    if form == "tf":
        truthful = rng.random() < 0.5 or not distractors
        stated = value if truthful else rng.choice(distractors)
        statement = STATEMENTS[attribute].format(name=name, value=stated)
        return Probe(form, f"True or false: {statement}\nAnswer:", "True" if truthful else "False")
    if form == "char":
        return Probe(form, f"Question: {question} Spell the answer.\nAnswer:", " ".join(value.replace(" ", "")))
    raise ValueError(f"unknown form {form!r}; forms are {', '.join(FORMS)}")
