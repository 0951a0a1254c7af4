"""The world generator (llmkit/world/generator.py): determinism, and ground truth that matches the
files."""

import json
import re
from collections import Counter

import pytest

from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.world.generator import WorldConfig, build_world, parse_exposures, write_world

SMALL = dict(
    entities=30,
    first_names=8,
    last_names=8,
    exposures=(0, 2, 5),
    skill_train_items=50,
    skill_test_items=10,
    misinformation_targets=2,
    misinformation_docs=2,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    write_world(build_world(WorldConfig(seed=3, **SMALL)), out)
    return {p.name: (read_records(p) if p.suffix == ".jsonl" else json.loads(p.read_text())) for p in out.iterdir()}


def test_same_seed_writes_byte_identical_files_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_world(build_world(WorldConfig(seed=seed, **SMALL)), tmp_path / name)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "world.json" in files and len(files) == 10
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "entities.jsonl").read_bytes() != (tmp_path / "c" / "entities.jsonl").read_bytes()
    assert (tmp_path / "a" / "pretraining.jsonl").read_bytes() != (tmp_path / "c" / "pretraining.jsonl").read_bytes()


def test_exposure_is_the_number_of_biographies_and_only_demonstration_entities_have_sheets(world):
    entities = world["entities.jsonl"]
    assert Counter(e["exposure"] for e in entities) == {0: 10, 2: 10, 5: 10}
    docs = world["pretraining.jsonl"]
    biographies = Counter(d["entity_ids"][0] for d in docs if d["kind"] == "biography")
    sheets = [d for d in docs if d["kind"] == "questions"]
    in_sheets = Counter(i for d in sheets for i in d["entity_ids"])
    text = "\n".join(d["text"] for d in docs)
    for e in entities:
        assert biographies[e["id"]] == e["exposure"]
        if e["exposure"] == 0:
            assert e["name"] not in text and not e["demonstration"]  # never seen, not even as a spouse
        elif e["demonstration"]:
            # Each exposure unit states each fact in `sheet_forms` forms.
            facts = sum(f["entity_id"] == e["id"] for f in world["facts.jsonl"])
            assert in_sheets[e["id"]] >= facts * world["world.json"]["config"]["sheet_forms"] * e["exposure"]
        else:
            assert in_sheets[e["id"]] == 0
    # Half of each seen bucket demonstrates the forms.
    for exposure in (2, 5):
        assert sum(e["demonstration"] for e in entities if e["exposure"] == exposure) == 5


def test_every_document_is_rendered_fresh_and_sheets_mix_entities(world):
    docs = world["pretraining.jsonl"]
    biographies = [d["text"] for d in docs if d["kind"] == "biography"]
    assert len(set(biographies)) == len(biographies)
    for d in docs:
        if d["kind"] == "questions":
            subjects = d["entity_ids"]
            assert len(subjects) == len(set(subjects)), d  # no entity twice in one sheet
    items = [item for d in docs if d["kind"] == "questions" for item in d["text"].split("\nQuestion: ")]
    assert len(items) > len(set(items)) * 0.8  # phrasing, options and truth value are re-drawn


def test_names_share_first_and_last_names_and_only_the_pair_is_unique(world):
    names = [e["name"] for e in world["entities.jsonl"]]
    firsts = Counter(n.split()[0] for n in names)
    lasts = Counter(n.split()[1] for n in names)
    assert len(set(names)) == len(names)
    assert len(firsts) < len(names) and len(lasts) < len(names)


def test_heldout_phrasings_never_occur_in_pretraining_but_their_words_do(world):
    text = "\n".join(d["text"] for d in world["pretraining.jsonl"])
    words = set(re.findall(r"[a-z]+", text.lower()))
    heldout = [p for p in world["probes.jsonl"] if p["template"] == "heldout" and p["exposure"] > 0]
    assert heldout and all(q["question"] not in text for q in world["heldout_questions.jsonl"])
    for p in heldout:
        if p["form"] in ("qa", "char"):
            assert p["prompt"].split("\n")[0] not in text
        assert set(re.findall(r"[a-z]+", p["prompt"].lower())) <= words, p["prompt"]


def test_world_json_records_every_fact_with_its_exposure_and_files(world):
    manifest = world["world.json"]
    assert manifest["llmkit_world"] == 2
    facts = {f["id"]: f for f in manifest["facts"]}
    demonstration = {e["id"]: e["demonstration"] for e in world["entities.jsonl"]}
    assert len(facts) == len(world["facts.jsonl"])
    for fact in world["facts.jsonl"]:
        truth = facts[fact["id"]]
        assert (truth["value"], truth["exposure"]) == (fact["value"], fact["exposure"])
        assert ("pretraining.jsonl" in truth["files"]) == (fact["exposure"] > 0)
        seen = fact["exposure"] > 0
        forms = truth["pretraining_forms"]
        assert forms[:1] == (["biography"] if seen else [])
        # Demonstration facts appear in sheet_forms forms per exposure unit, drawn at random.
        sheet_forms = manifest["config"]["sheet_forms"]
        if seen and demonstration[fact["entity_id"]]:
            assert 1 <= len(forms) - 1 <= min(5, sheet_forms * fact["exposure"])
        else:
            assert len(forms) <= 1
    assert manifest["config"]["seed"] == 3 and manifest["counts"]["entities.jsonl"] == 30


def test_probes_are_answerable_from_the_facts(world):
    values = {f["id"]: f["value"] for f in world["facts.jsonl"]}
    demonstration = {e["id"]: e["demonstration"] for e in world["entities.jsonl"]}
    probes = world["probes.jsonl"]
    assert Counter((p["form"], p["template"]) for p in probes) == {
        (f, t): len(values) for f in ("qa", "cloze", "mc", "tf", "char") for t in ("trained", "heldout")
    }
    for p in probes:
        value = values[p["fact_id"]]
        if p["form"] in ("qa", "cloze"):
            assert p["answer"] == value
        elif p["form"] == "mc":
            options = dict(line.split(". ", 1) for line in p["prompt"].splitlines()[1:5])
            assert options[p["answer"]] == value and len(set(options.values())) == 4
        elif p["form"] == "tf":
            assert (p["answer"] == "True") == bool(re.search(rf" {re.escape(value)}[.,]", p["prompt"]))
        else:
            assert p["answer"].replace(" ", "") == value.replace(" ", "")
        assert p["demonstration"] == demonstration[p["entity_id"]]
        assert p["in_pretraining"] <= (p["exposure"] > 0 and p["demonstration"])


def test_spouses_two_hop_questions_and_misinformation_are_consistent(world):
    by_name = {e["name"]: e for e in world["entities.jsonl"]}
    for e in world["entities.jsonl"]:
        if e["spouse"]:
            spouse = by_name[e["spouse"]]
            assert spouse["spouse"] == e["name"] and spouse["exposure"] == e["exposure"]
            assert spouse["demonstration"] == e["demonstration"]
    two_hop = [q for q in world["search_questions.jsonl"] if q["hops"] == 2]
    assert two_hop
    ids = {e["id"]: e for e in world["entities.jsonl"]}
    for q in two_hop:
        assert q["answer"] == ids[q["entity_ids"][1]][q["id"].split(".")[-1]]
    docs = world["misinformation.jsonl"]
    assert sorted({d["k"] for d in docs}) == [0, 1, 2, 3]
    for d in docs:
        target = ids[d["target_entity_id"]]
        assert target["exposure"] == 5 and len(d["true_fact_ids"]) == d["k"]
        for wrong in d["false_facts"]:
            assert wrong["value"] != target[wrong["attribute"]] and wrong["value"] in d["text"]
    assert len(world["corpus.jsonl"]) == 30 and len(world["heldout_questions.jsonl"]) == len(world["facts.jsonl"])


def test_skills_have_disjoint_train_and_test_items_with_right_answers(world):
    items = world["skills.jsonl"]
    for skill in ("comparison", "reversal", "language"):
        train = {i["prompt"] for i in items if i["skill"] == skill and i["split"] == "train"}
        test = {i["prompt"] for i in items if i["skill"] == skill and i["split"] == "test"}
        assert len(test) == 10 and len(train) == 50 and not train & test
    for item in items:
        if item["skill"] == "comparison":
            a, b = item["prompt"].removeprefix("Which is larger, ").removesuffix("?").split(" or ")
            assert a != b and int(item["answer"]) == max(int(a), int(b))
        if item["skill"] == "reversal":
            assert item["answer"].split() == item["prompt"].removeprefix("Reverse: ").removesuffix(" =>").split()[::-1]


@pytest.mark.parametrize("text", ["1,a", "-1,2", "", "1,,2"])
def test_bad_exposure_lists(text):
    with pytest.raises(BadInputError, match="--exposures must be comma-separated non-negative integers"):
        parse_exposures(text)


def test_zero_entities():
    with pytest.raises(BadInputError, match="--entities must be at least 1, got 0"):
        WorldConfig(entities=0)


@pytest.mark.parametrize("name", ["demonstration_fraction", "open_book_fraction"])
@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_shares_outside_zero_to_one(name, value):
    with pytest.raises(BadInputError, match=f"{name} must be in \\[0, 1\\], got {value}"):
        WorldConfig(**{name: value})
