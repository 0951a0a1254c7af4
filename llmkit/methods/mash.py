"""MASH: pay-per-search RL as abstention training ("Pay-Per-Search Models are Abstention Models",
retitled "MASH: Modeling Abstention via Selective Help-Seeking", arXiv 2510.01152).

A policy answers a question directly (`<answer> … </answer>`) or asks a search tool first
(`<search> query </search>`, answered with `<document>` blocks). GRPO trains it on

    R = EM(answer, gold) · penalty(n, m̂)

with n the rollout's searches and m̂ the fewest searches among the correct rollouts of the same
question, in this group and in every earlier step (the running minimum). With `exp`, the paper's
MASH-EXP, penalty = λ^(n − m̂): a search the question did not need costs a factor λ. At test time
a search is the abstention: the model asks for help where it does not know.

Top-down, as the algorithm runs:
1. the search tool: `read_corpus`, `SearchIndex` (BM25 through bm25s), `format_documents`;
2. the tag protocol: `parse_action`, `extract_answer`, `SearchEnvironment` (one step per segment
   the policy writes) and `run_episodes` (the text-level loop every backend drives at test time);
3. the warm start: `build_warm_start` (direct and search traces, documents masked out of the loss);
4. the reward: `penalty`, `pay_per_search_rewards`, `PayPerSearchReward` (TRL's reward function,
   with the running minimum saved in checkpoints by `MinSearchesCheckpoint`);
5. the rollout: `Rollout`, TRL's `rollout_func` (the same protocol on token ids, with `env_mask`);
6. training: `train_mash`, the warm start through the one training pipeline, then `grpo_trainer`.

Where llmkit differs from the official code (momergul/mash): the retriever is BM25 over a JSONL
corpus (the paper's e5 index over Wikipedia is not available here), with ties broken by document
id so that results are the same on every machine; the answer is judged by exact match only (no
LLM judge); the warm-start traces are built programmatically (an oracle decomposition, the real
retrieval results inserted) instead of sampled from Qwen2.5-32B, as the reference's tiny
reproduction suggests; and the tags are added to the vocabulary, since GRPO's HF generation stops
at token ids only.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.metrics.text import exact_match

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from llmkit.configs import TrainingBudget
    from llmkit.methods.configs import MashConfig, WarmStartConfig

MASH_PROMPT = (
    "Answer the given question. You must conduct reasoning between <think> and </think> every time you get new "
    "information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> "
    "query </search> and it will return the top searched results between <document> and </document>. You need to "
    "make every search call count and gain helpful results. If you find no further external knowledge is needed, "
    "you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For "
    "example, <answer> Beijing </answer>. Question: {question}\n"
)
"""MASH's prompt, verbatim (`data_utils/rl_dataset.py`, prompt type "baseline")."""
SHORT_PROMPT = "Question: {question}\nAnswer:"
"""The world model's form: its pretraining's QA layout, the tags learnt in the warm start."""
PROMPTS = {"mash": MASH_PROMPT, "short": SHORT_PROMPT}
PROMPT_STYLES = ("auto", *PROMPTS)


def prompt_style(style: str, items: Sequence[Mapping[str, Any]]) -> str:
    """`style`, with auto resolved: short for a world's questions (they carry an exposure), else mash."""
    if style not in PROMPT_STYLES:
        raise BadInputError(f"--prompt must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")
    if style != "auto":
        return style
    return "short" if items and all("exposure" in item for item in items) else "mash"


def with_prompts(items: Sequence[Mapping[str, Any]], style: str) -> list[dict[str, Any]]:
    """The items, each with the `prompt` of `style` (auto: `prompt_style`) around its question."""
    template = PROMPTS[prompt_style(style, items)]
    return [{**item, "prompt": template.format(question=item["question"])} for item in items]


SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
DOCUMENT_OPEN, DOCUMENT_CLOSE = "<document>", "</document>"
TAGS = (SEARCH_OPEN, SEARCH_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, DOCUMENT_OPEN, DOCUMENT_CLOSE)
STOP_TAGS = (SEARCH_CLOSE, ANSWER_CLOSE)
"""Where a segment the policy writes ends (MASH's stop strings)."""
SEARCH_LIMIT_WARNING = "\n<warning>SEARCH LIMIT REACHED</warning>\n"


# ---- 1. the search tool -----------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str


def read_corpus(path: str | Path) -> list[Document]:
    """The documents of a corpus JSONL (any `read_records` format): `doc_id` (or `id`), `title`
    and `text` per record; ids must be unique."""
    records = read_records(path, required={"text": str})
    documents = []
    for number, record in enumerate(records, start=1):
        doc_id = str(record.get("doc_id", record.get("id", number)))
        documents.append(Document(doc_id, str(record.get("title", "")), record["text"]))
    ids = [d.doc_id for d in documents]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise BadInputError(f"{path}: document id {repeated!r} appears more than once; ids must be unique")
    return documents


def sentence_passages(documents: Sequence[Document]) -> list[Document]:
    """Each document cut into its sentences, one passage each (id `{doc_id}-{n}`, the document's
    title): a search then returns the one fact it asks for, as Wikipedia passages do, not a
    whole biography."""
    passages = []
    for d in documents:
        sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", d.text) if s.strip()]
        passages += [Document(f"{d.doc_id}-{n}", d.title, text) for n, text in enumerate(sentences)]
    return passages


def write_corpus(path: Path, documents: Sequence[Document]) -> None:
    """A corpus JSONL `read_corpus` reads back."""
    from llmkit.data import write_jsonl

    write_jsonl(path, [{"doc_id": d.doc_id, "title": d.title, "text": d.text} for d in documents])


class SearchIndex:
    """BM25 (bm25s, its defaults: k1 1.5, b 0.75, English stopwords, lower case) over the titles
    and texts of `documents`. `search` is deterministic: documents are ranked by score, ties by
    document id (bm25s returns ties in arbitrary order), and a document no query term matches is
    never returned."""

    def __init__(self, documents: Sequence[Document]) -> None:
        import bm25s

        if not documents:
            raise BadInputError("the search corpus is empty; it needs at least one document")
        self.documents = sorted(documents, key=lambda d: d.doc_id)
        self._bm25s = bm25s
        self._retriever = bm25s.BM25()
        corpus = bm25s.tokenize([f"{d.title} {d.text}" for d in self.documents], show_progress=False)
        self._retriever.index(corpus, show_progress=False)
        self._vocabulary = corpus.vocab

    def search(self, query: str, k: int) -> list[Document]:
        """The top `k` documents for `query`; none for a query with no indexed term (or an empty one)."""
        import numpy as np

        terms = self._bm25s.tokenize(query, show_progress=False, return_ids=False)[0] if query.strip() else []
        terms = [t for t in terms if t in self._vocabulary]
        if not terms:
            return []
        scores = self._retriever.get_scores(terms)
        # lexsort sorts by the last key first: descending score, then the (id-sorted) position.
        order = np.lexsort((np.arange(len(scores)), -scores))
        return [self.documents[i] for i in order[:k] if scores[i] > 0]


def format_documents(documents: Sequence[Document]) -> str:
    """MASH's tool output: "\\n" then "<document>\\n(Title: {title}) {text}\\n</document>\\n" per document."""
    return "\n" + "".join(f"{DOCUMENT_OPEN}\n(Title: {d.title}) {d.text}\n{DOCUMENT_CLOSE}\n" for d in documents)


# ---- 2. the tag protocol ------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """What one segment the policy wrote asks for: `search` (text: the query), `answer` (text: the
    answer) or `none` (no complete tag: the episode ends unanswered)."""

    kind: str
    text: str = ""


def parse_action(segment: str) -> Action:
    """The action of a segment, which ends where the policy stopped: at `</search>` or
    `</answer>` (the stop tags), at EOS or at the length limit. The last tag the segment opens
    decides; its text runs to the first stop tag after it (whichever: `<answer> x </search>`
    answers x) or, when the segment ended without one, to the end (the segment's end closes it).
    A closing tag with no opening tag is no action."""
    search, answer = segment.rfind(SEARCH_OPEN), segment.rfind(ANSWER_OPEN)
    if search < 0 and answer < 0:
        return Action("none")
    kind, start = ("answer", answer + len(ANSWER_OPEN)) if answer > search else ("search", search + len(SEARCH_OPEN))
    end = min((i for i in (segment.find(tag, start) for tag in STOP_TAGS) if i >= 0), default=len(segment))
    return Action(kind, segment[start:end].strip())


def closing_tag(action: Action, segment: str) -> str:
    """The closing tag the environment appends to a segment that ended without a stop tag."""
    close = {"search": SEARCH_CLOSE, "answer": ANSWER_CLOSE}.get(action.kind)
    return close if close and not segment.rstrip().endswith(STOP_TAGS) else ""


_ANSWER = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)


def extract_answer(text: str) -> str | None:
    """The last `<answer>…</answer>` of a trajectory, stripped (the official code's rule); text
    after it is ignored; None without a complete answer tag."""
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else None


@dataclass
class Episode:
    """One question's trajectory: the segments after the prompt, each marked as written by the
    policy (True) or by the environment (documents, warnings, closing tags: False)."""

    prompt: str
    segments: list[tuple[str, bool]]
    searches: int = 0
    answer: str | None = None
    done: bool = False

    @property
    def completion(self) -> str:
        return "".join(text for text, _ in self.segments)


class SearchEnvironment:
    """MASH's tool loop: each search is counted; up to `max_searches` return the top `top_k`
    documents, later ones MASH's warning; an answer ends the episode, as does a segment with no
    action or `max_searches + 2` turns (the official loop's bound)."""

    def __init__(self, index: SearchIndex, top_k: int, max_searches: int) -> None:
        self.index, self.top_k, self.max_searches = index, top_k, max_searches

    @property
    def max_turns(self) -> int:
        return self.max_searches + 2

    def step(self, episode: Episode, segment: str) -> str:
        """Record the policy's `segment` in `episode` and act on it; returns what the environment
        appends (the closing tag it lacked, then documents or the warning), "" when it is done."""
        episode.segments.append((segment, True))
        action = parse_action(segment)
        reply = closing_tag(action, segment)
        if action.kind == "answer":
            episode.answer, episode.done = action.text, True
        elif action.kind == "search":
            episode.searches += 1
            if episode.searches > self.max_searches:
                reply += SEARCH_LIMIT_WARNING
            else:
                reply += format_documents(self.index.search(action.text, self.top_k))
        else:
            episode.done = True
        if len([s for s in episode.segments if s[1]]) >= self.max_turns:
            episode.done = True
        if reply:
            episode.segments.append((reply, False))
        return "" if episode.done else reply


Policy = Callable[[list[str]], list[str]]
"""Writes the next segment of each context (prompt + trajectory so far), stopping at a stop tag."""


FIRST_ACTIONS = ("search", "answer")


def run_episodes(
    policy: Policy, prompts: Sequence[str], env: SearchEnvironment, first_action: str | None = None
) -> list[Episode]:
    """Every prompt's episode: the policy writes a segment for each unfinished trajectory, the
    environment answers, until each has answered, stopped or used its turns. With `first_action`
    the first segment is forced to open with that tag (as MASH's warm-start sampling forces its
    action sequences): the policy writes the rest of it."""
    episodes = [Episode(prompt, []) for prompt in prompts]
    opening = {"search": SEARCH_OPEN, "answer": ANSWER_OPEN}.get(first_action or "", "")
    if first_action is not None and not opening:
        raise BadInputError(f"--first-action must be one of {', '.join(FIRST_ACTIONS)}, got {first_action!r}")
    for turn in range(env.max_turns):
        active = [e for e in episodes if not e.done]
        if not active:
            break
        forced = opening if turn == 0 else ""
        for episode, segment in zip(active, policy([e.prompt + e.completion + forced for e in active])):
            env.step(episode, forced + segment)
    for episode in episodes:
        episode.done = True
    return episodes


def is_correct_answer(answer: str | None, golds: Sequence[str]) -> bool:
    """MASH's correctness: exact match after SQuAD normalisation with any gold alias."""
    return answer is not None and any(exact_match(answer, gold) for gold in golds)


# ---- 3. the warm start ---------------------------------------------------------------------------

WARM_START_ASSIGNMENTS = ("random", "boundary")


def direct_share(max_searches_in_traces: int = 2) -> float:
    """MASH's share of direct-answer traces: (1000 // (s + 1) // 4) * 4 of 1000 with s = 2 (332/1000)."""
    return (1000 // (max_searches_in_traces + 1) // 4) * 4 / 1000


def warm_start_trace(
    item: Mapping[str, Any], index: SearchIndex | None, top_k: int, queries: Sequence[str]
) -> dict[str, Any]:
    """One SFT trace: with no `queries` a direct answer; else one search per query, the real
    documents inserted (not trained on), then the gold answer."""
    segments: list[tuple[str, bool]] = []
    for query in queries:
        segments.append((f"{SEARCH_OPEN} {query} {SEARCH_CLOSE}", True))
        segments.append((format_documents(index.search(query, top_k) if index else []), False))
    segments.append((f"{ANSWER_OPEN} {item['answers'][0]} {ANSWER_CLOSE}", True))
    return {
        "id": item["id"],
        "prompt": item["prompt"],
        "segments": [list(s) for s in segments],
        "searches": len(queries),
        "text": item["prompt"] + "".join(text for text, _ in segments),
    }


def build_warm_start(
    items: Sequence[Mapping[str, Any]],
    index: SearchIndex,
    *,
    top_k: int,
    share_direct: float,
    assign: str = "random",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """MASH's warm-start traces: a random `share_direct` of the questions answered directly, the
    rest through their oracle decomposition (`queries`, else the question itself). `assign`
    "boundary" is the ablation that uses the knowledge boundary instead: direct exactly for the
    questions labelled known."""
    if assign not in WARM_START_ASSIGNMENTS:
        raise BadInputError(f"--assign must be one of {', '.join(WARM_START_ASSIGNMENTS)}, got {assign!r}")
    if not 0 <= share_direct <= 1:
        raise BadInputError(f"--direct-share must be in [0, 1], got {share_direct}")
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    direct = set(order[: round(share_direct * len(items))])
    traces = []
    for i in order:
        item = items[i]
        answer_directly = item.get("known") is True if assign == "boundary" else i in direct
        queries = () if answer_directly else item.get("queries") or [item["question"]]
        if not all(isinstance(q, str) and q.strip() for q in queries) or isinstance(queries, str):
            raise BadInputError(f"question {item['id']}: 'queries' must be a list of non-empty strings")
        traces.append({**warm_start_trace(item, index, top_k, queries), "direct": answer_directly})
    return traces


# ---- 4. the reward -------------------------------------------------------------------------------


def penalty(kind: str, searches: int, fewest: int, lam: float, max_searches: int) -> float:
    """The multiplier of a correct rollout with n = `searches` and m̂ = `fewest` (≤ n):
    exp λ^(n − m̂); otc cos(nπ / (2n + max_searches)) when m̂ = 0 (1 at n = 0), else
    sin(f·π / (2m̂)) with f = 2m̂n / (m̂ + n), which peaks at n = m̂; otc_strict as otc but 0 for
    any search when m̂ = 0; linear max(1 − n / (max_searches + 1), 0); none 1 (Search-R1's EM)."""
    n, m = searches, fewest
    if kind == "exp":
        return lam ** (n - m)
    if kind in ("otc", "otc_strict"):
        if m == 0:
            if n == 0:
                return 1.0
            return 0.0 if kind == "otc_strict" else math.cos(n * math.pi / (2 * n + max_searches))
        f = 2 * m * n / (m + n)
        return math.sin(f * math.pi / (2 * m))
    if kind == "linear":
        return max(1 - n / (max_searches + 1), 0.0)
    if kind == "none":
        return 1.0
    raise BadInputError(f"unknown penalty {kind!r}")


def fewest_searches(
    question_ids: Sequence[str], correct: Sequence[bool], searches: Sequence[int], so_far: Mapping[str, int]
) -> dict[str, int]:
    """m̂ per question: the running minimum `so_far` lowered to the searches of any correct
    rollout here; a question with no correct rollout keeps what it had (or has none)."""
    fewest = dict(so_far)
    for qid, ok, n in zip(question_ids, correct, searches):
        if ok:
            fewest[qid] = min(n, fewest.get(qid, n))
    return fewest


def pay_per_search_rewards(
    question_ids: Sequence[str],
    correct: Sequence[bool],
    searches: Sequence[int],
    fewest: Mapping[str, int],
    *,
    kind: str,
    lam: float,
    max_searches: int,
) -> list[float]:
    """R = EM · penalty(n, m̂) per rollout, m̂ = `fewest[question]` (`fewest_searches` of these
    rollouts, so m̂ ≤ n for every correct one); a wrong rollout earns 0."""
    return [
        penalty(kind, n, fewest[qid], lam, max_searches) if ok else 0.0
        for qid, ok, n in zip(question_ids, correct, searches)
    ]


MIN_SEARCHES_FILE = "mash_min_searches.json"


class PayPerSearchReward:
    """TRL's reward function for MASH: reads the rollout's answer and search count (the rollout's
    extra fields) and the dataset's `id` and `answers`. The running minimum `fewest_so_far` is
    this object's state: updated in training steps only, gathered over every process first (a
    group may span several), and saved in checkpoints (`MinSearchesCheckpoint`)."""

    __name__ = "pay_per_search"

    def __init__(self, config: MashConfig) -> None:
        self.config = config
        self.fewest_so_far: dict[str, int] = {}
        self.training: Callable[[], bool] = lambda: True

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        *,
        id: Sequence[str],
        answers: Sequence[Sequence[str]],
        searches: Sequence[int],
        answer_text: Sequence[str | None],
        log_metric: Callable[[str, float], None] | None = None,
        **_: Any,
    ) -> list[float]:
        from accelerate.utils import gather_object

        correct = [is_correct_answer(a, golds) for a, golds in zip(answer_text, answers)]
        local = list(zip(id, correct, searches))
        # Every process sees every rollout, so a group split over processes has one m̂.
        gathered = gather_object(local) if _distributed() else local
        fewest = fewest_searches(*zip(*gathered), self.fewest_so_far)
        if self.training():
            self.fewest_so_far = fewest
        if log_metric is not None:
            log_metric("searches/mean", sum(g[2] for g in gathered) / len(gathered))
            log_metric("searches/rate", sum(g[2] > 0 for g in gathered) / len(gathered))
            log_metric("accuracy", sum(g[1] for g in gathered) / len(gathered))
        return pay_per_search_rewards(
            id, correct, searches, fewest,
            kind=self.config.penalty, lam=self.config.lam, max_searches=self.config.max_searches,
        )  # fmt: skip

    def save(self, directory: Path) -> None:
        (directory / MIN_SEARCHES_FILE).write_text(json.dumps(self.fewest_so_far, sort_keys=True), encoding="utf-8")

    def load(self, directory: Path) -> None:
        path = directory / MIN_SEARCHES_FILE
        self.fewest_so_far = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def min_searches_callback(reward: PayPerSearchReward) -> Any:
    """A TrainerCallback that saves the reward's running minimum into each checkpoint and, when a
    run resumes, restores it from the checkpoint it resumes from (not from a later state)."""
    from transformers import TrainerCallback

    class MinSearchesCheckpoint(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step:  # resumed: the checkpoint's minimum, not one of later steps
                reward.load(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            else:
                reward.fewest_so_far = {}

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                reward.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return MinSearchesCheckpoint()


# ---- 5. the rollout ------------------------------------------------------------------------------


def add_protocol_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Make every tag one token (added to the vocabulary where the tokenizer splits it, the
    embeddings resized), so that `</search>` and `</answer>` can be stop ids: GRPO's HF
    generation has no stop strings (TRL issue #2820). Returns the tags added."""
    missing = [t for t in TAGS if len(tokenizer(t, add_special_tokens=False)["input_ids"]) != 1]
    if missing:
        tokenizer.add_tokens(missing)
        model.resize_token_embeddings(len(tokenizer))
    return missing


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids a policy segment ends at: the stop tags' (one token each) and EOS."""
    ids = []
    for tag in STOP_TAGS:
        encoded = tokenizer(tag, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise BadInputError(
                f"this tokenizer splits {tag} into {len(encoded)} tokens; train the model with `llmkit train mash`, "
                "which adds the tags to its vocabulary"
            )
        ids.append(encoded[0])
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


class Rollout:
    """TRL's `rollout_func` for MASH: the protocol of `SearchEnvironment` on token ids. The policy
    samples each segment (temperature `config.temperature`, at most `config.segment_tokens`
    tokens, to a stop id); the environment's tokens (documents, warnings, closing tags) are
    appended with env_mask 0, so the loss skips them; a trajectory stops at
    `config.max_completion_length` tokens. Returns, beside the ids, each rollout's `searches` and
    `answer_text` for the reward."""

    def __init__(self, env: SearchEnvironment, config: MashConfig) -> None:
        self.env, self.config = env, config

    def __call__(self, prompts: Sequence[str], trainer: Any) -> dict[str, list]:
        from trl.models import unwrap_model_for_generation

        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            return self.roll(model, trainer.processing_class, list(prompts))

    def roll(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, list]:
        from llmkit.generation import encode_prompts

        stops = stop_token_ids(tokenizer)
        prompt_ids = encode_prompts(tokenizer, prompts)
        episodes = [Episode(p, []) for p in prompts]
        completion_ids: list[list[int]] = [[] for _ in prompts]
        env_mask: list[list[int]] = [[] for _ in prompts]
        limit = self.config.max_completion_length
        for _ in range(self.env.max_turns):
            active = [i for i, e in enumerate(episodes) if not e.done]
            if not active:
                break
            contexts = [prompt_ids[i] + completion_ids[i] for i in active]
            budget = min(self.config.segment_tokens, *(limit - len(completion_ids[i]) for i in active))
            segments = self._sample(model, tokenizer, contexts, max(budget, 1), stops)
            for i, ids in zip(active, segments):
                ids = ids[: limit - len(completion_ids[i])]
                completion_ids[i] += ids
                env_mask[i] += [1] * len(ids)
                text = tokenizer.decode([t for t in ids if t != tokenizer.eos_token_id])
                reply = self.env.step(episodes[i], text)
                reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] if reply else []
                reply_ids = reply_ids[: limit - len(completion_ids[i])]
                completion_ids[i] += reply_ids
                env_mask[i] += [0] * len(reply_ids)
                if len(completion_ids[i]) >= limit:
                    episodes[i].done = True
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": None,
            "env_mask": env_mask,
            "searches": [e.searches for e in episodes],
            "answer_text": [e.answer for e in episodes],
        }

    def _sample(self, model, tokenizer, contexts, max_new_tokens, stops) -> list[list[int]]:
        """One segment per context, sampled in one batch (left-padded), cut after its first stop id."""
        import torch

        from llmkit.batching import pad_batch

        batch = pad_batch(contexts, tokenizer.pad_token_id, "left")
        batch.pop("position_ids")
        with torch.no_grad():
            output = model.generate(
                **{k: v.to(model.device) for k, v in batch.items()},
                do_sample=True,
                temperature=self.config.temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
        segments = []
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            end = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
            segments.append(row[:end])
        return segments


# ---- 6. training: the warm start, then GRPO --------------------------------------------------------

WARM_STARTED = "warm_started"
"""The warm-started model inside a run's checkpoint directory: a resumed run skips the warm start."""


def training_curve(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per GRPO step of a Trainer's log history: the mean reward, accuracy, searches and search rate."""
    keys = {"reward": "reward", "accuracy": "accuracy", "searches": "searches/mean", "search_rate": "searches/rate"}
    return [
        {"step": entry["step"], **{name: entry.get(key) for name, key in keys.items()}}
        for entry in history
        if "reward" in entry and "step" in entry
    ]


def grpo_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[Mapping[str, Any]],
    env: SearchEnvironment,
    config: MashConfig,
    checkpoint_dir: Path,
    budget: TrainingBudget,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, PayPerSearchReward]:
    """TRL's GRPOTrainer with MASH's rollout and reward: `budget.batch_size` questions per step and
    process, each with `config.num_generations` rollouts; the official run's loss settings (GRPO's
    per-sequence mean, clip 0.2, no KL term, entropy bonus 0.001, gradient clip 1). Not yet trained."""
    from dataclasses import replace

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from llmkit.training import build_trainer, training_arguments

    args = training_arguments(
        checkpoint_dir,
        replace(budget, batch_size=budget.batch_size * config.num_generations),
        weights=model.dtype,
        args_class=GRPOConfig,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=0.0,
        loss_type="grpo",
        epsilon=0.2,
        entropy_coef=0.001,
        max_grad_norm=1.0,
        log_completions=False,
    )
    # rollout_func is marked experimental; this rollout is checked against TRL 1.16, so the warning is not repeated.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    reward = PayPerSearchReward(config)
    dataset = Dataset.from_list([{"prompt": q["prompt"], "id": q["id"], "answers": q["answers"]} for q in questions])
    trainer = build_trainer(
        model,
        dataset,
        args,
        trainer_class=GRPOTrainer,
        progress=progress,
        callbacks=[min_searches_callback(reward)],
        reward_funcs=[reward],
        processing_class=tokenizer,
        rollout_func=Rollout(env, config),
    )
    reward.training = lambda: trainer.model.training
    return trainer, reward


def train_mash(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    traces: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    env: SearchEnvironment,
    config: MashConfig,
    warm_start: WarmStartConfig,
    checkpoint_dir: Path,
    budget: TrainingBudget,
    run: Mapping[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """MASH's run: the tags made tokens, the warm start (supervised, on the traces' policy
    segments, checkpointed in CHECKPOINT_DIR/warm_start; skipped when the directory already holds
    its result, `WARM_STARTED`), then GRPO (checkpointed in CHECKPOINT_DIR itself).
    Returns the GRPO trainer and the record's fields: the warm start's steps and losses and the
    per-step `training_curve`."""
    from peft import PeftModel

    from llmkit.configs import TrainingBudget
    from llmkit.models import context_length, load_model
    from llmkit.training import (
        COMPLETE_FILE,
        RUN_FILE,
        build_sft_trainer,
        check_checkpoints,
        encode_records,
        epoch_losses,
        is_main_process,
        train,
    )

    if isinstance(model, PeftModel) and any(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) != 1 for t in TAGS
    ):
        raise BadInputError(
            "--lora cannot learn MASH's tags: they are new tokens, whose embeddings an adapter does not train; "
            "train without --lora, or start from a model whose vocabulary has them (one `llmkit train mash` wrote)"
        )
    add_protocol_tokens(model, tokenizer)
    # The run's own record, so that a rerun after an interrupt recognises the directory as its own.
    check_checkpoints(checkpoint_dir, run)
    if is_main_process():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / RUN_FILE).write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
    warm_dir = checkpoint_dir / WARM_STARTED
    warm_run = None
    if warm_start.warm_start_epochs > 0 and (warm_dir / COMPLETE_FILE).is_file():
        model, tokenizer = load_model(str(warm_dir), dtype=str(model.dtype).removeprefix("torch."), device="cpu")
        warm_run = json.loads((warm_dir / "warm_start.json").read_text(encoding="utf-8"))
    elif warm_start.warm_start_epochs > 0:
        limit = context_length(model) or 1 << 30
        examples = [{k: ids[:limit] for k, ids in e.items()} for e in encode_records(tokenizer, traces)]
        sft_budget = TrainingBudget(
            epochs=warm_start.warm_start_epochs,
            learning_rate=warm_start.warm_start_lr,
            batch_size=warm_start.warm_start_batch_size,
            seed=budget.seed,
            save_steps=budget.save_steps,
        )
        sft = build_sft_trainer(
            model, tokenizer, examples, checkpoint_dir / "warm_start", sft_budget, progress=progress
        )
        train(sft, {**run, "phase": "warm start"})
        losses = epoch_losses(sft.state.log_history)
        warm_run = {
            "steps": sft.state.global_step,
            "epoch_losses": losses,
            "loss": f"{losses[0]:.4g} → {losses[-1]:.4g}",
        }
        if sft.is_world_process_zero():
            model.save_pretrained(warm_dir)
            tokenizer.save_pretrained(warm_dir)
            (warm_dir / "warm_start.json").write_text(json.dumps(warm_run), encoding="utf-8")
            (warm_dir / COMPLETE_FILE).touch()
            shutil.rmtree(checkpoint_dir / "warm_start", ignore_errors=True)
        sft.accelerator.wait_for_everyone()
    trainer, _ = grpo_trainer(model, tokenizer, questions, env, config, checkpoint_dir, budget, progress)
    train(trainer, run)
    return trainer, {"warm_start_run": warm_run, "curve": training_curve(trainer.state.log_history)}
