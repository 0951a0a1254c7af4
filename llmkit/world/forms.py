"""Every fact rendered in the forms ORT evaluates: question-answer, cloze (fill in the blank),
multiple choice (A-D, shuffled options), true/false, and character by character.

A probe is a prompt and the answer that should follow it; greedy generation is stopped at the
first newline and compared to the answer. The character form spells the answer with spaces
("V e l m o r a") rather than ORT's one character per line, so that every form stops the same way.

Questions and statements come in many phrasings. `STATEMENTS` phrase the biographies (and cloze
and true/false); `QUESTIONS` the question sheets. Each has a `HELDOUT_` counterpart that never
occurs in pretraining, built only from words that do: a model that stores a fact about the entity,
rather than a sentence, answers those too (Physics of Language Models, Part 3.1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FORMS = ("qa", "cloze", "mc", "tf", "char")
LETTERS = "ABCD"
TEMPLATE_KINDS = ("trained", "heldout")


def phrasing(probe: dict) -> str:
    """A probe's template kind; a first-edition world's probes have none and were all trained."""
    return probe.get("template", "trained")


STATEMENTS = {
    "birthplace": (
        "{name} was born in {value}.",
        "{name} is a native of {value}.",
        "The birthplace of {name} is {value}.",
        "{name} was born in the city of {value}.",
        "{name} came into the world in {value}.",
        "{name} grew up in {value}, the city of birth.",
    ),
    "birth_year": (
        "{name} was born in the year {value}.",
        "The birth year of {name} is {value}.",
        "{name} came into the world in the year {value}.",
        "The year of birth of {name} is {value}.",
        "{name} was born in {value}.",
        "{name} has a birth year of {value}.",
    ),
    "occupation": (
        "{name} worked as a {value}.",
        "By profession, {name} was a {value}.",
        "{name} earned a living as a {value}.",
        "The occupation of {name} was {value}.",
        "{name} had a job as a {value}.",
        "{name} spent a career as a {value}.",
    ),
    "employer": (
        "{name} was employed by {value}.",
        "{name} worked for {value}.",
        "For many years {name} worked at {value}.",
        "The employer of {name} was {value}.",
        "{name} had a job at the company {value}.",
        "{name} spent a career at {value}.",
    ),
    "spouse": (
        "{name} was married to {value}.",
        "{name} married {value}.",
        "The spouse of {name} was {value}.",
        "{name} had a wife or husband named {value}.",
        "{name} shared a life with the spouse {value}.",
        "{name} was the spouse of {value}.",
    ),
}
HELDOUT_STATEMENTS = {
    "birthplace": ("The city of birth of {name} is {value}.", "{name} was a native of the city of {value}."),
    "birth_year": ("{name} has the birth year {value}.", "The year {name} was born is {value}."),
    "occupation": ("{name} had a career as a {value}.", "The job of {name} was {value}."),
    "employer": ("{name} had a career at the company {value}.", "The company of {name} was {value}."),
    "spouse": ("The wife or husband of {name} was {value}.", "{name} had a spouse named {value}."),
}

QUESTIONS = {
    "birthplace": (
        "Where was {name} born?",
        "What is the birthplace of {name}?",
        "In which city was {name} born?",
        "Which city is {name} a native of?",
        "Where did {name} come into the world?",
        "What was the city of birth of {name}?",
    ),
    "birth_year": (
        "In which year was {name} born?",
        "What is the birth year of {name}?",
        "When was {name} born?",
        "What year was {name} born in?",
        "In what year did {name} come into the world?",
        "What is the year of birth of {name}?",
    ),
    "occupation": (
        "What was the occupation of {name}?",
        "What did {name} work as?",
        "What was the profession of {name}?",
        "What job did {name} have?",
        "How did {name} earn a living?",
        "What career did {name} have?",
    ),
    "employer": (
        "Which company did {name} work for?",
        "Who employed {name}?",
        "Who was the employer of {name}?",
        "Where did {name} work?",
        "At which company did {name} have a job?",
        "Which company was {name} employed by?",
    ),
    "spouse": (
        "Who was {name} married to?",
        "Who was the spouse of {name}?",
        "Whom did {name} marry?",
        "Who is the spouse of {name}?",
        "Who shared a life with {name}?",
        "Who was the wife or husband of {name}?",
    ),
}
HELDOUT_QUESTIONS = {
    "birthplace": ("In what city was {name} born?", "Which city was the birthplace of {name}?"),
    "birth_year": ("In what year was {name} born?", "Which year was the birth year of {name}?"),
    "occupation": ("What was the job of {name}?", "What was the career of {name}?"),
    "employer": ("For which company did {name} work?", "What company employed {name}?"),
    "spouse": ("To whom was {name} married?", "Who was married to {name}?"),
}


@dataclass(frozen=True)
class Probe:
    form: str
    prompt: str
    answer: str


def qa_text(question: str, answer: str) -> str:
    """The question-answer layout shared by pretraining text and probes."""
    return f"Question: {question}\nAnswer: {answer}"


def render(
    name: str,
    attribute: str,
    value: str,
    form: str,
    distractors: list[str],
    rng: random.Random,
    template: str = "trained",
) -> Probe:
    """The probe for one fact in one form, its phrasing drawn from the `template` kind's
    questions or statements. `distractors` are other values of the same attribute (three are
    used for multiple choice, one for a false true/false statement)."""
    heldout = template == "heldout"
    question = rng.choice((HELDOUT_QUESTIONS if heldout else QUESTIONS)[attribute]).format(name=name)
    statement = rng.choice((HELDOUT_STATEMENTS if heldout else STATEMENTS)[attribute])
    if form == "qa":
        return Probe(form, qa_text(question, "").rstrip(), value)
    if form == "cloze":
        return Probe(form, f"Fill in the blank: {statement.format(name=name, value='___')}\nAnswer:", value)
    if form == "mc":
        options = [value, *rng.sample(distractors, min(3, len(distractors)))]
        rng.shuffle(options)
        listed = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options))
        return Probe(form, f"Question: {question}\n{listed}\nAnswer:", LETTERS[options.index(value)])
    if form == "tf":
        truthful = rng.random() < 0.5 or not distractors
        stated = statement.format(name=name, value=value if truthful else rng.choice(distractors))
        return Probe(form, f"True or false: {stated}\nAnswer:", "True" if truthful else "False")
    if form == "char":
        return Probe(form, f"Question: {question} Spell the answer.\nAnswer:", " ".join(value.replace(" ", "")))
    raise ValueError(f"unknown form {form!r}; forms are {', '.join(FORMS)}")
