import pytest
import torch
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from conftest import FAMILIES, PROMPTS
from llmkit.errors import BadInputError
from llmkit.generation import GenerationParams, HFBackend, cut_at_stop, load_backend

CONTINUATIONS = [" Paris", " Paris.", " 34 = 46", " eight nine", " Bob was born in Lyon."]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_score_equals_unbatched(family, loaded_models):
    model, tokenizer = loaded_models[family]
    batched = HFBackend(model, tokenizer, batch_size=8).score(PROMPTS, CONTINUATIONS)
    one_by_one = HFBackend(model, tokenizer, batch_size=1)
    for prompt, continuation, score in zip(PROMPTS, CONTINUATIONS, batched):
        [single] = one_by_one.score([prompt], [continuation])
        assert score.token_ids == single.token_ids and len(score.logprobs) > 0
        assert max(abs(a - b) for a, b in zip(score.logprobs, single.logprobs)) <= 1e-4


def test_score_is_the_log_probability_of_each_continuation_token(loaded_models):
    model, tokenizer = loaded_models["llama"]
    [score] = HFBackend(model, tokenizer).score(["Alice was born in"], [" Paris and Lyon"])
    ids = tokenizer("Alice was born in Paris and Lyon", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logprobs = model(ids).logits[0].log_softmax(-1)
    n = len(score.token_ids)
    assert ids[0, -n:].tolist() == score.token_ids
    expected = logprobs[-n - 1 : -1].gather(-1, ids[0, -n:, None])[:, 0]
    assert torch.allclose(torch.tensor(score.logprobs), expected, atol=1e-5)
    assert score.total == pytest.approx(expected.sum().item(), abs=1e-4)
    assert score.greedy == bool((logprobs[-n - 1 : -1].argmax(-1) == ids[0, -n:]).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_next_token_log_probabilities_come_from_the_same_pass(family, loaded_models):
    """`score(..., next_tokens=...)`: each token's log-probability after the whole text, in a batch
    of texts of different lengths (right padding), as one text alone gives it."""
    model, tokenizer = loaded_models[family]
    wanted = (5, 17, 42)
    scores = HFBackend(model, tokenizer, batch_size=8).score(PROMPTS, CONTINUATIONS, next_tokens=wanted)
    for prompt, continuation, score in zip(PROMPTS, CONTINUATIONS, scores):
        ids = tokenizer(prompt + continuation, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            last = model(ids).logits[0, -1].log_softmax(-1)
        assert torch.allclose(torch.tensor(score.next_logprobs), last[list(wanted)], atol=1e-4)
    assert all(s.next_logprobs == [] for s in HFBackend(model, tokenizer).score(PROMPTS, CONTINUATIONS))


def test_greedy_continuation_is_flagged_greedy(loaded_models):
    model, tokenizer = loaded_models["llama"]
    backend = HFBackend(model, tokenizer)
    [generation] = backend.generate(["one two three"], GenerationParams(max_new_tokens=4))
    [score] = backend.score(["one two three"], generation.texts)
    assert score.greedy


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_generation_equals_one_prompt_at_a_time(family, loaded_models):
    model, tokenizer = loaded_models[family]
    params = GenerationParams(max_new_tokens=16)
    batched = HFBackend(model, tokenizer, batch_size=4).generate(PROMPTS, params)
    single = HFBackend(model, tokenizer, batch_size=1)
    for prompt, generation in zip(PROMPTS, batched):
        assert generation.prompt == prompt
        assert single.generate([prompt], params)[0].texts == generation.texts


def test_progress_moves_while_a_batch_decodes(loaded_models):
    model, tokenizer = loaded_models["llama"]
    reports = []
    HFBackend(model, tokenizer, batch_size=len(PROMPTS)).generate(
        PROMPTS, GenerationParams(max_new_tokens=4), lambda done, total: reports.append((done, total))
    )
    # One batch: a report after each of its 4 decoding steps, then the batch's own.
    assert [done for done, _ in reports[:4]] == [len(PROMPTS) * step / 4 for step in (1, 2, 3, 4)]
    assert reports[-1] == (len(PROMPTS), len(PROMPTS))


def test_inputs_beyond_the_context_are_refused_before_any_work(loaded_models):
    model, tokenizer = loaded_models["llama"]
    backend = HFBackend(model, tokenizer, batch_size=2)
    with pytest.raises(BadInputError, match="beyond the model's context of 512 tokens"):
        backend.generate(PROMPTS, GenerationParams(max_new_tokens=10**23))
    with pytest.raises(BadInputError, match="beyond the model's context of 512 tokens"):
        backend.score(["word " * 600], [" end"])


def test_an_empty_prompt_without_a_bos_token_is_refused(loaded_models):
    model, with_bos = loaded_models["gpt2"]
    backend = Tokenizer.from_str(with_bos.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=with_bos.eos_token, pad_token=with_bos.eos_token
    )
    assert not tokenizer("")["input_ids"]
    with pytest.raises(BadInputError, match="prompt 2 of 2 is empty .* adds no BOS token"):
        HFBackend(model, tokenizer, batch_size=2).generate(["Hello", ""], GenerationParams(max_new_tokens=2))


def test_auto_batch_size_gives_the_same_results(loaded_models):
    model, tokenizer = loaded_models["qwen2"]
    params = GenerationParams(max_new_tokens=8)
    assert [g.texts for g in HFBackend(model, tokenizer, "auto").generate(PROMPTS, params)] == [
        g.texts for g in HFBackend(model, tokenizer, 2).generate(PROMPTS, params)
    ]


def test_sampling_is_seeded_and_returns_num_samples(loaded_models):
    model, tokenizer = loaded_models["llama"]
    backend = HFBackend(model, tokenizer, batch_size=2)
    params = GenerationParams(max_new_tokens=12, temperature=1.0, num_samples=3, seed=7)
    first = backend.generate(PROMPTS[:3], params)
    again = backend.generate(PROMPTS[:3], params)
    assert [g.texts for g in first] == [g.texts for g in again]
    assert all(len(g.texts) == 3 for g in first)
    assert any(len(set(g.texts)) > 1 for g in first), "samples of a random model should differ"


def test_stop_strings_cut_the_text(loaded_models):
    model, tokenizer = loaded_models["gpt2"]
    backend = HFBackend(model, tokenizer)
    [free] = backend.generate([PROMPTS[0]], GenerationParams(max_new_tokens=24))
    text = free.texts[0]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    [stopped] = backend.generate([PROMPTS[0]], GenerationParams(max_new_tokens=24, stop=(stop,)))
    assert stopped.texts[0] == cut_at_stop(text, [stop]) and stop not in stopped.texts[0]


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("a. b\nc", ["\n", "."]) == "a"
    assert cut_at_stop("abc", ["x"]) == "abc"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_new_tokens": 0}, "--max-new-tokens must be at least 1"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"num_samples": 2}, "several samples per prompt need sampling"),
        ({"top_p": 0.0, "temperature": 1.0}, "--top-p must be in"),
        ({"stop": ("\n", "")}, "--stop takes a non-empty string"),
    ],
)
def test_bad_generation_params(kwargs, message):
    with pytest.raises(BadInputError, match=message):
        GenerationParams(**kwargs)


def test_vllm_backend_without_vllm_names_the_install_command(llama_dir, monkeypatch):
    monkeypatch.setattr("llmkit.generation.vllm_available", lambda: False)
    with pytest.raises(BadInputError, match=r"pip install 'llmkit\[vllm\]'"):
        load_backend("vllm", str(llama_dir))


def test_unknown_backend(llama_dir):
    with pytest.raises(BadInputError, match="unknown backend 'tgi'; choose one of hf, vllm"):
        load_backend("tgi", str(llama_dir))


def test_backend_reports_the_resolved_dtype_and_closes_as_a_context_manager(llama_dir, monkeypatch):
    closed = []
    monkeypatch.setattr(HFBackend, "close", lambda self: closed.append(self))
    with load_backend("hf", str(llama_dir), device="cpu") as backend:
        assert backend.dtype == torch.float32  # what --dtype auto means on CPU, for every backend
        assert backend.generate(PROMPTS[:1], GenerationParams(max_new_tokens=2))[0].texts[0]
    assert closed == [backend]
