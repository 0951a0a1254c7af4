"""A backend with intervention artifacts applied (`--intervention PATH`, repeatable).

- Neuron Adjust hooks the HF model's MLP neurons while it generates or scores, so it needs the HF
  backend.
- The KSD gate checks each prompt in one HF prefill pass before anything is generated, so it
  composes with either backend: the inner backend (HF or vLLM) only sees the prompts the gate
  lets through. A refused prompt's generation is the refusal, and a refused prompt scores every
  continuation at probability 0 and never as the greedy answer: the model would not say it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from transformers import PreTrainedModel

from llmkit.errors import BadInputError
from llmkit.generation import Backend, ContinuationScore, Generation, GenerationParams, HFBackend, Progress, tokenize_pairs
from llmkit.interventions import read_artifact
from llmkit.methods import ksd, neuron_adjust
from llmkit.methods.ksd import KeySpaceGate
from llmkit.methods.neuron_adjust import NeuronAdjust
from llmkit.models import load_model, model_fingerprint

GATE_BATCH_SIZE = 64


def load_interventions(paths: Sequence[str | Path], model: PreTrainedModel) -> tuple[list[NeuronAdjust], list[KeySpaceGate]]:
    """Read each artifact and check that it was fitted on `model`."""
    fingerprint = model_fingerprint(model)
    adjusters, gates = [], []
    for path in paths:
        artifact = read_artifact(path)
        artifact.check_model(fingerprint, path)
        if artifact.method == neuron_adjust.METHOD:
            adjusters.append(NeuronAdjust.from_artifact(artifact))
        elif artifact.method == ksd.METHOD:
            gates.append(KeySpaceGate.from_artifact(artifact))
        else:
            raise BadInputError(f"{path}: unknown intervention method {artifact.method!r}")
    return adjusters, gates


class IntervenedBackend(Backend):
    """`inner` with Neuron Adjust hooks on `model` and KSD gates in front; the same interface."""

    def __init__(
        self, inner: Backend, model: PreTrainedModel, adjusters: Sequence[NeuronAdjust], gates: Sequence[KeySpaceGate]
    ) -> None:
        if adjusters and not isinstance(inner, HFBackend):
            raise BadInputError("Neuron Adjust hooks the transformers model's neurons: use --backend hf with it")
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

    def generate(self, prompts: Sequence[str], params: GenerationParams, progress: Progress | None = None) -> list[Generation]:
        refused = self.refused(prompts)
        kept = [i for i, flag in enumerate(refused) if not flag]
        with self._adjusted():
            generated = self.inner.generate(
                [prompts[i] for i in kept], params, self._offset(progress, len(prompts) - len(kept), len(prompts))
            )
        results = [Generation(p, [self.gates[0].refusal] * params.num_samples) if flag else None for p, flag in zip(prompts, refused)]
        for i, generation in zip(kept, generated):
            results[i] = generation
        for gate in (g for g in self.gates if g.check_generated):
            for i, generation in zip(kept, generated):
                hits = gate.refuses_generation(self.model, self.tokenizer, [prompts[i]] * len(generation.texts), generation.texts)
                generation.texts = [gate.refusal if hit else text for hit, text in zip(hits, generation.texts)]
        return results

    def score(self, prompts: Sequence[str], continuations: Sequence[str], progress: Progress | None = None) -> list[ContinuationScore]:
        refused = self.refused(prompts)
        kept = [i for i, flag in enumerate(refused) if not flag]
        with self._adjusted():
            scored = self.inner.score(
                [prompts[i] for i in kept], [continuations[i] for i in kept],
                self._offset(progress, len(prompts) - len(kept), len(prompts)),
            )
        results: list[ContinuationScore | None] = [None] * len(prompts)
        for i, score in zip(kept, scored):
            results[i] = score
        blocked = [i for i, flag in enumerate(refused) if flag]
        for i, (_, continuation) in zip(blocked, tokenize_pairs(self.tokenizer, [prompts[i] for i in blocked], [continuations[i] for i in blocked])):
            results[i] = ContinuationScore(continuation, [float("-inf")] * len(continuation), greedy=False)
        return results

    def close(self) -> None:
        self.inner.close()


def apply_interventions(
    engine: Backend,
    paths: Sequence[str | Path],
    model_name: str,
    *,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> Backend:
    """`engine` with the artifacts at `paths` applied (itself when there are none). The HF backend
    lends its model; for vLLM the gate loads the HF model beside it, in the engine's dtype."""
    if not paths:
        return engine
    if isinstance(engine, HFBackend):
        model = engine.model
    else:
        dtype = str(engine.dtype).removeprefix("torch.")
        model, _ = load_model(model_name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    adjusters, gates = load_interventions(paths, model)
    return IntervenedBackend(engine, model, adjusters, gates)
