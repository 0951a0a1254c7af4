"""A backend with intervention artifacts applied (`--intervention PATH`, repeatable).

- Neuron Adjust hooks the HF model's MLP neurons while it generates or scores, so it needs the HF
  backend.
- The KSD gate checks each prompt's key at its last token in one HF prefill pass, so it composes
  with either backend: with vLLM a pass before generation, and vLLM only sees the prompts the
  gate lets through; with HF the generation's own prefill, read by a hook. A refused prompt's
  generation is the refusal, and a refused prompt scores every continuation at probability 0 and
  never as the greedy answer: the model would not say it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from llmkit.batching import last_token_index
from llmkit.configs import Placement, VLLMEngineOptions
from llmkit.errors import BadInputError
from llmkit.generation import (
    Backend,
    ContinuationScore,
    Generation,
    GenerationParams,
    HFBackend,
    Progress,
    encode_prompts,
    hf_model,
    load_backend,
    tokenize_pairs,
)
from llmkit.hooks import intervene, track_inputs
from llmkit.interventions import Artifact, read_artifact
from llmkit.methods import ksd, neuron_adjust
from llmkit.methods.ksd import KeySpaceGate
from llmkit.methods.neuron_adjust import NeuronAdjust
from llmkit.models import model_fingerprint

GATE_BATCH_SIZE = 64


INTERVENTIONS = {neuron_adjust.METHOD: NeuronAdjust, ksd.METHOD: KeySpaceGate}
HF_ONLY = {neuron_adjust.METHOD: "Neuron Adjust hooks the transformers model's neurons: use --backend hf with it"}


def read_interventions(paths: Sequence[str | Path], backend: str = "hf") -> list[tuple[Path, Artifact]]:
    """The artifacts at `paths`, read and checked before any model loads: a file that is not an
    artifact, or one the backend cannot apply, fails in a second, not after loading an engine."""
    artifacts = [(Path(path), read_artifact(path)) for path in paths]
    for path, artifact in artifacts:
        if artifact.method not in INTERVENTIONS:
            raise BadInputError(
                f"{path}: unknown intervention method {artifact.method!r}; llmkit applies {', '.join(INTERVENTIONS)}"
            )
        if backend != "hf" and artifact.method in HF_ONLY:
            raise BadInputError(HF_ONLY[artifact.method])
    return artifacts


def load_interventions(
    artifacts: Sequence[tuple[Path, Artifact]], model: PreTrainedModel
) -> tuple[list[NeuronAdjust], list[KeySpaceGate]]:
    """The interventions of `read_interventions`' artifacts, each checked to be fitted on `model`."""
    fingerprint = model_fingerprint(model)
    built = []
    for path, artifact in artifacts:
        artifact.check_model(fingerprint, path)
        try:
            built.append(INTERVENTIONS[artifact.method].from_artifact(artifact))
        except (KeyError, TypeError, ValueError) as err:
            raise BadInputError(f"{path} is damaged ({artifact.method} artifact without {err}); fit it again") from None
    return [b for b in built if isinstance(b, NeuronAdjust)], [b for b in built if isinstance(b, KeySpaceGate)]


class IntervenedBackend(Backend):
    """`inner` with Neuron Adjust hooks on `model` and KSD gates in front; the same interface."""

    def __init__(
        self, inner: Backend, model: PreTrainedModel, adjusters: Sequence[NeuronAdjust], gates: Sequence[KeySpaceGate]
    ) -> None:
        if adjusters and not isinstance(inner, HFBackend):
            raise BadInputError(HF_ONLY[neuron_adjust.METHOD])
        self.inner, self.model, self.adjusters, self.gates = inner, model, list(adjusters), list(gates)
        self.name, self.dtype, self.tokenizer = inner.name, inner.dtype, inner.tokenizer

    @property
    def refusals(self) -> list[str]:
        """What a refused query answers, one per gate."""
        return [gate.refusal for gate in self.gates]

    def refused(self, prompts: Sequence[str]) -> list[bool]:
        flags = [False] * len(prompts)
        for gate in self.gates:
            refused = gate.refuses(self.model, self.tokenizer, prompts, GATE_BATCH_SIZE)
            flags = [a or b for a, b in zip(flags, refused)]
        return flags

    def _adjusted(self) -> ExitStack:
        stack = ExitStack()
        for adjuster in self.adjusters:
            stack.enter_context(adjuster.applied(self.model))
        return stack

    @staticmethod
    def _offset(progress: Progress | None, done_before: int, total: int) -> Progress | None:
        return None if progress is None else lambda done, _: progress(done_before + done, total)

    @contextmanager
    def _prefill_keys(self) -> Iterator[dict[int, dict[tuple[int, ...], torch.Tensor]]]:
        """While the HF model generates: each gate layer's key at the last token of every prompt it
        prefills, by the prompt's token ids (so batching and out-of-memory retries do not matter)."""
        keys: dict[int, dict[tuple[int, ...], torch.Tensor]] = {gate.layer: {} for gate in self.gates}
        with track_inputs(self.model) as inputs:

            def record(activation: torch.Tensor, layer: int) -> None:
                ids, width = inputs.input_ids, activation.shape[1]
                if ids is None or not bool((inputs.positions(width)[:, 0] == 0).all()):
                    return  # a decoding step: the prompt was read at the prefill
                real = inputs.mask.bool() if inputs.mask is not None else torch.ones_like(ids, dtype=torch.bool)
                last = last_token_index(real, width).to(activation.device)
                for row, mask, key in zip(ids, real, activation[torch.arange(len(ids)), last].float()):
                    keys[layer][tuple(row[mask].tolist())] = key

            with intervene(self.model, "mlp_key", sorted(keys), record):
                yield keys

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None
    ) -> list[Generation]:
        if self.gates and isinstance(self.inner, HFBackend):
            # The gate reads the generation's own prefill: no extra pass. Refused prompts are
            # generated too (they are few) and their texts replaced.
            with self._adjusted(), self._prefill_keys() as keys:
                results = self.inner.generate(prompts, params, progress)
            refused = [
                any(bool(gate.inside(keys[gate.layer][tuple(ids)][None])) for gate in self.gates)
                for ids in encode_prompts(self.tokenizer, prompts)
            ]
        else:
            with self._adjusted():
                refused = self.refused(prompts)
                kept = [i for i, flag in enumerate(refused) if not flag]
                generated = self.inner.generate(
                    [prompts[i] for i in kept], params, self._offset(progress, len(prompts) - len(kept), len(prompts))
                )
            results = [None] * len(prompts)
            for i, generation in zip(kept, generated):
                results[i] = generation
        for i, flag in enumerate(refused):
            if flag:
                results[i] = Generation(prompts[i], [self.gates[0].refusal] * params.num_samples)
        for gate in (g for g in self.gates if g.check_generated):
            for generation, flag in zip(results, refused):
                if not flag:
                    texts = generation.texts
                    hits = gate.refuses_generation(self.model, self.tokenizer, [generation.prompt] * len(texts), texts)
                    generation.texts = [gate.refusal if hit else text for hit, text in zip(hits, texts)]
        return results

    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[str],
        progress: Progress | None = None,
        next_tokens: Sequence[int] = (),
    ) -> list[ContinuationScore]:
        with self._adjusted():
            refused = self.refused(prompts)
            kept = [i for i, flag in enumerate(refused) if not flag]
            scored = self.inner.score(
                [prompts[i] for i in kept],
                [continuations[i] for i in kept],
                self._offset(progress, len(prompts) - len(kept), len(prompts)),
                next_tokens,
            )
        results: list[ContinuationScore | None] = [None] * len(prompts)
        for i, score in zip(kept, scored):
            results[i] = score
        blocked = [i for i, flag in enumerate(refused) if flag]
        for i, (_, continuation) in zip(
            blocked, tokenize_pairs(self.tokenizer, [prompts[i] for i in blocked], [continuations[i] for i in blocked])
        ):
            blocked_next = [float("-inf")] * len(next_tokens)
            results[i] = ContinuationScore(continuation, [float("-inf")] * len(continuation), False, blocked_next)
        return results

    def close(self) -> None:
        self.inner.close()

    def engine_settings(self) -> dict[str, Any]:
        return self.inner.engine_settings()


def apply_interventions(
    engine: Backend,
    artifacts: Sequence[tuple[Path, Artifact]],
    model_name: str,
    *,
    device: str = "auto",
    trust_remote_code: bool = False,
    placement: Placement | None = None,
) -> Backend:
    """`engine` with `read_interventions`' artifacts applied (itself when there are none). The HF
    backend lends its model; for vLLM the gate loads the HF model beside it, in the engine's dtype."""
    if not artifacts:
        return engine
    model = hf_model(engine, model_name, device=device, trust_remote_code=trust_remote_code, placement=placement)
    adjusters, gates = load_interventions(artifacts, model)
    return IntervenedBackend(engine, model, adjusters, gates)


def open_intervened_backend(
    backend: str,
    model: str,
    interventions: Sequence[str | Path] = (),
    *,
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int | str = "auto",
    seed: int | None = None,
    trust_remote_code: bool = False,
    placement: Placement | None = None,
    engine_options: VLLMEngineOptions | None = None,
) -> Backend:
    """`generation.load_backend` with the artifacts at `interventions` applied; they are read
    first, so a bad artifact fails before any model loads."""
    artifacts = read_interventions(interventions, backend)
    engine = load_backend(
        backend,
        model,
        dtype=dtype,
        device=device,
        batch_size=batch_size,
        seed=seed,
        trust_remote_code=trust_remote_code,
        placement=placement,
        engine_options=engine_options,
    )
    try:
        return apply_interventions(
            engine, artifacts, model, device=device, trust_remote_code=trust_remote_code, placement=placement
        )
    except BaseException:
        engine.close()
        raise
