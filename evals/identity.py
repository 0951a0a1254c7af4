"""Which token of a name carries the entity's identity: activation patching of the subject's first
and last token, layer by layer (Meng et al. 2022, causal tracing; Nanda et al. 2023, "Fact Finding").

For a pair of entities (source, target) with different values of an attribute, the target's
question is run with one residual-stream vector replaced by the source's: block `l`'s output at
the subject's first (or last) token. If the answer's first token becomes the source's, that
vector carried who the question is about. ROME-style editors (ROCR) write at the position and
layers where this switch rate is high.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit import arch
from llmkit.generation import encode_prompts
from llmkit.hooks import intervene
from llmkit.methods.rocr import read_at, subject_prompt
from llmkit.models import input_device

POSITIONS = ("first", "last")


def _first_answer_token(tokenizer: PreTrainedTokenizerBase, value: str) -> int:
    return tokenizer(" " + value, add_special_tokens=False)["input_ids"][0]


@torch.inference_mode()
def subject_patching(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str, str, str]],
    template: str,
    cue: str = "Answer:",
) -> dict[str, Any]:
    """Switch rates by position and layer. `pairs` are (source name, source value, target name,
    target value) with values whose first tokens differ; `template` holds the subject as `{}`
    and is followed by `cue` (e.g. "Question: Where was {} born?\\n" and "Answer:"). Returns
    {"switch_rate": {position: [rate at layer 0, 1, ...]}, "pairs": n, "clean_accuracy": share
    of targets whose unpatched answer already starts right}."""
    layers = range(len(arch.decoder_layers(model)))
    kept = [p for p in pairs if _first_answer_token(tokenizer, p[1]) != _first_answer_token(tokenizer, p[3])]
    switched = {position: [0] * len(layers) for position in POSITIONS}
    clean = 0
    for source, source_value, target, target_value in kept:
        target_text, _ = subject_prompt(tokenizer, template, target, False, "last", cue)
        ids = torch.tensor(encode_prompts(tokenizer, [target_text]), device=input_device(model))
        clean += int(model(input_ids=ids).logits[0, -1].argmax() == _first_answer_token(tokenizer, target_value))
        wanted = _first_answer_token(tokenizer, source_value)
        for position in POSITIONS:
            source_prompt = subject_prompt(tokenizer, template, source, False, position, cue)
            _, target_index = subject_prompt(tokenizer, template, target, False, position, cue)
            vectors = read_at(model, tokenizer, [source_prompt], [("resid_out", layer) for layer in layers])
            for layer in layers:

                def patch(hidden: torch.Tensor, _layer: int, vector=vectors[layer][0]) -> torch.Tensor:
                    hidden = hidden.clone()
                    hidden[:, target_index] = vector.to(hidden.dtype)
                    return hidden

                with intervene(model, "resid_out", [layer], patch):
                    switched[position][layer] += int(model(input_ids=ids).logits[0, -1].argmax() == wanted)
    rates = {position: [count / len(kept) for count in counts] if kept else [] for position, counts in switched.items()}
    return {"switch_rate": rates, "pairs": len(kept), "clean_accuracy": clean / len(kept) if kept else None}


def world_pairs(entities: Sequence[dict[str, Any]], attribute: str, min_exposure: int, limit: int) -> list[tuple]:
    """(source, target) pairs of a world's entities seen at least `min_exposure` times, each
    entity paired with the next one of a different `attribute` value."""
    known = [e for e in entities if e["exposure"] >= min_exposure and e[attribute] is not None]
    pairs = []
    for source, target in zip(known, known[1:] + known[:1]):
        if source[attribute] != target[attribute] and source["id"] != target["id"]:
            pairs.append((source["name"], source[attribute], target["name"], target[attribute]))
    return pairs[:limit]
