import json

import datasets
import pytest

from llmkit.data import check_records, read_records, read_texts, write_jsonl
from llmkit.errors import BadInputError

RECORDS = [{"prompt": "Alice was born in", "id": 1}, {"prompt": "Bob works at", "id": 2}]


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(path, RECORDS + [{"prompt": "ünïcode ✓", "id": 3}])
    assert read_records(path, required={"prompt": str}) == RECORDS + [{"prompt": "ünïcode ✓", "id": 3}]
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]  # no temporary file left


@pytest.mark.parametrize("fmt", ["json", "wrapped_json", "csv", "parquet", "saved_dataset"])
def test_every_format_reads_the_same_records(fmt, tmp_path):
    table = datasets.Dataset.from_list(RECORDS)
    if fmt == "json":
        path = tmp_path / "p.json"
        path.write_text(json.dumps(RECORDS))
    elif fmt == "wrapped_json":
        path = tmp_path / "p.json"
        path.write_text(json.dumps({"data": RECORDS}))
    elif fmt == "csv":
        path = tmp_path / "p.csv"
        path.write_text("prompt,id\nAlice was born in,1\nBob works at,2\n")
    elif fmt == "parquet":
        path = tmp_path / "p.parquet"
        table.to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        datasets.DatasetDict({"train": table}).save_to_disk(str(path))
    records = read_records(path, required={"prompt": str})
    assert [r["prompt"] for r in records] == ["Alice was born in", "Bob works at"]
    assert [str(r["id"]) for r in records] == ["1", "2"]


@pytest.mark.parametrize(
    "content, required, message",
    [
        ('{"prompt": "a"}\n\n{"prompt": "b"\n', {}, r"p.jsonl line 3: not valid JSON"),
        ('{"prompt": "a"}\n{"text": "b"}\n', {"prompt": str}, r"p.jsonl line 2: missing required field 'prompt'"),
        ('{"prompt": 3}\n', {"prompt": str}, r"p.jsonl line 1: field 'prompt' must be a string, got int"),
        ('{"count": true}\n', {"count": int}, r"line 1: field 'count' must be an integer, got bool"),
        ('["a"]\n', {}, r"line 1: expected an object with fields, got list"),
    ],
)
def test_bad_records_name_the_line_and_the_field(content, required, message, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(BadInputError, match=message):
        read_records(path, required=required)


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(BadInputError, match="has no records"):
        read_records(empty)
    with pytest.raises(BadInputError, match="input file .*nope.jsonl does not exist"):
        read_records(tmp_path / "nope.jsonl")


def test_directory_that_is_not_a_dataset(tmp_path):
    with pytest.raises(BadInputError, match="not a dataset written by save_to_disk"):
        read_records(tmp_path)


def test_unreachable_hub_dataset_is_one_clear_error():
    with pytest.raises(
        BadInputError, match="no-such-org-xyz/no-such-data is not a local path .*cannot come from the hub"
    ):
        read_records("no-such-org-xyz/no-such-data")


@pytest.mark.parametrize("name", ["x.jsonl", "x.json", "x.csv"])
def test_bytes_that_are_not_utf8_are_one_clear_error(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(b"\xff\xfe\x00bad\x80\n" if name != "x.csv" else "prompt\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(BadInputError, match=f"{name} is not UTF-8 text .*save it as UTF-8"):
        read_records(path)


def test_streamed_texts_that_are_not_utf8_are_one_clear_error(tmp_path):
    for name in ("corpus.txt", "corpus.jsonl"):
        path = tmp_path / name
        path.write_bytes(b'{"text": "fine"}\n' * 3 + b'{"text": "caf\xe9"}\n')
        with pytest.raises(BadInputError, match=f"{name} is not UTF-8 text"):
            list(read_texts(path))


def test_a_byte_order_mark_is_read_past(tmp_path):
    for name, content in (("x.jsonl", '{"prompt": "a"}\n'), ("x.json", '[{"prompt": "a"}]'), ("x.csv", "prompt\na\n")):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + content.encode())
        assert read_records(path, required={"prompt": str}) == [{"prompt": "a"}]


@pytest.mark.parametrize(
    "record, field", [({"text": ""}, "text"), ({"text": "  "}, "text"), ({"prompt": "Q", "answer": ""}, "answer")]
)
def test_records_with_nothing_to_learn_are_refused(record, field):
    with pytest.raises(BadInputError, match=f"record 1: its {field} is empty"):
        check_records([record], "the forget set")
