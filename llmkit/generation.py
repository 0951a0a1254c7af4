"""Generation backends: `generate()` texts and `score()` continuations, batched.

`HFBackend` (transformers) is the reference: length-sorted batches, left padding for generation,
right padding for scoring, KV cache on. `VLLMBackend` implements the same interface on vLLM's
`LLM`/`SamplingParams` and is imported only when chosen (`pip install 'llmkit[vllm]'`).
Hidden-state work (hooks, EigenScore embeddings) always runs on the HF model.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from accelerate.utils import find_executable_batch_size
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit.batching import length_sorted_batches, pad_batch
from llmkit.errors import BadInputError
from llmkit.models import check_model_path, load_model

Progress = Callable[[int, int], None]
"""Called as progress(done, total) after each batch."""

AUTO_START_BATCH_SIZE = 64
VLLM_INSTALL_HINT = "pip install 'llmkit[vllm]'"


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. temperature 0 means greedy decoding."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise BadInputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise BadInputError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BadInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_samples < 1:
            raise BadInputError(f"num_samples must be at least 1, got {self.num_samples}")
        if self.num_samples > 1 and self.temperature == 0:
            raise BadInputError("several samples per prompt need sampling: set a temperature > 0")


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

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


class Backend(Protocol):
    name: str

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]: ...

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], progress: Progress | None = None
    ) -> list[ContinuationScore]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def split_context_continuation(
    tokenizer: PreTrainedTokenizerBase, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, tokenized jointly as the model would read them.

    As in lm-evaluation-harness: trailing spaces of the context move to the continuation, the
    joint text is encoded once and the continuation is what follows the context's own encoding.
    An empty context is replaced by the BOS (else EOS) token so the first token has a prediction.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = tokenizer(context)["input_ids"]
    whole_ids = tokenizer(context + continuation)["input_ids"]
    continuation_ids = whole_ids[len(context_ids) :]
    if not context_ids:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        context_ids = [prefix]
    return list(context_ids), list(continuation_ids)


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], continuations: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """`split_context_continuation` for each (prompt, continuation) pair."""
    if len(prompts) != len(continuations):
        raise BadInputError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    return [split_context_continuation(tokenizer, p, c) for p, c in zip(prompts, continuations)]


class HFBackend:
    """The transformers reference backend."""

    name = "hf"

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int | str = "auto"
    ) -> None:
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise BadInputError(f"batch size must be a positive integer or 'auto', got {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
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
        return {k: v.to(self.model.device) for k, v in batch.items()}

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        encoded = [self.tokenizer(p)["input_ids"] for p in prompts]
        results: list[Generation | None] = [None] * len(prompts)
        sampling = params.temperature > 0
        options = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=None,
            num_return_sequences=params.num_samples,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if params.stop:
            options.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if params.seed is not None:
            torch.manual_seed(params.seed)

        def run_batch(indices: list[int]) -> None:
            batch = pad_batch([encoded[i] for i in indices], self.tokenizer.pad_token_id, "left")
            # generate() derives positions from the attention mask itself.
            batch.pop("position_ids")
            output = self.model.generate(**self._to_device(batch), **options)
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            n = params.num_samples
            for row, i in enumerate(indices):
                samples = texts[row * n : (row + 1) * n]
                results[i] = Generation(prompts[i], [cut_at_stop(t, params.stop) for t in samples])

        self._batched([len(e) for e in encoded], run_batch, progress)
        return results

    @torch.inference_mode()
    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], progress: Progress | None = None
    ) -> list[ContinuationScore]:
        pairs = tokenize_pairs(self.tokenizer, prompts, continuations)
        sequences = [ctx + cont for ctx, cont in pairs]
        results: list[ContinuationScore | None] = [None] * len(pairs)

        def run_batch(indices: list[int]) -> None:
            batch = pad_batch([sequences[i] for i in indices], self.tokenizer.pad_token_id, "right")
            width = batch["input_ids"].shape[1]
            # Only positions from the shortest context on predict continuation tokens.
            first_needed = min(len(pairs[i][0]) for i in indices) - 1
            extra = {"logits_to_keep": width - first_needed} if self._keeps_logits else {}
            logits = self.model(**self._to_device(batch), **extra).logits
            offset = width - logits.shape[1]
            for row, i in enumerate(indices):
                context, continuation = pairs[i]
                start = len(context) - 1 - offset
                step_logits = logits[row, start : start + len(continuation)].float()
                logprobs = step_logits.log_softmax(-1)
                targets = torch.as_tensor(continuation, device=logits.device, dtype=torch.long)
                chosen = logprobs.gather(-1, targets[:, None])[:, 0]
                results[i] = ContinuationScore(
                    token_ids=continuation,
                    logprobs=chosen.tolist(),
                    greedy=bool((step_logits.argmax(-1) == targets).all()),
                )

        self._batched([len(s) for s in sequences], run_batch, progress)
        return results


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMBackend:
    """The same interface on vLLM; prompts are handed to vLLM whole, it schedules its own batches."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        seed: int | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
    ) -> None:
        if not vllm_available():
            raise BadInputError(f"the vllm backend needs vllm, which is not installed: {VLLM_INSTALL_HINT}")
        import vllm

        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model,
            dtype=dtype,
            seed=0 if seed is None else seed,
            trust_remote_code=trust_remote_code,
            revision=revision,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        sampling = self._vllm.SamplingParams(
            n=params.num_samples,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
        )
        outputs = self.llm.generate(list(prompts), sampling, use_tqdm=False)
        if progress:
            progress(len(prompts), len(prompts))
        return [Generation(p, [c.text for c in out.outputs]) for p, out in zip(prompts, outputs)]

    def score(
        self, prompts: Sequence[str], continuations: Sequence[str], progress: Progress | None = None
    ) -> list[ContinuationScore]:
        from vllm.inputs import TokensPrompt

        pairs = tokenize_pairs(self.tokenizer, prompts, continuations)
        # prompt_logprobs=1 returns, at every prompt position, the actual token with its rank.
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        requests = [TokensPrompt(prompt_token_ids=ctx + cont) for ctx, cont in pairs]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        results = []
        for (context, continuation), out in zip(pairs, outputs):
            entries = [out.prompt_logprobs[len(context) + j][tok] for j, tok in enumerate(continuation)]
            results.append(
                ContinuationScore(
                    token_ids=continuation,
                    logprobs=[e.logprob for e in entries],
                    greedy=all(e.rank == 1 for e in entries),
                )
            )
        if progress:
            progress(len(prompts), len(prompts))
        return results


BACKENDS = ("hf", "vllm")


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
) -> Backend:
    """Build the named backend for `model` (a hub id or a local directory)."""
    if backend == "hf":
        hf_model, tokenizer = load_model(
            model, dtype=dtype, device=device, trust_remote_code=trust_remote_code, revision=revision
        )
        return HFBackend(hf_model, tokenizer, batch_size=batch_size)
    if backend == "vllm":
        check_model_path(model)
        return VLLMBackend(model, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code, revision=revision)
    raise BadInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
