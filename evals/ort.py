"""ORT ("LLM Unlearning Should Be Form-Independent"): the same facts about a target asked in
every form. The probes, from either of their sources.

Two sources give the same `Probe` records:
- an ORT/RWKU directory, one folder per target (`1_Stephen_King/`) holding `forget_level1.json`
  (fill-in-the-blank), `forget_level2.json` (question answering), `forget_mcp.json` (multiple
  choice), `forget_tf.json` (true/false) and the same four `neighbor_*` files, each a JSON list of
  `{"query", "answer", "level", "type", "subject"}`; the character-level form is derived from the
  fill-in-the-blank and QA probes, as ORT does;
- a world directory (`llmkit world build`): the targets' facts are the forget probes, the facts of
  the other entities in the targets' exposure buckets the neighbour probes.

A probe is scored as `content` (wrapped by a chat template when one is used) + `cue`, followed by
`continuation`: " " + answer, or for the character-level form the answer spelled one character
per line, exactly as ORT scores them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.data import read_records
from llmkit.errors import BadInputError

FORMS = ("qa", "cloze", "mc", "tf", "char")
ROLES = ("forget", "neighbor")

# ORT's files per form (char is derived from cloze and qa) and its prompt templates (eval/eval_ort).
ORT_FILES = {"cloze": "level1", "qa": "level2", "mc": "mcp", "tf": "tf"}
ORT_TEMPLATES = {
    "cloze": "Please complete the blank in the following question.\nQuestion: {}\n",
    "qa": "Please briefly answer the following question.\nQuestion: {}\n",
    "mc": "Please answer the following multiple choice question. Just provide the letter of the correct answer.\n"
    "Question: {}\n",
    # ORT generates true statements but has no template to score them with; this one asks as the others do.
    "tf": "Is the following statement true or false?\nStatement: {}\n",
}
ORT_CHAR_TEMPLATE = "Write the answer character by character, each on a new line.\n{}"
OPTION_LETTER = re.compile(r"^([A-Z])[.)]", re.MULTILINE)


@dataclass(frozen=True)
class Probe:
    target: str
    role: str
    """"forget" (about the target) or "neighbor" (about someone else: knowledge to keep)."""
    form: str
    content: str
    """What the user asks: the part a chat template wraps."""
    cue: str
    """Appended after the (wrapped) content: "Answer:", or "Answer:\\n" before a spelled answer."""
    answer: str
    continuation: str
    """What is scored after the cue."""

    @property
    def prompt(self) -> str:
        """The prompt without a chat template."""
        return self.content + self.cue


def target_folder(index: int, name: str) -> str:
    """ORT's folder name for a target: `<index>_<name with spaces as underscores>`."""
    if "_" in name or "/" in name or "\\" in name:
        raise BadInputError(f"target name {name!r} has an underscore or a slash, which ORT folder names cannot carry")
    return f"{index}_{unicodedata.normalize('NFC', name).replace(' ', '_')}"


def folder_target(folder: str) -> tuple[int, str]:
    """The (index, name) an ORT folder name stands for; NFC, since some file systems hand names
    back decomposed (Beyoncé as e + combining accent)."""
    match = re.fullmatch(r"(\d+)_(.+)", folder)
    if not match:
        raise BadInputError(f"{folder!r} is not an ORT target folder; they are named like 1_Stephen_King")
    return int(match.group(1)), unicodedata.normalize("NFC", match.group(2).replace("_", " "))


def spelled(answer: str) -> str:
    """ORT's character-level answer: one character per line, spaces dropped ("Tokyo" -> "T\\no\\nk\\ny\\no\\n")."""
    return "".join(c + "\n" for c in answer.replace(" ", "") if c != "\n")


def load_ort_dir(path: Path, targets: Sequence[str] | None = None, forms: Sequence[str] = FORMS) -> list[Probe]:
    """Probes of an ORT/RWKU-style directory, for the named targets (all when None)."""
    if not path.is_dir():
        raise BadInputError(f"{path} is not a directory; --probes takes an ORT folder of targets or a world")
    folders = {folder_target(p.name)[1]: p for p in sorted(path.iterdir()) if p.is_dir() and re.match(r"\d+_", p.name)}
    if not folders:
        raise BadInputError(f"{path} has no ORT target folders (named like 1_Stephen_King)")
    chosen = _chosen_targets(targets, folders, path)
    probes = []
    for name in chosen:
        for role in ROLES:
            for form in ("cloze", "qa", "mc", "tf"):
                if form not in forms and not (form in ("cloze", "qa") and "char" in forms):
                    continue
                file = folders[name] / f"{role}_{ORT_FILES[form]}.json"
                for where, record in _read_ort_file(file):
                    query, answer = record["query"], record["answer"]
                    if form == "mc" and answer not in OPTION_LETTER.findall(query):
                        raise BadInputError(
                            f"{where}: multiple-choice answer {answer!r} is not one of its options "
                            f"({', '.join(OPTION_LETTER.findall(query)) or 'none found'}); the answer is the letter"
                        )
                    content = ORT_TEMPLATES[form].format(query)
                    if form in forms:
                        probes.append(Probe(name, role, form, content, "Answer:", answer, " " + answer))
                    if form in ("cloze", "qa") and "char" in forms:
                        char_content = ORT_CHAR_TEMPLATE.format(content)
                        probes.append(Probe(name, role, "char", char_content, "Answer:\n", answer, spelled(answer)))
    return probes


def _read_ort_file(file: Path) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) pairs of one ORT probe file; a missing file holds no probes."""
    if not file.is_file():
        return []
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise BadInputError(f"{file} is not valid JSON ({err}); ORT probe files are JSON lists") from None
    if not isinstance(records, list):
        raise BadInputError(f"{file} holds a JSON {type(records).__name__}; ORT probe files are JSON lists")
    checked = []
    for i, record in enumerate(records):
        where = f"{file}, record {i}"
        for field in ("query", "answer"):
            if not isinstance(record, dict) or not isinstance(record.get(field), str) or not record[field].strip():
                raise BadInputError(f"{where} has no {field!r}; each probe needs a non-empty query and answer")
        checked.append((where, record))
    return checked


def load_world_probes(world_dir: Path, targets: Sequence[str], forms: Sequence[str] = FORMS) -> list[Probe]:
    """Probes of a world: the targets' facts (entity names or ids) are forgotten; the other
    entities of the targets' exposure buckets are the neighbours. True/false probes about a
    target count for forgetting only when true (a forgetful model should stop affirming them);
    its false statements join the neighbour controls."""
    entities = read_records(world_dir / "entities.jsonl")
    by_key = {key: e for e in entities for key in (e["id"], e["name"])}
    chosen = [by_key[name] for name in _chosen_targets(targets, by_key, world_dir)]
    chosen_ids = {e["id"] for e in chosen}
    # Each bucket's neighbours belong to its first target, so none is counted twice.
    bucket_target = {}
    for entity in chosen:
        bucket_target.setdefault(entity["exposure"], entity["name"])
    probes = []
    for record in read_records(world_dir / "probes.jsonl"):
        entity = by_key[record["entity_id"]]
        if record["form"] not in forms or entity["exposure"] not in bucket_target:
            continue
        if entity["id"] in chosen_ids:
            target = entity["name"]
            role = "neighbor" if record["form"] == "tf" and record["answer"] == "False" else "forget"
        else:
            target, role = bucket_target[entity["exposure"]], "neighbor"
        content, cue = record["prompt"].rsplit("\n", 1)
        probes.append(Probe(target, role, record["form"], content + "\n", cue, record["answer"], " " + record["answer"]))
    return probes


def parse_forms(text: str) -> tuple[str, ...]:
    """`--forms qa,cloze,...`: known forms, in the order given."""
    forms = tuple(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    unknown = [f for f in forms if f not in FORMS]
    if unknown or not forms:
        raise BadInputError(f"unknown form {(unknown[0] if unknown else text)!r}; --forms takes some of {','.join(FORMS)}")
    return forms


def _chosen_targets(targets: Sequence[str] | None, known: dict[str, Any], source: Path) -> list[str]:
    if targets is None:
        return list(known)
    missing = [t for t in targets if t not in known]
    if missing:
        shown = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
        raise BadInputError(f"target {missing[0]!r} is not in {source}; it has {shown}")
    return list(dict.fromkeys(targets))
