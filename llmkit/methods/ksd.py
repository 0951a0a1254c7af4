"""Key Space Detection (Li, Sun, Weng 2025, "Effective Skill Unlearning through Intervention and
Abstention", §Key Space Detection): abstain on queries of the forgotten skill, without training.

1. Read the `mlp_key` vectors v (the input of the MLP output projection) at one layer for the
   forget queries: each query's last token, or every token (`positions="all"`).
2. The key hypercube: per dimension mean μ and std σ (ddof 1), and the tight scale
   k = max_i max_d |v_i,d − μ_d| / σ_d, so that μ ± k·σ just holds every forget vector.
3. A query whose key at the prompt's last token lies inside μ ± α·k·σ in every dimension is
   refused: its answer is replaced by the refusal. Optionally every generated token is checked
   too (`check_generated`), as the paper's hook does at each decoding step.

Statistics are streamed in two passes over the queries (μ and σ from float64 sums, then k), so
memory does not grow with the data and k is exact. Where the paper's code takes batch item 0 of
every call (batch size 1 only), the gate here checks each sequence of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit import arch
from llmkit.batching import length_sorted_batches, pad_batch
from llmkit.errors import BadInputError
from llmkit.generation import encode_prompts, tokenize_pairs
from llmkit.hooks import capture
from llmkit.interventions import Artifact
from llmkit.methods.configs import DEFAULT_REFUSAL as DEFAULT_REFUSAL  # re-exported
from llmkit.methods.configs import KSD_METHOD, KSDConfig
from llmkit.methods.configs import POSITIONS as POSITIONS  # re-exported
from llmkit.models import input_device, model_fingerprint

METHOD = KSD_METHOD
STD_FLOOR = 1e-6


def resolve_layer(model: PreTrainedModel, layer: int) -> int:
    """A layer number in range (negative counts from the end), or a clear error."""
    num_layers = len(arch.decoder_layers(model))
    if not -num_layers <= layer < num_layers:
        raise BadInputError(
            f"--layer {layer} does not exist; the model has layers 0..{num_layers - 1} (or -1..-{num_layers})"
        )
    return layer % num_layers


@torch.inference_mode()
def key_vectors(
    model: PreTrainedModel,
    token_ids: Sequence[list[int]],
    layer: int,
    positions: str,
    pad_token_id: int,
    batch_size: int,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Length-sorted batches of (indices into `token_ids`, float32 key vectors at `layer`): one
    (len(indices), m) row per sequence at its last token, or every token's row (n, m). The
    forward pass stops at `layer`."""
    for indices in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
        batch = pad_batch([token_ids[i] for i in indices], pad_token_id, "right")
        with capture(model, "mlp_key", [layer], position=positions, stop=True) as keys:
            model(**{k: v.to(input_device(model)) for k, v in batch.items()})
        vectors = keys[layer]
        if positions != "last":
            vectors = vectors[batch["attention_mask"].bool().to(vectors.device)]
        yield indices, vectors.float()


BOUNDARY_TOLERANCE = 1e-5
"""Relative slack on the hypercube's faces. The query that sets k lies exactly on a face, and its
key recomputed in a batch of another shape (other padding, other kernels) differs by float32
rounding: up to 7e-7 relative, measured on the tiny models of every family. Without the slack
that fitted query could slip through; with it, α = 0.999 still leaves it out."""


@dataclass
class KeySpaceGate:
    """The hypercube μ ± half_width at `layer`, and what a refused query answers."""

    layer: int
    mean: torch.Tensor
    half_width: torch.Tensor
    refusal: str
    check_generated: bool = False

    def inside(self, keys: torch.Tensor) -> torch.Tensor:
        """(n,) whether each key (n, m) lies in the hypercube in every dimension (up to float
        rounding: BOUNDARY_TOLERANCE)."""
        mean, half_width = self.mean.to(keys.device), self.half_width.to(keys.device)
        return ((keys.float() - mean).abs() <= half_width * (1 + BOUNDARY_TOLERANCE)).all(-1)

    @torch.inference_mode()
    def refuses(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], batch_size: int = 64
    ) -> list[bool]:
        """Whether each prompt's key at its last token falls in the hypercube: one prefill pass up
        to `layer`, in length-sorted batches."""
        refused = [False] * len(prompts)
        encoded = encode_prompts(tokenizer, prompts)
        for indices, keys in key_vectors(model, encoded, self.layer, "last", tokenizer.pad_token_id, batch_size):
            for i, flag in zip(indices, self.inside(keys).tolist()):
                refused[i] = flag
        return refused

    @torch.inference_mode()
    def refuses_generation(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], texts: Sequence[str]
    ) -> list[bool]:
        """Whether the key of any generated token (prompt + text, read as the model reads it)
        falls in the hypercube: the paper's check at every decoding step, in one forward each."""
        refused = []
        for context, continuation in tokenize_pairs(tokenizer, prompts, texts):
            if not continuation:
                refused.append(False)
                continue
            ids = torch.tensor([context + continuation], device=input_device(model))
            with capture(model, "mlp_key", [self.layer], stop=True) as keys:
                model(input_ids=ids)
            refused.append(bool(self.inside(keys[self.layer][0, len(context) :]).any()))
        return refused

    def artifact(self, fingerprint: str, dtype: str, params: dict[str, Any], record: dict[str, Any]) -> Artifact:
        tensors = {"mean": self.mean, "half_width": self.half_width}
        return Artifact(METHOD, fingerprint, dtype, {**params, "layer": self.layer}, tensors, record)

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> KeySpaceGate:
        params = artifact.params
        return cls(
            int(params["layer"]),
            artifact.tensors["mean"],
            artifact.tensors["half_width"],
            params["refusal"],
            bool(params["check_generated"]),
        )


def key_hypercube(
    vector_batches: Callable[[], Iterable[tuple[list[int], torch.Tensor]]],
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """(μ, σ, k, n) of the key vectors, in two streamed passes of `vector_batches()` (`key_vectors`)."""
    total, squares, count = 0, 0, 0
    for _, vectors in vector_batches():
        total = total + vectors.sum(0).double()
        squares = squares + vectors.square().sum(0).double()
        count += vectors.shape[0]
    if count < 2:
        raise BadInputError(f"KSD needs at least 2 forget key vectors to measure a spread, got {count}")
    mean = total / count
    std = ((squares - count * mean.square()).clamp_min(0) / (count - 1)).sqrt().float().clamp_min(STD_FLOOR)
    mean = mean.float()
    k = max(
        float(((vectors - mean.to(vectors.device)).abs() / std.to(vectors.device)).max())
        for _, vectors in vector_batches()
    )
    return mean, std, k, count


def fit_ksd(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, queries: Sequence[str], config: KSDConfig
) -> tuple[KeySpaceGate, dict[str, Any]]:
    """The gate for the forget queries, and a record of the fit (vectors read, k, the width)."""
    if not queries:
        raise BadInputError("the forget set is empty; KSD needs the forget skill's queries")
    layer = resolve_layer(model, config.layer)
    encoded = encode_prompts(tokenizer, queries)
    mean, std, k, count = key_hypercube(
        lambda: key_vectors(model, encoded, layer, config.positions, tokenizer.pad_token_id, config.batch_size)
    )
    gate = KeySpaceGate(layer, mean, config.alpha * k * std, config.refusal, config.check_generated)
    record = {"queries": len(queries), "vectors": count, "k": k, "median_std": float(std.median())}
    return gate, record


def ksd_artifact(model: PreTrainedModel, gate: KeySpaceGate, config: KSDConfig, record: dict[str, Any]) -> Artifact:
    return gate.artifact(model_fingerprint(model), str(model.dtype).removeprefix("torch."), asdict(config), record)
