"""Generation backends: `generate()` texts and `score()` continuations, batched.

`HFBackend` (transformers) is the reference: length-sorted batches, left padding for generation,
right padding for scoring, KV cache on. `VLLMBackend` implements the same interface on vLLM's
`LLM`/`SamplingParams` and is imported only when chosen (`pip install 'llmkit[vllm]'`).
Both encode prompts and decode generations with the model's transformers tokenizer and run the
dtype `resolve_dtype` picks, so their greedy texts agree. Hidden-state work (hooks, EigenScore
embeddings) always runs on the HF model. A backend is a context manager: leaving it (or
`close()`) releases the engine.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from accelerate.utils import find_executable_batch_size
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from llmkit.batching import length_sorted_batches, pad_batch
from llmkit.configs import BACKENDS, CHAT_TEMPLATE_MODES, GenerationParams, Placement, VLLMEngineOptions
from llmkit.errors import BadInputError, first_line
from llmkit.models import (
    adapter_base,
    check_context,
    check_model_path,
    context_length,
    input_device,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
)

Progress = Callable[[float, int], None]
"""Called as progress(done, total), counting prompts (or scored pairs), as work finishes; `done`
is fractional while a batch of generations decodes."""

AUTO_START_BATCH_SIZE = 64
VLLM_INSTALL_HINT = "pip install 'llmkit[vllm]'"


@dataclass
class Generation:
    """The `num_samples` texts generated for one prompt (stop strings cut off, not included)."""

    prompt: str
    texts: list[str]


@dataclass
class ContinuationScore:
    """log p(continuation token | prompt, earlier continuation tokens), one per token."""

    token_ids: list[int]
    logprobs: list[float]
    greedy: bool
    """Whether every continuation token is the model's top choice (greedy decoding would produce it)."""
    next_logprobs: list[float] = field(default_factory=list)
    """log p(t | prompt, continuation) of each token t `score` was asked about (`next_tokens`)."""

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


BackendT = TypeVar("BackendT", bound="Backend")


class Backend(Protocol):
    """What every backend does. The backends subclass it, and so are context managers:
    `with backend:` closes it on the way out."""

    name: str
    dtype: torch.dtype
    tokenizer: PreTrainedTokenizerBase

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]: ...

    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        progress: Progress | None = None,
        next_tokens: Sequence[int] = (),
    ) -> list[ContinuationScore]:
        """Each continuation's token log-probabilities after its prompt, and, for every token id of
        `next_tokens`, its log-probability after the whole text (in the same pass)."""

    def close(self) -> None:
        """Release what the backend holds (an engine and its memory); it cannot be used afterwards."""

    def engine_settings(self) -> dict[str, Any]:
        """What the engine resolved its settings to, for results.json (none for HF)."""
        return {}

    def __enter__(self: BackendT) -> BackendT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def decode_generation(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int], stop: Sequence[str]) -> str:
    """The text of generated tokens, decoded whole (special tokens dropped), cut at the first stop
    string. Every backend decodes this way: a generation that ends inside a multi-byte character
    keeps its U+FFFD, where an incremental detokenizer would drop the incomplete bytes."""
    return cut_at_stop(tokenizer.decode(token_ids, skip_special_tokens=True), stop)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, allow_empty: bool = False
) -> list[list[int]]:
    """Prompt token ids as the model reads them: with the tokenizer's BOS if it adds one, but never
    a second one in front of a text that already starts with it (a rendered chat template).
    Encoded in one batched call per case (the fast tokenizers' batch path). A prompt of no tokens
    (an empty text, with a tokenizer that adds no BOS) gives a model nothing to read: bad input,
    unless `allow_empty` (a caller that handles it)."""
    bos = tokenizer.bos_token
    has_bos = [bool(bos) and p.startswith(bos) for p in prompts]
    encoded: list[list[int]] = [[] for _ in prompts]
    for starts_with_bos in (False, True):
        indices = [i for i, flag in enumerate(has_bos) if flag == starts_with_bos]
        if indices:
            ids = tokenizer([prompts[i] for i in indices], add_special_tokens=not starts_with_bos)["input_ids"]
            for i, row in zip(indices, ids):
                encoded[i] = list(row)
    empty = next((i for i, ids in enumerate(encoded) if not ids), None)
    if empty is not None and not allow_empty:
        raise BadInputError(
            f"prompt {empty + 1} of {len(prompts)} is empty ({prompts[empty]!r}), "
            "and this tokenizer adds no BOS token, "
            "so the model has nothing to read; give every prompt some text"
        )
    return encoded


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], continuations: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """Token ids of each (context, continuation) pair, tokenized jointly as the model reads them.

    As in lm-evaluation-harness: trailing spaces of the context move to the continuation (a
    tokenizer attaches a space to the word after it), the joint text is encoded once and the
    continuation is what follows the context's own encoding. Unlike lm-evaluation-harness,
    a trailing newline stays in the context: it is the prompt's layout ("Answer:\n" before an
    answer spelled one character per line), and the continuation is scored without it, as ORT does.
    An empty context is replaced by the BOS (else EOS) token so the first token has a prediction.
    """
    if len(prompts) != len(continuations):
        raise BadInputError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    contexts = [p.rstrip(" ") for p in prompts]
    context_ids = encode_prompts(tokenizer, contexts, allow_empty=True)
    whole_ids = encode_prompts(tokenizer, [p + c for p, c in zip(prompts, continuations)], allow_empty=True)
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [(context or [prefix], whole[len(context) :]) for context, whole in zip(context_ids, whole_ids)]


def use_chat_template(mode: str, tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether prompts are wrapped in the tokenizer's chat template: `auto` when it has one."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise BadInputError(f"--chat-template takes {', '.join(CHAT_TEMPLATE_MODES)}, got {mode!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has_template:
        raise BadInputError("--chat-template on: this model's tokenizer has no chat template; use auto or off")
    return has_template if mode == "auto" else mode == "on"


def chat_wrap(tokenizer: PreTrainedTokenizerBase, content: str) -> str:
    """`content` as a user turn rendered by the chat template, ending where the assistant's reply begins."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )


class HFBackend(Backend):
    """The transformers reference backend."""

    name = "hf"

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int | str = "auto"
    ) -> None:
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise BadInputError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.dtype = model.dtype
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def _batched(self, lengths: Sequence[int], run_batch: Callable[[list[int]], None], progress: Progress | None):
        """Run `run_batch` over length-sorted batches; with batch size 'auto', halve it on OOM."""

        def run_all(batch_size: int) -> None:
            done = 0
            for indices in length_sorted_batches(lengths, batch_size):
                run_batch(indices)
                done += len(indices)
                if progress:
                    progress(done, len(lengths))

        if self.batch_size == "auto":
            find_executable_batch_size(run_all, starting_batch_size=AUTO_START_BATCH_SIZE)()
        else:
            run_all(self.batch_size)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(input_device(self.model)) for k, v in batch.items()}

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        encoded = encode_prompts(self.tokenizer, prompts)
        check_context(context_length(self.model), [len(ids) for ids in encoded], params.max_new_tokens)
        results: list[Generation | None] = [None] * len(prompts)
        sampling = params.temperature > 0
        options = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=params.top_k if sampling and params.top_k else None,
            num_return_sequences=params.num_samples,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if params.stop:
            options.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if params.seed is not None:
            torch.manual_seed(params.seed)

        done = 0

        def run_batch(indices: list[int]) -> None:
            nonlocal done
            batch = pad_batch([encoded[i] for i in indices], self.tokenizer.pad_token_id, "left")
            # generate() derives positions from the attention mask itself.
            batch.pop("position_ids")
            streamer = (
                _DecodingProgress(done, len(indices), params.max_new_tokens, len(prompts), progress)
                if progress
                else None
            )
            output = self.model.generate(**self._to_device(batch), **options, streamer=streamer)
            done += len(indices)
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            texts = [decode_generation(self.tokenizer, row, params.stop) for row in new_tokens]
            n = params.num_samples
            for row, i in enumerate(indices):
                results[i] = Generation(prompts[i], texts[row * n : (row + 1) * n])

        self._batched([len(e) for e in encoded], run_batch, progress)
        return results

    @torch.inference_mode()
    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        progress: Progress | None = None,
        next_tokens: Sequence[int] = (),
    ) -> list[ContinuationScore]:
        pairs = tokenize_pairs(self.tokenizer, prompts, continuations)
        sequences = [ctx + cont for ctx, cont in pairs]
        check_context(context_length(self.model), [len(s) for s in sequences])
        results: list[ContinuationScore | None] = [None] * len(pairs)

        def run_batch(indices: list[int]) -> None:
            batch = pad_batch([sequences[i] for i in indices], self.tokenizer.pad_token_id, "right")
            width = batch["input_ids"].shape[1]
            # Right padding under a causal mask: no real token attends to a pad after it, so the
            # pads need no attention mask and the model takes its plain causal path.
            inputs = {"input_ids": batch["input_ids"].to(input_device(self.model))}
            # Only positions from the shortest context on predict continuation tokens.
            first_needed = min(len(pairs[i][0]) for i in indices) - 1
            extra = {"logits_to_keep": width - first_needed} if self._keeps_logits else {}
            logits = self.model(**inputs, **extra).logits
            offset = width - logits.shape[1]
            # Every continuation token of the batch at once: its row, the position predicting it.
            rows, steps, tokens, lengths = [], [], [], []
            for row, i in enumerate(indices):
                context, continuation = pairs[i]
                rows += [row] * len(continuation)
                steps += range(len(context) - 1 - offset, len(context) - 1 - offset + len(continuation))
                tokens += continuation
                lengths.append(len(continuation))
            step_logits = logits[torch.as_tensor(rows), torch.as_tensor(steps)].float()
            targets = torch.as_tensor(tokens, device=logits.device)
            chosen = step_logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0].tolist()
            top = (step_logits.argmax(-1) == targets).tolist()
            following: list[list[float]] = [[] for _ in indices]
            if next_tokens:
                ends = torch.as_tensor([len(sequences[i]) - 1 - offset for i in indices])
                last = logits[torch.arange(len(indices)), ends].float().log_softmax(-1)
                following = last[:, torch.as_tensor(list(next_tokens))].tolist()
            start = 0
            for row, (i, length) in enumerate(zip(indices, lengths)):
                end = start + length
                results[i] = ContinuationScore(pairs[i][1], chosen[start:end], all(top[start:end]), following[row])
                start = end

        self._batched([len(s) for s in sequences], run_batch, progress)
        return results


class _DecodingProgress(BaseStreamer):
    """Moves the progress bar while a batch decodes: after each step, the batch's prompts count
    as done in proportion to the steps taken of `max_new_tokens` (a batch that stops early jumps
    to done when it returns). Long generations are minutes per batch."""

    def __init__(self, done: int, size: int, max_new_tokens: int, total: int, progress: Progress) -> None:
        self.done, self.size, self.total = done, size, total
        self.max_new_tokens, self.progress = max_new_tokens, progress
        self.steps = -1  # generate() first puts the prompt

    def put(self, value: torch.Tensor) -> None:
        self.steps += 1
        if self.steps:
            self.progress(
                self.done + self.size * min(self.steps, self.max_new_tokens) / self.max_new_tokens, self.total
            )

    def end(self) -> None:
        """Nothing to do: the batch reports itself done when generate() returns."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def import_vllm() -> ModuleType:
    """Import vllm with llmkit's defaults (each only where the environment does not set it):
    its logs on stderr, so stdout carries only results; and its engine in this process, so a
    script needs no `__main__` guard, closing it takes a second rather than five, and on CPU it
    starts faster at the same throughput. `VLLM_ENABLE_V1_MULTIPROCESSING=1` restores vLLM's
    separate engine process."""
    if not vllm_available():
        raise BadInputError(f"the vllm backend needs vllm, which is not installed: {VLLM_INSTALL_HINT}")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import vllm

    return vllm


def _forward_to(progress: Progress | None, done_before: int, total: int, per_prompt: int = 1) -> type[tqdm] | bool:
    """A tqdm class for `LLM.generate(use_tqdm=...)` that reports vLLM's count of finished
    samples, as prompts (`per_prompt` samples each), to llmkit's `progress(done, total)` instead
    of drawing a bar of its own."""
    if progress is None:
        return False

    class Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "file": io.StringIO()})

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            progress((done_before + int(self.n)) // per_prompt, total)
            return shown

    return Forward


class VLLMBackend(Backend):
    """The same interface on vLLM's `LLM`; it schedules its own batches.

    Prompts go to vLLM as token ids from the transformers tokenizer, and generations come back
    decoded from their token ids by `decode_generation`, as the HF backend does: vLLM's own
    incremental detokenizer drops a trailing incomplete UTF-8 sequence that a whole decode shows
    as U+FFFD. With a seed, sample j of prompt i is drawn with seed `seed + i * n + j`:
    reproducible, and independent of how the prompts are batched.
    """

    name = "vllm"
    _open_in_process: ClassVar[weakref.WeakSet[VLLMBackend]] = weakref.WeakSet()

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        seed: int | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        engine_options: VLLMEngineOptions | None = None,
        adapter: str | None = None,
    ) -> None:
        """`model` on vLLM's engine with `engine_options`; with `adapter` (a peft LoRA directory
        trained on `model`), every request runs through vLLM's LoRA support (a `LoRARequest`)."""
        vllm = import_vllm()
        from vllm.platforms import current_platform

        # Engines in one process share vLLM's process-wide state: closing one breaks the other.
        in_process = os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
        if in_process and VLLMBackend._open_in_process:
            raise RuntimeError(
                "a vLLM engine is already open in this process: close() it first, or set "
                "VLLM_ENABLE_V1_MULTIPROCESSING=1 to give each engine a process of its own"
            )

        self._vllm, self._on_cpu = vllm, current_platform.is_cpu()
        self.dtype = resolve_dtype(dtype, _vllm_device(device, current_platform.device_type))
        # An adapter directory's own tokenizer, where it has one, as the HF backend loads it.
        has_tokenizer = adapter is not None and any(
            Path(adapter, name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
        )
        self.tokenizer = load_tokenizer(
            adapter if has_tokenizer else model, trust_remote_code=trust_remote_code, revision=revision
        )
        self.engine_args = check_engine_args((engine_options or VLLMEngineOptions()).engine_kwargs())
        self.lora_request = None
        if adapter is not None:
            self.engine_args.update(lora_engine_args(adapter, current_platform))
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("adapter", 1, str(Path(adapter).expanduser().resolve()))
        try:
            self.llm = vllm.LLM(
                model=model,
                dtype=self.dtype,
                seed=0 if seed is None else seed,
                trust_remote_code=trust_remote_code,
                revision=revision,
                **self.engine_args,
            )
        except ValueError as err:  # vLLM's config validation (pydantic) of what it was given
            raise BadInputError(f"vLLM cannot load model {model!r}: {_vllm_reason(err)}") from err
        self._settings = self._resolved_settings()
        if in_process:
            VLLMBackend._open_in_process.add(self)

    def engine_settings(self) -> dict[str, Any]:
        """The engine's own settings as vLLM resolved them (its context, cache and parallelism),
        read when it started, so they outlast `close`."""
        return self._settings

    def _resolved_settings(self) -> dict[str, Any]:
        config = self.llm.llm_engine.vllm_config
        return {
            "max_model_len": config.model_config.max_model_len,
            "enable_prefix_caching": config.cache_config.enable_prefix_caching,
            "gpu_memory_utilization": config.cache_config.gpu_memory_utilization,
            "tensor_parallel_size": config.parallel_config.tensor_parallel_size,
            "pipeline_parallel_size": config.parallel_config.pipeline_parallel_size,
            "max_num_seqs": config.scheduler_config.max_num_seqs,
            "lora": self.lora_request is not None,
        }

    def close(self) -> None:
        """Shut vLLM's engine down and free its memory."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        VLLMBackend._open_in_process.discard(self)

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        encoded = encode_prompts(self.tokenizer, prompts)
        check_context(self.llm.model_config.max_model_len, [len(ids) for ids in encoded], params.max_new_tokens)
        options = dict(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
        )
        n = params.num_samples
        if params.seed is None or params.temperature == 0:
            calls = [[(i, self._vllm.SamplingParams(n=n, **options)) for i in range(len(prompts))]]
        else:
            # One request per sample, each with its own seed, so that calls can be cut anywhere.
            requests = [
                (i, self._vllm.SamplingParams(n=1, seed=params.seed + i * n + j, **options))
                for i in range(len(prompts))
                for j in range(n)
            ]
            lengths = [len(encoded[i]) for i, _ in requests]
            calls = [[requests[k] for k in call] for call in self._one_step_calls(lengths)]
        texts: list[list[str]] = [[] for _ in prompts]
        done = 0
        for call in calls:
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=encoded[i]) for i, _ in call],
                [sampling for _, sampling in call],
                use_tqdm=_forward_to(progress, done, len(prompts), per_prompt=n),
                lora_request=self.lora_request,
            )
            for (i, _), output in zip(call, outputs):
                texts[i] += [decode_generation(self.tokenizer, c.token_ids, params.stop) for c in output.outputs]
                done += len(output.outputs)
        return [Generation(p, t) for p, t in zip(prompts, texts)]

    def _one_step_calls(self, lengths: Sequence[int]) -> list[range]:
        """Cut consecutive requests (of these prompt lengths) into calls that vLLM schedules
        whole in its first step.

        Works around a vLLM 0.33 bug on CPU: a seeded request whose prefill is split across
        scheduler steps, as happens once a call's prompts exceed the step's token budget, crashes
        the engine ("CPU Generator does not use offset"). Elsewhere one call takes every request.
        """
        if not self._on_cpu:
            return [range(len(lengths))]
        scheduler = self.llm.llm_engine.vllm_config.scheduler_config
        budget, max_requests = scheduler.max_num_batched_tokens, scheduler.max_num_seqs
        calls, start, tokens = [], 0, 0
        for k, length in enumerate(lengths):
            if length > budget:
                raise BadInputError(
                    f"seeded sampling with vLLM on CPU takes prompts of at most {budget} tokens (a vLLM bug), "
                    f"and one has {length}; drop --seed or use --backend hf"
                )
            if tokens + length > budget or k - start == max_requests:
                calls.append(range(start, k))
                start, tokens = k, 0
            tokens += length
        calls.append(range(start, len(lengths)))
        return calls

    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        progress: Progress | None = None,
        next_tokens: Sequence[int] = (),
    ) -> list[ContinuationScore]:
        """As HF's; a next token's log-probability is read as the prompt log-probability of that
        token appended to the text (one request per next token, the text's prefix cached)."""
        from vllm.inputs import TokensPrompt

        pairs = tokenize_pairs(self.tokenizer, prompts, continuations)
        extra = 1 if next_tokens else 0
        check_context(self.llm.model_config.max_model_len, [len(c) + len(t) + extra for c, t in pairs])
        # prompt_logprobs=1 returns, at every prompt position, the actual token with its rank.
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        appended = [[t] for t in next_tokens] or [[]]
        requests = [TokensPrompt(prompt_token_ids=ctx + cont + tail) for ctx, cont in pairs for tail in appended]
        outputs = self.llm.generate(
            requests, sampling, use_tqdm=_forward_to(progress, 0, len(requests)), lora_request=self.lora_request
        )
        results = []
        for k, (context, continuation) in enumerate(pairs):
            mine = outputs[k * len(appended) : (k + 1) * len(appended)]
            entries = [mine[0].prompt_logprobs[len(context) + j][tok] for j, tok in enumerate(continuation)]
            end = len(context) + len(continuation)
            results.append(
                ContinuationScore(
                    token_ids=continuation,
                    logprobs=[e.logprob for e in entries],
                    greedy=all(e.rank == 1 for e in entries),
                    next_logprobs=[out.prompt_logprobs[end][t].logprob for out, t in zip(mine, next_tokens)],
                )
            )
        return results


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM's engine takes (`LoRAConfig.max_lora_rank`)."""
SET_BY_LLMKIT = ("model", "tokenizer", "dtype", "seed", "trust_remote_code", "revision", "enable_lora")


def check_engine_args(engine_args: dict[str, Any]) -> dict[str, Any]:
    """Refuse an engine argument vLLM's `EngineArgs` does not have (naming the closest that it
    does), or one llmkit's own options set; `engine_args` itself otherwise."""
    import dataclasses
    import difflib

    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    for key in engine_args:
        if key in SET_BY_LLMKIT:
            raise BadInputError(
                f"--vllm-arg {key}: llmkit sets it from its own options (--model, --dtype, --seed, "
                "--trust-remote-code; an adapter directory enables LoRA)"
            )
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise BadInputError(f"--vllm-arg {key}: vLLM's engine has no argument of that name{hint}")
    return dict(engine_args)


def lora_engine_args(adapter: str, platform: Any) -> dict[str, Any]:
    """The engine arguments that serve `adapter` (its rank from adapter_config.json), or, where
    vLLM's platform has no LoRA kernels, the one-line refusal naming the HF backend."""
    if not platform.get_punica_wrapper():
        raise BadInputError(
            f"vLLM on {platform.device_type} has no LoRA support, so it cannot run the adapter {adapter}; "
            "use --backend hf (it merges the adapter into its base)"
        )
    config = json.loads((Path(adapter).expanduser() / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise BadInputError(
            f"{adapter} is a {config['peft_type']} adapter; vLLM serves LoRA adapters only: use --backend hf"
        )
    rank = int(config.get("r", 8))
    # vLLM takes one of a few ranks: the smallest that holds the adapter's.
    supported = next((r for r in VLLM_LORA_RANKS if r >= rank), None)
    if supported is None:
        raise BadInputError(f"{adapter} has LoRA rank {rank}, above vLLM's {VLLM_LORA_RANKS[-1]}: use --backend hf")
    return {"enable_lora": True, "max_lora_rank": supported, "max_loras": 1}


def _vllm_device(device: str, platform_device: str) -> torch.device:
    """The device vLLM runs on: its platform's. An explicit --device must name that one."""
    if device == "auto":
        return torch.device(platform_device)
    resolved = resolve_device(device)
    if resolved.type != platform_device:
        raise BadInputError(
            f"vLLM runs on {platform_device} on this machine, not {device}; drop --device or use --backend hf"
        )
    if resolved.index is not None:
        raise BadInputError(
            f"vLLM picks its GPUs from CUDA_VISIBLE_DEVICES, not --device {device}; set that and use --device cuda"
        )
    return resolved


def _vllm_reason(err: ValueError) -> str:
    """One line from vLLM's config error: the first line of pydantic's message for the first
    field it rejected (its whole text names every field and links to pydantic's docs)."""
    fields = err.errors() if callable(getattr(err, "errors", None)) else []
    if fields:
        return fields[0]["msg"].removeprefix("Value error, ").strip().splitlines()[0]
    return first_line(err)


def load_backend(
    backend: str,
    model: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int | str = "auto",
    seed: int | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    placement: Placement | None = None,
    engine_options: VLLMEngineOptions | None = None,
) -> Backend:
    """Build the named backend for `model` (a hub id or a local directory): HF with its
    `placement` (a device map, for a model larger than one device), vLLM with its `engine_options`."""
    if backend == "hf":
        if engine_options is not None and engine_options != VLLMEngineOptions():
            raise BadInputError("the vLLM engine options take effect with --backend vllm; add it, or drop them")
        hf_model, tokenizer = load_model(
            model,
            dtype=dtype,
            device=device,
            trust_remote_code=trust_remote_code,
            revision=revision,
            placement=placement,
        )
        return HFBackend(hf_model, tokenizer, batch_size=batch_size)
    if backend == "vllm":
        check_model_path(model)
        base = adapter_base(model)
        return VLLMBackend(
            base or model,
            dtype=dtype,
            device=device,
            seed=seed,
            trust_remote_code=trust_remote_code,
            revision=revision,
            engine_options=engine_options,
            adapter=model if base else None,
        )
    raise BadInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def hf_model(
    engine: Backend,
    model_name: str,
    *,
    device: str = "auto",
    trust_remote_code: bool = False,
    placement: Placement | None = None,
) -> PreTrainedModel:
    """The transformers model behind `engine`, for hidden-state work: the HF backend's own, or, for
    vLLM, `model_name` loaded beside it in the engine's dtype (with `placement`'s device map)."""
    model = getattr(engine, "model", None)
    if isinstance(model, PreTrainedModel):
        return model
    dtype = str(engine.dtype).removeprefix("torch.")
    loaded, _ = load_model(
        model_name, dtype=dtype, device=device, trust_remote_code=trust_remote_code, placement=placement
    )
    return loaded
