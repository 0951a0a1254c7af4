"""Batching: length-sorted batches and padding, in one place.

Every batched forward in llmkit goes through `pad_batch`, which also builds position ids that count
real tokens only. Without them a left-padded prompt would be seen at shifted positions (absolute
position embeddings, RoPE) and give different activations from the same prompt unpadded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_token_id: int, padding_side: str = "left"
) -> dict[str, torch.Tensor]:
    """Pad token-id lists into `input_ids`, `attention_mask` and `position_ids` (B, L) tensors."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        input_ids[row, span] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids(attention_mask)}


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token among the real tokens of its row; pads get 0 (they are masked)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length, longest first, so padding is small and an
    out-of-memory error, if any, comes with the first batch."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def last_token_index(attention_mask: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Index, among the last `num_positions` positions, of each row's last real token.

    Works for left and right padding, and for cached decoding, where a forward sees only the newest
    positions while the mask covers the whole sequence.
    """
    mask = attention_mask[:, -num_positions:].long()
    positions = torch.arange(num_positions, device=mask.device)
    return (mask * positions).argmax(-1)


def corpus_batches(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], max_tokens: int, batch_size: int, max_length: int
) -> Iterator[list[list[int]]]:
    """Token-id batches of the corpus texts, truncated to `max_length`, up to `max_tokens` in all."""
    budget, pending = max_tokens, []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"][:budget]
        if not ids:
            continue
        pending.append(ids)
        budget -= len(ids)
        if len(pending) == batch_size or budget <= 0:
            yield pending
            pending = []
        if budget <= 0:
            return
    if pending:
        yield pending
