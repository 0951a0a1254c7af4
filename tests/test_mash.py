"""MASH's parts one by one: the reward against hand-computed values (every penalty, the running
minimum across steps, its restoration on resume, a group with no correct rollout), the tag
protocol on malformed segments, BM25's deterministic ranking, the warm-start traces and their
loss mask, and the token-level rollout's env_mask."""

import math
from types import SimpleNamespace

import pytest

from llmkit.errors import BadInputError
from llmkit.methods.configs import MashConfig
from llmkit.methods.mash import (
    MIN_SEARCHES_FILE,
    SEARCH_LIMIT_WARNING,
    Action,
    Document,
    Episode,
    PayPerSearchReward,
    Rollout,
    SearchEnvironment,
    SearchIndex,
    add_protocol_tokens,
    build_warm_start,
    direct_share,
    extract_answer,
    fewest_searches,
    format_documents,
    min_searches_callback,
    parse_action,
    pay_per_search_rewards,
    penalty,
    run_episodes,
    sentence_passages,
    stop_token_ids,
)
from llmkit.training import IGNORE, encode_records

DOCS = [
    Document("d2", "Ada Vell", "Ada Vell was born in Tetran. Ada Vell worked as a baker."),
    Document("d1", "Bo Kern", "Bo Kern was born in Zako. Bo Kern was married to Ada Vell."),
    Document("d3", "Cy Rund", "Cy Rund was born in Mitrum."),
    Document("d0", "Cy Rund", "Cy Rund was born in Mitrum."),  # the same text as d3: a tie
]


@pytest.fixture(scope="module")
def index():
    return SearchIndex(DOCS)


# ---- the reward -------------------------------------------------------------------------------

COS = math.cos
SIN = math.sin
PI = math.pi


@pytest.mark.parametrize(
    ("kind", "n", "m", "expected"),
    [
        ("exp", 0, 0, 1.0),
        ("exp", 1, 0, 0.5),
        ("exp", 3, 1, 0.25),
        ("exp", 2, 2, 1.0),
        ("otc", 0, 0, 1.0),
        ("otc", 1, 0, COS(PI / 7)),  # cos(nπ/(2n + 5))
        ("otc", 2, 0, COS(2 * PI / 9)),
        ("otc", 1, 1, 1.0),  # sin(π/2): the peak at n = m̂
        ("otc", 3, 1, SIN(1.5 * PI / 2)),  # f = 2·1·3/4 = 1.5
        ("otc", 4, 2, SIN((16 / 6) * PI / 4)),  # f = 2·2·4/6
        ("otc_strict", 0, 0, 1.0),
        ("otc_strict", 1, 0, 0.0),
        ("otc_strict", 3, 1, SIN(1.5 * PI / 2)),
        ("linear", 0, 0, 1.0),
        ("linear", 3, 0, 0.5),  # 1 − 3/6
        ("linear", 7, 0, 0.0),
        ("none", 4, 0, 1.0),
    ],
)
def test_penalty_equals_hand_computed_values(kind, n, m, expected):
    assert penalty(kind, n, m, lam=0.5, max_searches=5) == pytest.approx(expected)


def _step(ids, correct, searches, fewest, **settings):
    """One training step's rewards, as the trainer computes them: m̂ first, then R."""
    fewest.update(fewest_searches(ids, correct, searches, fewest))
    return pay_per_search_rewards(ids, correct, searches, fewest, **settings)


def test_exp_reward_uses_the_group_minimum_and_zero_for_wrong_answers():
    fewest: dict[str, int] = {}
    rewards = _step(
        ["q", "q", "q", "r", "r"], [True, True, False, True, True], [1, 3, 0, 2, 2], fewest,
        kind="exp", lam=0.5, max_searches=5,
    )  # fmt: skip
    assert rewards == [1.0, 0.25, 0.0, 1.0, 1.0]
    assert fewest == {"q": 1, "r": 2}


def test_running_minimum_carries_across_steps_and_a_group_with_no_correct_rollout():
    fewest: dict[str, int] = {}
    step = dict(kind="exp", lam=0.8, max_searches=5)
    assert _step(["q"] * 2, [True, True], [2, 3], fewest, **step) == pytest.approx([1.0, 0.8])
    # Step 2: a direct correct answer lowers m̂ to 0, so the same 2 searches now cost λ².
    assert _step(["q"] * 2, [True, True], [0, 2], fewest, **step) == pytest.approx([1.0, 0.64])
    # Step 3: no rollout is right: every reward is 0 and the minimum stays.
    assert _step(["q"] * 2, [False, False], [0, 1], fewest, **step) == [0.0, 0.0]
    assert fewest == {"q": 0}
    # Step 4: the historical minimum still counts when this group's best needed a search.
    assert _step(["q"], [True], [1], fewest, **step) == pytest.approx([0.8])


def _reward_call(reward, ids, answers, searches, golds):
    return reward([""] * len(ids), [""] * len(ids), id=ids, answers=golds, searches=searches, answer_text=answers)


def test_trl_reward_function_judges_by_exact_match_and_keeps_state_only_in_training():
    reward = PayPerSearchReward(MashConfig(lam=0.5))
    golds = [["Zako"]] * 3
    assert _reward_call(reward, ["q"] * 3, ["zako.", "The Zako", None], [0, 1, 0], golds) == [1.0, 0.5, 0.0]
    assert reward.fewest_so_far == {"q": 0}
    reward.training = lambda: False
    assert _reward_call(reward, ["r"], ["Tetran"], [2], [["Tetran"]]) == [1.0]
    assert reward.fewest_so_far == {"q": 0}


def test_running_minimum_is_saved_with_checkpoints_and_restored_on_resume(tmp_path):
    reward = PayPerSearchReward(MashConfig())
    callback = min_searches_callback(reward)
    args = SimpleNamespace(output_dir=str(tmp_path))
    (tmp_path / "checkpoint-2").mkdir()
    reward.fewest_so_far = {"q": 3}
    callback.on_save(args, SimpleNamespace(global_step=2, is_world_process_zero=True), None)
    assert (tmp_path / "checkpoint-2" / MIN_SEARCHES_FILE).is_file()
    reward.fewest_so_far = {"q": 0, "r": 1}  # later steps, never checkpointed
    callback.on_train_begin(args, SimpleNamespace(global_step=2), None)
    assert reward.fewest_so_far == {"q": 3}
    callback.on_train_begin(args, SimpleNamespace(global_step=0), None)  # a fresh run starts empty
    assert reward.fewest_so_far == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lam": 0.0}, "--lam must be in (0, 1]"),
        ({"lam": 1.5}, "--lam must be in (0, 1]"),
        ({"num_generations": 1}, "--num-generations must be at least 2"),
        ({"penalty": "cubic"}, "unknown --penalty 'cubic'"),
        ({"max_searches": 0}, "--max-searches must be at least 1"),
    ],
)
def test_config_refuses_bad_settings(change, message):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace("]", r"\]")):
        MashConfig(**change)


def test_lambda_of_one_is_allowed():
    assert MashConfig(lam=1.0).lam == 1.0


# ---- the protocol ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "action"),
    [
        ("<search> Ada Vell </search>", Action("search", "Ada Vell")),
        ("<answer> Zako </answer>", Action("answer", "Zako")),
        ("<search> Ada", Action("search", "Ada")),  # cut at the length limit: its end closes the tag
        ("<answer> Zako", Action("answer", "Zako")),
        ("<search> a <search> b </search>", Action("search", "b")),  # two openings: the last decides
        ("<search> x </search> <answer> y", Action("answer", "y")),
        ("Zako </answer>", Action("none")),  # a closing tag with no opening
        ("I think it is Zako", Action("none")),
        ("<search></search>", Action("search", "")),
        ("<answer> Zako </search>", Action("answer", "Zako")),  # closed by the other stop tag
    ],
)
def test_parse_action_on_malformed_segments(segment, action):
    assert parse_action(segment) == action


def test_extract_answer_takes_the_last_complete_tag_and_ignores_text_after_it():
    assert extract_answer("<answer> a </answer> then <answer> Zako </answer> and more text") == "Zako"
    assert extract_answer("<answer> unclosed") is None
    assert extract_answer("no tags") is None


def test_empty_query_counts_as_a_search_and_returns_no_documents(index):
    env = SearchEnvironment(index, top_k=2, max_searches=5)
    episode = Episode("Q", [])
    assert env.step(episode, "<search>  </search>") == "\n"
    assert episode.searches == 1 and not episode.done


def test_searches_beyond_the_cap_get_the_warning_and_the_episode_stops_after_its_turns(index):
    env = SearchEnvironment(index, top_k=1, max_searches=2)
    episodes = run_episodes(lambda contexts: ["<search> Ada Vell </search>"] * len(contexts), ["Q"], env)
    episode = episodes[0]
    assert episode.searches == env.max_turns == 4 and episode.answer is None
    replies = [text for text, by_policy in episode.segments if not by_policy]
    assert replies[:2] == [format_documents([DOCS[0]])] * 2
    assert replies[2:] == [SEARCH_LIMIT_WARNING] * 2


def test_no_answer_tag_ends_the_episode_unanswered(index):
    env = SearchEnvironment(index, top_k=1, max_searches=5)
    episode = run_episodes(lambda contexts: ["it is Zako"], ["Q"], env)[0]
    assert episode.done and episode.answer is None and episode.searches == 0
    assert episode.segments == [("it is Zako", True)]


def test_environment_closes_a_tag_the_stop_cut_off(index):
    """Backends cut the stop string off their texts: the environment appends it back."""
    env = SearchEnvironment(index, top_k=1, max_searches=5)
    policy_turns = iter([["<search> Bo Kern "], ["<answer> Zako "]])
    episode = run_episodes(lambda contexts: next(policy_turns), ["Q:"], env)[0]
    assert episode.answer == "Zako" and episode.searches == 1
    assert episode.completion.startswith("<search> Bo Kern </search>\n<document>\n(Title: Bo Kern)")
    assert episode.completion.endswith("<answer> Zako </answer>")


def test_bm25_ranks_by_score_then_document_id_and_skips_unmatched_documents(index):
    assert [d.doc_id for d in index.search("Cy Rund", 3)] == ["d0", "d3"]  # tied: by id; no other matches
    assert index.search("Ada Vell", 1)[0].doc_id == "d2"
    assert [d.doc_id for d in index.search("Ada Vell", 3)] == ["d2", "d1"]  # d1 mentions Ada Vell once
    assert index.search("", 3) == [] and index.search("the of", 3) == [] and index.search("unknownword", 3) == []


def test_empty_corpus_is_refused():
    with pytest.raises(BadInputError, match="corpus is empty"):
        SearchIndex([])


# ---- the warm start -------------------------------------------------------------------------------


def _items():
    return [
        {"id": f"q{i}", "question": f"Where was Ada Vell born {i}?", "answers": ["Tetran"], "prompt": f"Q{i}:",
         "queries": ["Ada Vell"] if i % 2 else ["Bo Kern", "Ada Vell"], "known": i < 3}
        for i in range(9)
    ]  # fmt: skip


def test_warm_start_answers_a_random_share_directly_and_searches_the_rest(index):
    assert direct_share() == 0.332
    traces = build_warm_start(_items(), index, top_k=1, share_direct=1 / 3, seed=0)
    direct = [t for t in traces if t["direct"]]
    assert len(direct) == 3 and all(t["searches"] == 0 for t in direct)
    for trace in traces:
        trained = [text for text, by_policy in trace["segments"] if by_policy]
        assert trained[-1] == "<answer> Tetran </answer>"
        assert len(trained) == trace["searches"] + 1
    two_hop = next(t for t in traces if t["searches"] == 2)
    assert two_hop["segments"][0][0] == "<search> Bo Kern </search>"
    assert two_hop["segments"][1] == [format_documents([DOCS[1]]), False]
    boundary = build_warm_start(_items(), index, top_k=1, share_direct=0.0, assign="boundary")
    assert {t["id"] for t in boundary if t["direct"]} == {"q0", "q1", "q2"}


def test_documents_are_masked_out_of_the_warm_start_loss(index, loaded_models):
    model, tokenizer = loaded_models["llama"]
    trace = build_warm_start(_items()[:1], index, top_k=1, share_direct=0.0)[0]
    (encoded,) = encode_records(tokenizer, [trace])
    documents = tokenizer(trace["segments"][1][0], add_special_tokens=False)["input_ids"]
    prompt = len(tokenizer(trace["prompt"])["input_ids"])
    labels = encoded["labels"]
    search = len(tokenizer(trace["segments"][0][0], add_special_tokens=False)["input_ids"])
    assert labels[:prompt] == [IGNORE] * prompt
    assert labels[prompt : prompt + search] == encoded["input_ids"][prompt : prompt + search]
    assert labels[prompt + search : prompt + search + len(documents)] == [IGNORE] * len(documents)
    assert labels[-1] != IGNORE


# ---- the rollout ----------------------------------------------------------------------------------


def test_rollout_masks_the_environment_tokens_and_counts_searches(index, model_dirs):
    """A random-init Llama with the tags added; its sampling is replaced by a scripted policy, so
    the test checks the bookkeeping: env_mask is 1 exactly on what the policy wrote."""
    from llmkit.models import load_model

    model, tokenizer = load_model(str(model_dirs["llama"]), dtype="float32", device="cpu")
    assert set(add_protocol_tokens(model, tokenizer)) <= {"<search>", "</search>", "<answer>", "</answer>",
                                                          "<document>", "</document>"}  # fmt: skip
    stops = stop_token_ids(tokenizer)
    script = {0: "<search> Bo Kern </search>", 1: "<answer> Zako </answer>"}
    turn = {"n": 0}

    def scripted(self, model, tokenizer, contexts, max_new_tokens, stop_ids):
        text = script[turn["n"]]
        turn["n"] += 1
        return [tokenizer(text, add_special_tokens=False)["input_ids"] for _ in contexts]

    rollout = Rollout(SearchEnvironment(index, top_k=1, max_searches=5), MashConfig(max_completion_length=400))
    rollout._sample = scripted.__get__(rollout)
    out = rollout.roll(model, tokenizer, ["Question: Where was Bo Kern born?\nAnswer:"])
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    assert out["searches"] == [1] and out["answer_text"] == ["Zako"] and out["logprobs"] is None
    policy = [t for t, m in zip(ids, mask) if m]
    assert tokenizer.decode(policy).replace(" ", "") == "<search>BoKern</search><answer>Zako</answer>"
    environment = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "(Title: Bo Kern)" in environment and "<answer>" not in environment
    assert ids[-1] in stops


def test_stop_ids_need_the_tags_to_be_tokens(loaded_models):
    _, tokenizer = loaded_models["llama"]
    with pytest.raises(BadInputError, match="train mash"):
        stop_token_ids(tokenizer)


def test_sentence_passages_make_each_search_return_the_fact_it_names():
    passages = sentence_passages([DOCS[0], DOCS[1]])
    assert [p.doc_id for p in passages] == ["d2-0", "d2-1", "d1-0", "d1-1"]
    assert passages[1] == Document("d2-1", "Ada Vell", "Ada Vell worked as a baker.")
    index = SearchIndex(passages)
    assert index.search("Ada Vell worked", 1)[0].text == "Ada Vell worked as a baker."
    assert index.search("Bo Kern married", 1)[0].text == "Bo Kern was married to Ada Vell."
