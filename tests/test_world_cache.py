"""The world models llmkit ships and its cache hands out (llmkit/world/cache.py): they match today's
generator and recipes, load without llmkit, are what the cache hands out without copying, a damaged
cached world names the fix, the shipped micro model knows the facts it saw often and learned the toy
language, and `rebuild` still pretrains one that knows what it saw."""

import json

import pytest
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.knowledge import evaluate_knowledge
from llmkit.evals.skills import evaluate_skills
from llmkit.generation import load_backend
from llmkit.world.cache import PRESETS, SHIPPED_MODELS, ensure_model, ensure_world, model_dir, shipped_record
from llmkit.world.generator import world_digest
from llmkit.world.pretrain import recipe_id

FIX = "the world generator or a preset changed without re-shipping the world models: run `make world-models`"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_shipped_model_was_pretrained_on_the_world_the_generator_writes_today(name, tmp_path):
    world, recipe = PRESETS[name]
    record = shipped_record(name)
    assert record is not None, f"no model shipped for preset {name!r}; {FIX}"
    world_dir, _ = ensure_world(tmp_path, world)
    assert record["world_digest"] == world_digest(world_dir), FIX
    assert record["recipe_id"] == recipe_id(world, recipe), FIX
    assert record["versions"]["llmkit"] and record["cpu_capability"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_shipped_model_is_an_ordinary_hf_directory_of_the_recorded_size(name):
    path = SHIPPED_MODELS / name
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    record = shipped_record(name)
    assert sum(p.numel() for p in model.parameters()) == record["num_parameters"]
    assert len(tokenizer) == model.config.vocab_size and tokenizer.bos_token == "<s>"
    with safe_open(path / "model.safetensors", "pt") as weights:  # safetensors, float32 as trained
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {"F32"}


def test_the_cache_hands_out_the_shipped_model_without_copying_it(tmp_path):
    world, recipe = PRESETS["micro"]
    path, source = ensure_model(tmp_path, world, recipe)
    assert (path, source) == (SHIPPED_MODELS / "micro", "shipped")
    assert not (model_dir(tmp_path, world, recipe)).exists()  # nothing was trained or copied


def test_a_damaged_cached_world_is_one_line_naming_the_fix(tmp_path):
    world, recipe = PRESETS["micro"]
    world_dir, _ = ensure_world(tmp_path, world)
    (world_dir / "probes.jsonl").unlink()
    with pytest.raises(BadInputError, match="is incomplete \\(no probes.jsonl\\); delete it and build it again"):
        ensure_model(tmp_path, world, recipe)


# --- what the shipped micro model knows -------------------------------------------------------


@pytest.fixture(scope="module")
def knowledge(micro_world, micro_model):
    backend = load_backend("hf", str(micro_model), device="cpu")
    probes = [p for p in read_records(micro_world / "probes.jsonl") if p["form"] == "qa"]
    metrics, samples = evaluate_knowledge(backend, probes, read_records(micro_world / "facts.jsonl"))
    return metrics, samples


@pytest.mark.training
def test_micro_model_knows_the_facts_it_saw_often(knowledge, bound):
    metrics, samples = knowledge
    qa = {exposure: by_form["qa"] for exposure, by_form in metrics["accuracy"].items()}
    # Its demonstration entities: the micro model extracts little from biographies alone.
    bound("demonstration_qa_exposure_30", metrics["populations"]["demonstration"]["trained"]["30"]["qa"], ">=", 0.8)
    assert qa["30"] > qa["0"]
    # Unseen entities: the model answers (it confabulates) but does no better than a guesser.
    unseen = [s for s in samples if s["exposure"] == 0]
    assert sum(bool(s["generation"]) for s in unseen) >= 0.9 * len(unseen)
    bound("qa_exposure_0_above_chance", qa["0"] - metrics["chance"]["qa"], "<=", 0.1)


@pytest.mark.training
def test_micro_model_learned_the_toy_language(micro_world, micro_model, bound):
    backend = load_backend("hf", str(micro_model), device="cpu")
    items = [i for i in read_records(micro_world / "skills.jsonl") if i["split"] == "test"]
    metrics, samples = evaluate_skills(backend, items)
    assert set(metrics["accuracy"]) == {"comparison", "reversal", "language"}
    # Word for word: the micro model translates most words right (it mixes up 'the' and 'a',
    # so whole sentences are often one word off) and speaks only the invented lexicon.
    lexicon = {
        w for i in read_records(micro_world / "skills.jsonl") if i["skill"] == "language" for w in i["answer"].split()
    }
    pairs = [
        (a, g)
        for s in samples
        if s["skill"] == "language"
        for a, g in zip(s["answer"].split(), s["generation"].split())
    ]
    bound("language_words_right", sum(a == g for a, g in pairs) / len(pairs), ">=", 0.7)
    assert all(g in lexicon for _, g in pairs), metrics


@pytest.mark.training
def test_rebuild_pretrains_the_recipe_here_and_the_model_knows_what_it_saw_often(tmp_path, bound):
    """The recipe itself, on this machine's kernels: the micro model trained from scratch answers
    the QA facts of demonstration entities it saw 30 times (the shipped one: 97%), and guesses no
    better than chance on entities it never saw."""
    world, recipe = PRESETS["micro"]
    path, source = ensure_model(tmp_path, world, recipe, rebuild=True)
    assert (path, source) == (model_dir(tmp_path, world, recipe), "pretrained")
    assert ensure_model(tmp_path, world, recipe, rebuild=False)[1] == "shipped"
    summary = json.loads((path / "llmkit_pretrain.json").read_text())
    assert summary["world_digest"] == shipped_record("micro")["world_digest"]
    world_dir, _ = ensure_world(tmp_path, world)
    probes = [p for p in read_records(world_dir / "probes.jsonl") if p["form"] == "qa"]
    metrics, _ = evaluate_knowledge(
        load_backend("hf", str(path), device="cpu"), probes, read_records(world_dir / "facts.jsonl")
    )
    qa = {exposure: by_form["qa"] for exposure, by_form in metrics["accuracy"].items()}
    bound("demonstration_qa_exposure_30", metrics["populations"]["demonstration"]["trained"]["30"]["qa"], ">=", 0.7)
    bound("qa_exposure_0_above_chance", qa["0"] - metrics["chance"]["qa"], "<=", 0.15)
