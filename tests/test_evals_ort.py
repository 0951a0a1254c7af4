"""The ORT evaluation (llmkit/evals/ort.py): loading probes (an ORT-style folder built here from the
schema, and a world's probes), and comparing a run with its baseline."""

import json
import unicodedata
from pathlib import Path

import pytest

from conftest import probe, write_target
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.ort import (
    compare,
    folder_target,
    load_ort_dir,
    load_world_probes,
    parse_forms,
    spelled,
    target_folder,
)

TARGET_NAMES = Path(__file__).parent / "data" / "ort" / "target_names.json"  # ORT's 200 targets (tests/data/README.md)


@pytest.fixture
def ort_dir(tmp_path):
    for index, name in ((1, "Robert Downey Jr."), (2, "Beyoncé")):
        write_target(
            tmp_path,
            index,
            name,
            {
                "forget_level1": [probe(f"{name} is an American ___", "actor", name)],
                "forget_level2": [probe(f"What is {name}'s job?", "film actor", name, "qa", "2")],
                "forget_mcp": [
                    probe(
                        f"{name} is an American ___\nA. actor\nB. chef\nC. pilot\nD. judge",
                        "A",
                        name,
                        "multiple choice",
                        "4",
                    )
                ],
                "forget_tf": [probe(f"{name} is an American actor.", "True", name, "true or false", "4")],
                "neighbor_level1": [probe("Iron Man was directed by ___", "Jon Favreau", name)],
                "neighbor_level2": [probe("Who directed Iron Man?", "Jon Favreau", name, "qa", "2")],
            },
        )
    return tmp_path


def test_an_ort_folder_gives_every_form_with_ort_prompts(ort_dir):
    probes = load_ort_dir(ort_dir, ["Robert Downey Jr."])
    assert {p.target for p in probes} == {"Robert Downey Jr."}
    forget = {p.form: p for p in probes if p.role == "forget" and p.form != "char"}
    assert set(forget) == {"cloze", "qa", "mc", "tf"}
    assert (
        forget["qa"].prompt
        == "Please briefly answer the following question.\nQuestion: What is Robert Downey Jr.'s job?\nAnswer:"
    )
    assert forget["qa"].continuation == " film actor" and forget["mc"].continuation == " A"
    chars = [p for p in probes if p.role == "forget" and p.form == "char"]
    assert [p.continuation for p in chars] == ["a\nc\nt\no\nr\n", "f\ni\nl\nm\na\nc\nt\no\nr\n"]
    assert chars[0].content.startswith("Write the answer character by character, each on a new line.\nPlease complete")
    assert chars[0].cue == "Answer:\n"
    neighbors = [p for p in probes if p.role == "neighbor"]
    assert sorted(p.form for p in neighbors) == ["char", "char", "cloze", "qa"]  # no neighbour mcp/tf files here


def test_forms_select_what_is_loaded(ort_dir):
    probes = load_ort_dir(ort_dir, forms=parse_forms("char,mc"))
    assert {p.form for p in probes} == {"char", "mc"} and {p.target for p in probes} == {"Robert Downey Jr.", "Beyoncé"}


def test_spelled_drops_spaces():
    assert spelled("Jon Favreau") == "J\no\nn\nF\na\nv\nr\ne\na\nu\n"


def test_every_ort_target_name_survives_the_folder_mapping():
    names = json.loads(TARGET_NAMES.read_text(encoding="utf-8"))
    assert len(names) == 200
    for index, name in enumerate(names, 1):
        assert folder_target(target_folder(index, name)) == (index, name)
        decomposed = unicodedata.normalize("NFD", target_folder(index, name))  # as some file systems return it
        assert folder_target(decomposed) == (index, name)


def test_world_probes_forget_the_targets_facts_and_keep_their_buckets(micro_world):
    entities = read_records(micro_world / "entities.jsonl")
    target = next(e for e in entities if e["exposure"] == 30)
    probes = load_world_probes(micro_world, [target["name"]])
    world = [p for p in read_records(micro_world / "probes.jsonl") if p["template"] == "trained"]
    about = [p for p in world if p["entity_id"] == target["id"]]
    forget = [p for p in probes if p.role == "forget"]
    assert len(forget) == len([p for p in about if not (p["form"] == "tf" and p["answer"] == "False")])
    assert all(p.target == target["name"] and p.prompt.endswith("\nAnswer:") for p in probes)
    bucket = {e["id"] for e in entities if e["exposure"] == 30}
    assert len(probes) == len([p for p in world if p["entity_id"] in bucket])
    assert load_world_probes(micro_world, [target["id"]]) == probes  # ids work as names do


@pytest.mark.parametrize(
    "files, message",
    [
        ({"forget_level2": [{"query": "Who?", "level": "2"}]}, "record 0 has no 'answer'"),
        (
            {"forget_mcp": [probe("Q\nA. x\nB. y", "C", "X")]},
            "multiple-choice answer 'C' is not one of its options (A, B)",
        ),
        ({"forget_level1": {"query": "x"}}, "holds a JSON dict; ORT probe files are JSON lists"),
        (
            {"forget_tf": [probe("X is a chef.", "Yes", "X", "true or false", "4")]},
            "true/false answer 'Yes' is neither True nor False",
        ),
    ],
)
def test_bad_ort_probes(tmp_path, files, message):
    write_target(tmp_path, 1, "Some One", files)
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_ort_dir(tmp_path)


def test_unknown_form_and_target(ort_dir):
    with pytest.raises(BadInputError, match="unknown form 'fb'; --forms takes some of qa,cloze,mc,tf,char"):
        parse_forms("qa,fb")
    with pytest.raises(BadInputError, match="target 'Stephen King' is not in .*; it has Beyoncé, Robert Downey Jr."):
        load_ort_dir(ort_dir, ["Stephen King"])
    with pytest.raises(BadInputError, match="no ORT target folders"):
        load_ort_dir(ort_dir / "1_Robert_Downey_Jr.")
    with pytest.raises(BadInputError, match="is not a directory"):
        load_ort_dir(ort_dir / "missing")


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
