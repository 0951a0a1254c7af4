"""Read user data (JSONL, JSON, CSV, Parquet, a saved HF dataset, an HF dataset name) as a list
of records, validate the fields a command needs, and write JSONL atomically.

Errors name the source, the line (or record) and the field, so a user can fix a file of ten
thousand lines without guessing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from llmkit.errors import BadInputError, first_line
from llmkit.hub import check_hub_reachable, dataset_cached

if TYPE_CHECKING:
    from llmkit.configs import QAFields

LETTERS = "ABCDEFGHIJ"
"""Option letters of multiple-choice questions."""
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
    bool: "a boolean",
}


def read_records(
    source: str | Path, *, required: Mapping[str, type | tuple[type, ...]] | None = None, split: str = "train"
) -> list[dict[str, Any]]:
    """Records from `source`, each checked to have the `required` fields with the given types.

    `source` is a file (by suffix), `-` for JSONL on standard input, a directory written by
    `datasets.save_to_disk`, or the name of a dataset on the Hugging Face hub (`split` picks the split).
    """
    numbered = _numbered_records(str(source), split)
    for where, record in numbered:
        _validate(str(source), where, record, required or {})
    return [record for _, record in numbered]


def _numbered_records(source: str, split: str) -> list[tuple[str, Any]]:
    """(where, record) of every record of `source` as `read_records` finds it, unchecked."""
    path = Path(source).expanduser()
    if source == "-":
        numbered = _parse_jsonl(sys.stdin, "<stdin>")
    elif path.is_file():
        numbered = _read_file(path)
    elif path.is_dir():
        numbered = _read_saved_dataset(path, split)
    elif path.suffix in FILE_SUFFIXES or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise BadInputError(f"input file {source} does not exist")
    else:
        numbered = _read_hub_dataset(source, split)
    if not numbered:
        raise BadInputError(f"{source} has no records; it must hold at least one")
    return numbered


def read_questions(source: str | Path, fields: QAFields) -> list[dict[str, Any]]:
    """Question-answer items of `source`: llmkit's JSONL (`question`, `answer` or `answers`,
    optional `choices`, and optionally its own `prompt`), ParaRel's `[question, answer]` lists,
    or any format `read_records` reads with the fields `fields` names. Each item gets an `id`, its
    gold `answers` (for multiple choice: the gold option's letter) and the `prompt` the model reads
    (`fields.prompt_format`, or the options listed A, B, ... before "Answer:"); every other field
    of the record (exposure, known, group, ...) is kept."""
    source = str(source)
    items = []
    for number, (where, record) in enumerate(_numbered_records(source, fields.split), start=1):
        if isinstance(record, list) and len(record) == 2 and all(isinstance(v, str) for v in record):
            record = {fields.question_field: record[0], fields.answer_field: record[1]}  # ParaRel's pairs
        if not isinstance(record, dict):
            raise BadInputError(
                f"{source} {where}: expected a question record (or a [question, answer] pair), "
                f"got {type(record).__name__}"
            )
        items.append(_question(source, where, number, record, fields))
    return items


def _question(source: str, where: str, number: int, record: dict[str, Any], fields: QAFields) -> dict[str, Any]:
    question = record.get(fields.question_field)
    if not isinstance(question, str) or not question.strip():
        raise BadInputError(
            f"{source} {where}: no question in {fields.question_field!r}; name it with --question-field"
        )
    answers = record.get(fields.answer_field, record.get("answers"))
    answers = [answers] if isinstance(answers, (str, int, float)) and not isinstance(answers, bool) else answers
    if not isinstance(answers, list) or not answers or not all(str(a).strip() for a in answers):
        raise BadInputError(
            f"{source} {where}: no answer in {fields.answer_field!r} (or 'answers'); every question needs its gold "
            "answer, or name the field with --answer-field"
        )
    answers = [str(a).strip() for a in answers]
    item = {k: v for k, v in record.items() if k not in (fields.question_field, fields.answer_field, "answers")}
    item.update(id=str(record.get("id", number)), question=question.strip(), answers=answers)
    choices = record.get(fields.choices_field)
    if choices is not None:
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
            raise BadInputError(
                f"{source} {where}: {fields.choices_field!r} must be a list of 2 to {len(LETTERS)} options"
            )
        options = [str(c).strip() for c in choices]
        gold = next((a for a in answers if a in options or a in LETTERS[: len(options)]), None)
        if gold is None:
            raise BadInputError(
                f"{source} {where}: its answer {answers[0]!r} is not among its choices {options}; "
                "the gold answer must be one of them (or its letter)"
            )
        letter = gold if gold in LETTERS[: len(options)] and gold not in options else LETTERS[options.index(gold)]
        listed = "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))
        item.update(
            choices=options, answers=[letter], prompt=record.get("prompt") or f"{question.strip()}\n{listed}\nAnswer:"
        )
    elif not isinstance(record.get("prompt"), str):
        item["prompt"] = fields.prompt_format.format(question=question.strip())
    return item


def read_texts(source: str | Path, field: str = "text") -> Iterator[str]:
    """The texts of a corpus, streamed where the format allows: a .txt file gives one text per
    non-empty line, JSONL the `field` of each line (read lazily, so a corpus larger than memory
    works); any other source `read_records` reads gives each record's `field`."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".txt":
        with open_text(path) as handle:
            yield from (line.rstrip("\n") for line in handle if line.strip())
        return
    if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
        with open_text(path) as handle:
            for where, record in _iter_jsonl(handle, str(path)):
                _validate(str(path), where, record, {field: str})
                yield record[field]
        return
    for record in read_records(source, required={field: str}):
        yield record[field]


@contextmanager
def open_text(path: str | Path, newline: str | None = None) -> Iterator[TextIO]:
    """Open a user's text file as UTF-8 (a leading byte-order mark is skipped); bytes that are
    not UTF-8, wherever the reading meets them, are bad input naming the file."""
    path = Path(path).expanduser()
    try:
        with path.open(encoding="utf-8-sig", newline=newline) as handle:
            yield handle
    except UnicodeDecodeError as err:
        byte = err.object[err.start]
        raise BadInputError(
            f"{path} is not UTF-8 text (byte 0x{byte:02x} cannot be decoded); save it as UTF-8, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from None


def read_text(path: str | Path) -> str:
    """The whole of a user's UTF-8 text file (see `open_text`)."""
    with open_text(path) as handle:
        return handle.read()


def _validate(source: str, where: str, record: Any, required: Mapping[str, type | tuple[type, ...]]) -> None:
    if not isinstance(record, dict):
        raise BadInputError(f"{source} {where}: expected an object with fields, got {type(record).__name__}")
    for field, expected in required.items():
        if field not in record:
            raise BadInputError(f"{source} {where}: missing required field {field!r}")
        value = record[field]
        types = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int in Python, but true is not a valid count.
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            names = " or ".join(TYPE_NAMES.get(t, t.__name__) for t in types)
            raise BadInputError(f"{source} {where}: field {field!r} must be {names}, got {type(value).__name__}")


def _parse_jsonl(lines: Iterable[str], name: str) -> list[tuple[str, Any]]:
    return list(_iter_jsonl(lines, name))


def _iter_jsonl(lines: Iterable[str], name: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as err:
            raise BadInputError(f"{name} line {number}: not valid JSON ({err.msg}, column {err.colno})") from None


def _read_file(path: Path) -> list[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with open_text(path) as handle:
            return _parse_jsonl(handle, str(path))
    if suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise BadInputError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            data = next(iter(data.values()))  # {"data": [...]}-style wrappers
        if not isinstance(data, list):
            raise BadInputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        return [(f"record {i}", record) for i, record in enumerate(data)]
    if suffix == ".csv":
        with open_text(path, newline="") as handle:
            return [(f"line {i + 2}", dict(row)) for i, row in enumerate(csv.DictReader(handle))]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises several unrelated types for a broken file
            raise BadInputError(f"{path}: not a readable Parquet file ({err})") from None
        return [(f"row {i}", row) for i, row in enumerate(rows)]
    raise BadInputError(f"{path}: unknown file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _read_saved_dataset(path: Path, split: str) -> list[tuple[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise BadInputError(f"{path} is a directory but not a dataset written by save_to_disk ({err})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise BadInputError(f"{path} has no split {split!r}; it has {', '.join(loaded)}")
        loaded = loaded[split]
    return [(f"row {i}", row) for i, row in enumerate(loaded)]


def _read_hub_dataset(name: str, split: str) -> list[tuple[str, Any]]:
    import datasets

    check_hub_reachable(name, "input", cached=dataset_cached(name))

    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as err:  # the hub client raises many types; all mean "cannot use this name"
        raise BadInputError(
            f"{name} is not a file, and loading it as a hub dataset failed: {first_line(err)}"
        ) from None
    return [(f"row {i}", row) for i, row in enumerate(loaded)]


def dumps_jsonl(records: Iterable[Mapping[str, Any]]) -> str:
    """Records as JSON Lines text (UTF-8 kept readable)."""
    out = io.StringIO()
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out.getvalue()


def read_set(source: str | Path | None, what: str) -> list[dict[str, Any]]:
    """A command's --forget or --retain set (`what`): records with 'text', or 'prompt' and
    'answer' (`llmkit data skill-set` writes them), none of them empty."""
    if source is None:
        raise BadInputError(f"name the {what} set: --{what} FILE (llmkit data skill-set writes one)")
    records = read_records(source)
    check_records(records, f"the {what} set ({source})")
    return records


def read_training_texts(source: str | Path, field: str = "text") -> list[str]:
    """The non-empty `field` of each record of `source`, all read (a training split shuffles
    them): a string, or a list of strings (sentences; SeND's HELM files) joined by spaces."""
    texts = []
    for i, record in enumerate(read_records(source)):
        value = record.get(field)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if not isinstance(value, str):
            raise BadInputError(
                f"{source}: record {i + 1} has no text in {field!r}; name the text field with --text-field"
            )
        if value.strip():
            texts.append(value)
    if not texts:
        raise BadInputError(f"{source} has no texts to train on")
    return texts


def records_digest(records: Sequence[Mapping[str, Any]] | None) -> str | None:
    """A short hash of records (None for None): how a training run names its data, so that a
    resumed run is checked to train on the same."""
    if records is None:
        return None
    return hashlib.sha256(dumps_jsonl(records).encode()).hexdigest()[:16]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as JSON Lines, atomically."""
    write_text_atomic(path, dumps_jsonl(records))


def check_records(records: Sequence[Mapping[str, Any]], source: str, *, qa_only: bool = False) -> None:
    """Every record is a passage (`text`) or a question (`prompt` + `answer`), all strings."""
    if not records:
        raise BadInputError(f"{source} has no records; it must hold at least one")
    for number, record in enumerate(records, start=1):
        is_qa = isinstance(record.get("prompt"), str) and isinstance(record.get("answer"), str)
        if qa_only and not is_qa:
            raise BadInputError(
                f"{source} record {number}: this method needs questions, records with 'prompt' and 'answer' strings"
            )
        if not is_qa and not isinstance(record.get("text"), str):
            raise BadInputError(
                f"{source} record {number}: needs a 'text' string (a passage) "
                "or 'prompt' and 'answer' strings (a question)"
            )
        # An empty passage or answer has no tokens to learn or forget.
        if not (record["answer"] if is_qa else record["text"]).strip():
            raise BadInputError(
                f"{source} record {number}: its {'answer' if is_qa else 'text'} is empty; "
                "give it text or drop the record"
            )


def record_texts(records: Sequence[Mapping[str, Any]], *, queries: bool = False) -> list[str]:
    """The text a model reads for each checked record: the passage, or the question followed by
    its answer (`prompt + " " + answer`); with `queries`, the question alone."""

    def is_question(record: Mapping[str, Any]) -> bool:
        return isinstance(record.get("prompt"), str) and isinstance(record.get("answer"), str)

    if queries:
        return [r["prompt"] if is_question(r) else r["text"] for r in records]
    return [f"{r['prompt']} {r['answer'].strip()}" if is_question(r) else r["text"] for r in records]
