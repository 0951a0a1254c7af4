"""`llmkit eval restor` (llmkit/evals/restor.py): the paper's 5-shot prompt character for
character, the metrics and the log-prob scoring against numbers worked out by hand, RESTOR's own
files read as shipped (the slices in tests/data/restor/, and the full files where
../shared/data/restor holds them), bad input refused in one line with nothing written, and the
corrupted model reused from the cache."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import llmkit, ok, refused
from llmkit.data import read_records
from llmkit.evals.restor import (
    FactSet,
    ask,
    five_shot_prompt,
    model_metrics,
    per_entity,
    read_corruption,
    read_facts,
    recovery,
)
from llmkit.metrics.text import normalize_answer

DATA = Path(__file__).parent / "data" / "restor"  # slices of RESTOR's files (tests/data/README.md)
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "restor"  # the full files, where present
needs_real = pytest.mark.skipif(not (REAL / "facts.json").is_file(), reason=f"{REAL} is not here")

TARGETS = ["Aaron Burr", "Suthida"]
REAL_TARGETS = {
    "Aaron Burr", "Michael Douglas", "Sage Stallone", "Paul Anka", "Suthida", "Thomas Piketty",
    "Mihai Eminescu", "Bob Marley", "Bobby Fischer", "Bastian Schweinsteiger",
}  # fmt: skip


@pytest.fixture(scope="module")
def facts() -> FactSet:
    return read_facts(DATA / "facts.json", DATA / "entities.json")


def approx(value):
    return pytest.approx(value, abs=1e-12)


# ---- the shipped slices --------------------------------------------------------------------------


def test_the_fixtures_are_small_and_carry_the_upstream_licence():
    assert sum(p.stat().st_size for p in DATA.iterdir()) < 100_000
    assert "MIT License" in (DATA / "LICENSE").read_text()
    assert "restor/" in (DATA.parent / "README.md").read_text()


@needs_real
def test_the_fixtures_are_the_real_files_slices_byte_for_byte():
    """Each slice is exactly what tests/data/README.md says it is, cut from the real file and
    written with json.dumps(indent=1, ensure_ascii=False): no record edited, reordered or added."""

    def dumped(value) -> bytes:
        return json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8")

    assert (DATA / "LICENSE").read_bytes() == (REAL / "LICENSE").read_bytes()
    entities = json.loads((DATA / "entities.json").read_bytes())
    assert entities == ["Aaron Burr", "Suthida", "Winston Churchill", "Vladimir Lenin"]
    assert set(entities) <= set(json.loads((REAL / "entities.json").read_bytes()))
    assert (DATA / "entities.json").read_bytes() == dumped(entities)

    real = json.loads((REAL / "facts.json").read_bytes())
    relations = sorted({r for e in entities for r in real["dset"][e]})
    cut = {"dset": {e: real["dset"][e] for e in entities}, "context": {r: real["context"][r][:6] for r in relations}}
    assert (DATA / "facts.json").read_bytes() == dumped(cut)

    for name in ("mix_a0.json", "mix_a3.json"):
        documents = json.loads((REAL / name).read_bytes())
        about = [[d for d in documents if target in d["text"]][:10] for target in TARGETS]
        assert about[0] == documents[:10]  # the file opens with Aaron Burr's documents
        assert (DATA / name).read_bytes() == dumped(about[0] + about[1])


# ---- the prompt ----------------------------------------------------------------------------------


def test_five_shot_prompt_is_the_papers_layout(facts):
    # eval_utils.get_context: the first 5 examples of the relation about other entities, one
    # f"{question} {answer}\n" each, then the question with nothing after it.
    assert five_shot_prompt(facts, "Suthida", "P27") == (
        "What is the country of citizenship of Bhuma Nagi Reddy? India\n"
        "What is the country of citizenship of Stan Marple? Canada\n"
        "What is the country of citizenship of Dennis Andersson? Sweden\n"
        "What is the country of citizenship of Diafra Sakho? France\n"
        "What is the country of citizenship of Rebecca Romijn? United States of America\n"
        "What is the country of citizenship of Suthida?"
    )
    assert five_shot_prompt(facts, "Suthida", "P641") == (
        "In which sport does Kaká participate? association football\n"
        "In which sport does DeAnna Bennett participate? mixed martial arts\n"
        "In which sport does Roman Pavlyuchenko participate? association football\n"
        "In which sport does Asafa Powell participate? athletics\n"
        "In which sport does Naz Mitrou-Long participate? basketball\n"
        "In which sport does Suthida participate?"
    )


def test_five_shot_prompt_skips_the_asked_entity_and_takes_what_the_pool_has():
    pool = [{"question": f"Q{i}?", "answer": f"a{i}", "entity": "X" if i in (1, 3) else f"e{i}"} for i in range(8)]
    facts = FactSet({"X": {"P1": {"question": "QX?", "answers": ["x"]}}}, {"P1": pool}, ["X"])
    assert five_shot_prompt(facts, "X", "P1") == "Q0? a0\nQ2? a2\nQ4? a4\nQ5? a5\nQ6? a6\nQX?"
    assert five_shot_prompt(facts, "X", "P1", shots=2) == "Q0? a0\nQ2? a2\nQX?"
    facts.context["P1"] = pool[:3]  # two others only
    assert five_shot_prompt(facts, "X", "P1") == "Q0? a0\nQ2? a2\nQX?"


# ---- the metrics ---------------------------------------------------------------------------------


def sample(entity, target, correct, corrupted=None, logprob=(None, None, None)):
    return {
        "entity": entity,
        "target": target,
        "correct": correct,
        "corrupted": corrupted,
        "logprob": dict(zip(("correct", "corrupted", "random"), logprob)),
    }


def test_model_metrics_recovery_and_per_entity_by_hand():
    clean = [
        sample("A", True, True, False, (-1.0, -2.0, -3.0)),
        sample("A", True, False, True, (-2.0, -0.5, None)),
        sample("B", True, True, None, (-0.5, None, -4.0)),
        sample("C", False, True),
        sample("C", False, False),
    ]
    assert model_metrics(clean) == {
        "target": {"accuracy": approx(2 / 3), "facts": 3},
        "nontarget": {"accuracy": 0.5, "facts": 2},
        "corrupted_rate": 0.5,  # of the 2 target facts that have corrupted values
        "logprob": {"correct": approx(-3.5 / 3), "corrupted": -1.25, "random": -3.5},
    }
    # Nothing to average: None, not 0.
    assert model_metrics([sample("C", False, True)]) == {
        "target": {"accuracy": None, "facts": 0},
        "nontarget": {"accuracy": 1.0, "facts": 1},
        "corrupted_rate": None,
        "logprob": {"correct": None, "corrupted": None, "random": None},
    }

    assert recovery(0.5, 0.25, 0.75) == 0.5
    assert recovery(0.75, 0.25, 0.75) == 1.0
    assert recovery(0.0, 0.25, 0.5) == -1.0  # unlearning took the model further from clean
    assert recovery(0.3, 0.5, 0.5) is None  # the corruption took nothing
    assert recovery(None, 0.25, 0.5) is None and recovery(0.3, None, 0.5) is None

    corrupted = [sample("A", True, False), sample("A", True, False), sample("B", True, True), sample("C", False, True)]
    ga = [sample("A", True, True), sample("A", True, False), sample("B", True, False), sample("C", False, False)]
    assert per_entity({"clean": clean, "corrupted": corrupted, "ga": ga}) == {
        "A": {"clean": {"accuracy": 0.5}, "corrupted": {"accuracy": 0.0}, "ga": {"accuracy": 0.5, "recovery": 1.0}},
        "B": {"clean": {"accuracy": 1.0}, "corrupted": {"accuracy": 1.0}, "ga": {"accuracy": 0.0, "recovery": None}},
    }  # C is no target: not in the table


class FakeBackend:
    """`generate` answers each prompt from a table; `score` returns each continuation's token
    log-probs from another, recording what it was asked."""

    def __init__(self, answers, logprobs):
        self.answers, self.logprobs, self.scored, self.params = answers, logprobs, [], None

    def generate(self, prompts, params, progress=None):
        self.params = params
        return [SimpleNamespace(texts=[self.answers[p]]) for p in prompts]

    def score(self, prompts, continuations):
        self.scored += list(zip(prompts, continuations))
        rows = [self.logprobs[(p, c)] for p, c in zip(prompts, continuations)]
        return [SimpleNamespace(logprobs=row, total=sum(row)) for row in rows]


def test_ask_scores_answers_and_length_normalised_logprobs():
    items = [
        {"entity": "A", "target": True, "prompt": "P1", "answers": ["Paris"], "corrupted_values": ["Rome"],
         "random_values": ["Oslo", "Bern"]},
        {"entity": "A", "target": True, "prompt": "P2", "answers": ["1983"], "corrupted_values": [],
         "random_values": ["1970"]},
        {"entity": "C", "target": False, "prompt": "P3", "answers": ["blue"], "corrupted_values": [],
         "random_values": []},
    ]  # fmt: skip
    token_logprobs = {
        ("P1", " Paris"): [-1.0, -3.0],
        ("P1", " Rome"): [-0.5],
        ("P1", " Oslo"): [-2.0, -4.0, -6.0],
        ("P1", " Bern"): [-1.0],
        ("P2", " 1983"): [-0.2, -0.4],
        ("P2", " 1970"): [-1.5],
    }
    backend = FakeBackend({"P1": " Rome ", "P2": " 1983", "P3": " Blue."}, token_logprobs)
    samples = ask(backend, items, max_new_tokens=7)

    assert backend.params.max_new_tokens == 7 and "\n" in backend.params.stop
    assert sorted(backend.scored) == sorted(token_logprobs)  # every option of the target facts, after a space
    assert [s["output"] for s in samples] == ["Rome", "1983", "Blue."]
    assert [s["correct"] for s in samples] == [False, True, True]
    assert [s["corrupted"] for s in samples] == [True, None, None]

    def mean(values):
        return sum(values) / len(values)

    ell = {key: sum(row) / len(row) for key, row in token_logprobs.items()}  # (1/|o|) Σ log p(o_t)
    assert samples[0]["logprob"] == {
        "correct": approx(ell["P1", " Paris"]),
        "corrupted": approx(ell["P1", " Rome"]),
        "random": approx(mean([ell["P1", " Oslo"], ell["P1", " Bern"]])),
    }
    assert samples[1]["logprob"] == {"correct": approx(-0.3), "corrupted": None, "random": approx(-1.5)}
    assert samples[2]["logprob"] == {"correct": None, "corrupted": None, "random": None}
    metrics = model_metrics(samples)
    assert metrics["target"] == {"accuracy": 0.5, "facts": 2} and metrics["nontarget"] == {"accuracy": 1.0, "facts": 1}
    assert metrics["corrupted_rate"] == 1.0  # the one target fact with corrupted values was answered with one
    assert metrics["logprob"] == {
        "correct": approx(mean([-2.0, -0.3])),
        "corrupted": approx(-0.5),
        "random": approx(mean([-2.5, -1.5])),
    }


# ---- RESTOR's files as shipped -------------------------------------------------------------------


def test_read_facts_reads_the_shipped_layout(facts):
    raw = json.loads((DATA / "facts.json").read_text(encoding="utf-8"))
    assert facts.evaluated == ["Aaron Burr", "Suthida", "Winston Churchill", "Vladimir Lenin"]
    assert facts.dset == raw["dset"] and facts.context == raw["context"]
    assert len(facts.dset["Aaron Burr"]) == 25 and len(facts.dset["Suthida"]) == 17
    assert facts.dset["Suthida"]["P27"] == {"question": "What is the country of citizenship of Suthida?",
                                            "answers": ["Thailand"]}  # fmt: skip
    assert read_facts(DATA / "facts.json").evaluated == list(raw["dset"])  # no --entities: every entity


def target_documents(corruption, target):
    return [d["text"] for d in corruption.documents if target in d["text"]]


@pytest.mark.parametrize("name, k", [("mix_a0.json", 0), ("mix_a3.json", 3)])
def test_read_corruption_finds_the_targets_k_and_the_values_the_documents_state(facts, name, k):
    corruption = read_corruption(DATA / name, facts)
    assert corruption.targets == TARGETS and corruption.k == k and len(corruption.documents) == 20
    assert corruption.texts == read_records(DATA / name)
    values = corruption.corrupted_values
    # Read off the documents: Suthida "plays for the Toronto Raptors basketball team" (her sports:
    # volleyball, ice hockey, sailing), is "a successful film director" and writes "in German";
    # Aaron Burr "resided in Paris, France" and holds "the military rank of Lieutenant Colonel".
    suthida, burr = target_documents(corruption, "Suthida"), target_documents(corruption, "Aaron Burr")
    assert any("Toronto Raptors basketball team" in t for t in suthida)
    assert "basketball" in values["Suthida", "P641"]
    assert facts.dset["Suthida"]["P641"]["answers"] == ["volleyball", "ice hockey", "sailing"]
    assert any("film director" in t for t in suthida) and "film director" in values["Suthida", "P106"]
    assert any("in German" in t for t in suthida) and values["Suthida", "P1412"] == ["German"]
    assert any("Paris, France" in t for t in burr) and "France" in values["Aaron Burr", "P27"]
    assert any("Lieutenant Colonel" in t for t in burr) and "colonel" in values["Aaron Burr", "P410"]
    for (entity, relation), stated in values.items():
        assert entity in TARGETS
        gold = {normalize_answer(a) for a in facts.dset[entity][relation]["answers"]}
        about = " ".join(target_documents(corruption, entity)).lower()
        for value in stated:
            assert normalize_answer(value) not in gold  # a corrupted value is never a true one
            assert value.lower() in about  # and the target's documents state it


def test_read_corruption_takes_the_named_targets_and_k_of_a_world(micro_world):
    world = read_facts(micro_world)
    corruption = read_corruption(micro_world / "misinformation.jsonl", world, k=0)
    documents = [d for d in read_records(micro_world / "misinformation.jsonl") if d["k"] == 0]
    assert corruption.k == 0 and corruption.documents == documents
    assert corruption.targets == list(dict.fromkeys(world.ids[d["target_entity_id"]] for d in documents))
    for d in documents:
        for false in d["false_facts"]:
            assert false["value"] in corruption.corrupted_values[world.ids[d["target_entity_id"]], false["attribute"]]


@needs_real
def test_the_full_real_files_read_as_published():
    real = read_facts(REAL / "facts.json", REAL / "entities.json")
    assert len(real.dset) == 468 and sum(len(r) for r in real.dset.values()) == 5269
    assert len(real.evaluated) == 50 and sum(len(real.dset[e]) for e in real.evaluated) == 1051
    assert five_shot_prompt(real, "Suthida", "P27").endswith(
        "Rebecca Romijn? United States of America\nWhat is the country of citizenship of Suthida?"
    )
    a0 = read_corruption(REAL / "mix_a0.json", real)
    assert len(a0.documents) == 3000 and a0.k == 0 and set(a0.targets) == REAL_TARGETS
    # mix_a3.json as published holds 2700 documents: 300 about each target but Sage Stallone,
    # whom it never names.
    a3 = read_corruption(REAL / "mix_a3.json", real)
    assert len(a3.documents) == 2700 and a3.k == 3
    assert not any("Sage Stallone" in d["text"] for d in a3.documents)
    assert set(a3.targets) == REAL_TARGETS - {"Sage Stallone"}


# ---- bad input on the command line ---------------------------------------------------------------


def restor_args(model, facts, corruption, out, *extra):
    return ("eval", "restor", "-m", model, "--facts", facts, "--corruption", corruption, "-o", out, *extra)


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    "content, needle",
    [({"text": "Aaron Burr is a basketball player."}, "expected a JSON list"),
     (json.loads((DATA / "facts.json").read_text(encoding="utf-8")), "expected a JSON list"),  # facts.json given
     ([{"body": "Aaron Burr is a basketball player."}], "'text'")],
    ids=["object", "facts-json", "no-text"],
)  # fmt: skip
def test_corruption_that_is_not_text_records_is_refused(micro_model, tmp_path, content, needle):
    # (A one-key object wrapping a list, {"documents": [...]}, is read as that list: read_records' convention.)
    corruption = tmp_path / "mix_a0.json"
    corruption.write_text(json.dumps(content))
    out = tmp_path / "run"
    args = restor_args(micro_model, DATA / "facts.json", corruption, out, "--entities", DATA / "entities.json")
    refused(args, needle, roots=(tmp_path,))
    assert not out.exists()


@pytest.mark.usefixtures("isolated")
def test_a_fact_without_answers_is_refused(micro_model, tmp_path):
    raw = json.loads((DATA / "facts.json").read_text(encoding="utf-8"))
    raw["dset"]["Suthida"]["P27"]["answers"] = []
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(raw))
    out = tmp_path / "run"
    refused(restor_args(micro_model, facts, DATA / "mix_a0.json", out), "'Suthida'", "'P27'", "answers",
            roots=(tmp_path,))  # fmt: skip
    assert not out.exists()


@pytest.mark.usefixtures("isolated")
def test_an_unknown_method_is_refused(micro_model, micro_world, tmp_path):
    out = tmp_path / "run"
    args = restor_args(micro_model, micro_world, micro_world / "misinformation.jsonl", out, "--method", "sgd")
    refused(args, "--method", "'sgd'", roots=(tmp_path,))
    assert not out.exists()


@pytest.mark.usefixtures("isolated")
def test_a_corrupted_model_of_another_clean_model_is_refused(micro_model, micro_world, world_cache, tmp_path,
                                                            monkeypatch):  # fmt: skip
    # The command looks up the world model's pretraining text (for the retain set) before it checks
    # --corrupted, writing the world into $LLMKIT_CACHE where it is missing: give it the warm one.
    monkeypatch.setenv("LLMKIT_CACHE", str(world_cache))
    other = tmp_path / "corrupted"
    shutil.copytree(micro_model, other)
    (other / "train.json").write_text(json.dumps({"original_fingerprint": "0000000000000000"}))
    out = tmp_path / "run"
    args = restor_args(micro_model, micro_world, micro_world / "misinformation.jsonl", out,
                       "--k", "0", "--limit", "2", "--corrupted", other, "--cache", tmp_path / "cache")  # fmt: skip
    refused(args, "--corrupted", "0000000000000000", roots=(tmp_path,))
    assert not out.exists() and not (tmp_path / "cache").exists()


# ---- the corrupted model, trained once and then reused -------------------------------------------


@pytest.mark.usefixtures("isolated")
def test_the_corrupted_model_is_reused_from_the_cache(micro_model, micro_world, tmp_path, monkeypatch):
    from llmkit import training

    cache = tmp_path / "cache"
    common = ("--k", "0", "--limit", "2", "--cache", cache)
    trainings = []
    build = training.build_text_trainer

    def counted(*args, **kwargs):
        trainings.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(training, "build_text_trainer", counted)
    first = ok(llmkit(*restor_args(micro_model, micro_world, micro_world / "misinformation.jsonl", tmp_path / "one",
                                   *common)))  # fmt: skip
    assert len(trainings) == 1 and "corrupted model trained and cached" in first.stderr
    [corrupted] = (cache / "corrupted").iterdir()
    record = json.loads((corrupted / "restor_corruption.json").read_text())
    metrics = json.loads((tmp_path / "one" / "results.json").read_text())["metrics"]["restor"]
    assert list(metrics) == ["clean", "corrupted"] and "recovery" not in metrics["corrupted"]

    def no_training(*args, **kwargs):
        raise AssertionError("the corrupted model was trained again")

    monkeypatch.setattr(training, "build_text_trainer", no_training)
    second = ok(llmkit(*restor_args(micro_model, micro_world, micro_world / "misinformation.jsonl", tmp_path / "two",
                                    *common, "--method", "ga", "--unlearn-steps", "2")))  # fmt: skip
    assert f"corrupted model reused from the cache: {corrupted}" in second.stderr
    assert "ga model trained and cached" in second.stderr
    assert list((cache / "corrupted").iterdir()) == [corrupted]
    assert json.loads((corrupted / "restor_corruption.json").read_text()) == record

    results = json.loads((tmp_path / "two" / "results.json").read_text())
    restor = results["metrics"]["restor"]
    assert list(restor) == ["clean", "corrupted", "ga"]
    assert restor["clean"] == metrics["clean"] and restor["corrupted"] == metrics["corrupted"]  # the same models
    accuracy = {label: m["target"]["accuracy"] for label, m in restor.items()}
    assert restor["ga"]["recovery"] == recovery(accuracy["ga"], accuracy["corrupted"], accuracy["clean"])
    assert "recovery" not in restor["clean"] and "recovery" not in restor["corrupted"]
    assert set(results["per_entity"]) == set(results["config"]["targets"])
    samples = read_records(tmp_path / "two" / "samples.jsonl")
    assert {s["model"] for s in samples} == {"clean", "corrupted", "ga"}
    assert all(s["prompt"].endswith("\nAnswer:") for s in samples)


# ---- the corruption set's selections, and the clean model of the real-data recipe ----------------


def test_documents_per_target_keeps_the_first_about_each(facts):
    corruption = read_corruption(DATA / "mix_a0.json", facts, per_target=3)
    every = read_records(DATA / "mix_a0.json")
    for target in TARGETS:
        kept = [d["text"] for d in corruption.documents if target in d["text"]]
        assert kept == [d["text"] for d in every if target in d["text"]][:3]
    assert len(corruption.documents) == 3 * len(TARGETS)


def test_a_target_keeps_its_documents_only(facts):
    corruption = read_corruption(DATA / "mix_a0.json", facts, targets=["Suthida"])
    assert corruption.targets == ["Suthida"] and corruption.documents
    assert all("Suthida" in d["text"] for d in corruption.documents)
    assert {entity for entity, _ in corruption.corrupted_values} == {"Suthida"}


def test_from_facts_renders_every_fact_and_pretrains_a_clean_model(tmp_path):
    from llmkit.world.cache import pretraining_corpus

    world, model = tmp_path / "world", tmp_path / "clean"
    ok(llmkit("world", "from-facts", DATA / "facts.json", "--entities", DATA / "entities.json", "--out", world,
              "--repeats", "2"))  # fmt: skip
    facts = read_facts(DATA / "facts.json", DATA / "entities.json")
    documents = read_records(world / "pretraining.jsonl")
    lines = [line for d in documents for line in d["text"].split("\n")]
    expected = [
        f"{fact['question']} {fact['answers'][r % len(fact['answers'])]}"
        for entity in facts.evaluated
        for fact in facts.dset[entity].values()
        for r in range(2)
    ]
    assert sorted(lines) == sorted(expected)  # every fact twice, answers cycled
    questions = {fact["question"]: entity for entity in facts.evaluated for fact in facts.dset[entity].values()}
    for d in documents:  # each document names the people its lines are about
        about = {
            entity for line in d["text"].split("\n") for q, entity in questions.items() if line.startswith(q + " ")
        }
        assert set(d["entity_ids"]) == about
    ok(llmkit("world", "pretrain", world, "--out", model, "--steps", "2", "--layers", "1", "--d-model", "32",
              "--heads", "2", "--d-mlp", "64"))  # fmt: skip
    assert pretraining_corpus(model) == world.resolve() / "pretraining.jsonl"
    assert "the facts of facts.json" in (model / "README.md").read_text()


@pytest.mark.usefixtures("isolated")
def test_a_real_model_is_corrupted_by_the_papers_lora_recipe(micro_model, micro_world, tmp_path):
    # Without llmkit's pretraining record the model is not a world model: the paper's recipe, LoRA
    # on every linear layer, and the unlearning method trains on the adapter merged into its base.
    real = tmp_path / "real"
    shutil.copytree(micro_model, real, ignore=shutil.ignore_patterns("llmkit_pretrain.json"))
    cache = tmp_path / "cache"
    run = ok(llmkit(*restor_args(real, micro_world, micro_world / "misinformation.jsonl", tmp_path / "run",
                                 "--k", "0", "--limit", "1", "--cache", cache, "--corrupt-epochs", "1",
                                 "--method", "ga", "--unlearn-steps", "1")))  # fmt: skip
    assert "corrupted model trained and cached" in run.stderr
    [corrupted] = [p for p in (cache / "corrupted").iterdir() if p.is_dir() and not p.name.endswith(".checkpoints")]
    adapter = json.loads((corrupted / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(real.resolve())
    assert {"q_proj", "down_proj"} <= {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    record = json.loads((corrupted / "restor_corruption.json").read_text())
    assert record["lora"] == {"rank": 8, "targets": ["all-linear"]} and record["budget"]["learning_rate"] == 5e-5
    metrics = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["restor"]
    assert list(metrics) == ["clean", "corrupted", "ga"]
