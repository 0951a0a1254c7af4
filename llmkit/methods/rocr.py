"""ROCR, Rank-One Concept Redirection ("LLM Unlearning Should Be Form-Independent"): a training-free,
closed-form edit of the MLP output matrices of a few layers that redirects the model's
representation of a target concept to a harmless other one, so every form of question about the
target reaches the other concept instead.

As released (AlphaEdit's null-space-projected, MEMIT-style multi-layer update, with one request):

    z      = resid_out_{L*}(redirect)                  value: the redirect's residual stream at the
                                                       last edited layer L*, one forward pass
    for i, l in enumerate(layers):                     recomputed after each earlier layer's edit
        k_l    = mean_c mlp_key_l(c(target))           key: over the context templates
        h_cur  = resid_out_{L*}("{target}.")           the target's current value (bare prompt)
        r_l    = (z − h_cur) / (len(layers) − i)       MEMIT's residual spreading
        ΔW_l   = r_l (P_l k_l)ᵀ / (λ + k_lᵀ P_l k_l)   the rank-one update (Sherman–Morrison form of
                                                       AlphaEdit's solve with an empty edit cache)

P_l preserves other knowledge: with `preserve="nullspace"` the projector onto the eigenvectors of
the key second moment Σ_l = E[k kᵀ] whose eigenvalues are below the threshold (so ΔW_l k ≈ 0 for
keys the corpus holds); with "covariance" ROME's C⁻¹ (P_l = Σ_l⁻¹); with "none" the identity.
Several targets are edited one after another, as AlphaEdit does: C_prev accumulates k kᵀ of the
earlier edits, and the update becomes AlphaEdit's ΔW = r kᵀP ((k kᵀ + C_prev)P + λI)⁻¹.

Differences from the released code, on purpose: the redirect's value and the target's keys are
read with one BOS (the code's chat-wrapped prompts are tokenized with a second BOS), and decoder
layers that return a bare tensor are read correctly (the code's `cur_out[0]` would take batch
row 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit import arch
from llmkit.batching import pad_batch
from llmkit.errors import BadInputError
from llmkit.generation import chat_wrap, encode_prompts
from llmkit.hooks import capture

# The released code's six context starters; each becomes "<starter> {}." (chat-wrapped when the
# tokenizer has a chat template) followed by "Answer:".
CONTEXT_STARTERS = (
    "", "Please answer the question about", "Choose the best answer about", "Write the answer about",
    "Tell me about", "Write something about",
)
PRESERVE_MODES = ("nullspace", "covariance", "none")


@dataclass
class ROCRConfig:
    layers: Sequence[int]
    """Edited layers, contiguous and increasing; the value is read at the last one."""
    lam: float = 1.0
    """λ (the code's L2): the edit reaches s/(λ + s) of the residual, s = kᵀPk."""
    preserve: str = "nullspace"
    nullspace_threshold: float = 2e-2
    """Eigenvalues of Σ below this span the null space the edit is confined to."""
    contexts: Sequence[str] = field(default_factory=lambda: [f"{s} {{}}.".strip() for s in CONTEXT_STARTERS])
    """Templates with one "{}" for the subject, each read after chat wrapping, then "Answer:"."""
    chat: bool = False


def default_layers(num_layers: int) -> list[int]:
    """The paper edits layers 4–6 of Llama-3-8B's 32: early-middle layers, where the MLPs recall a
    subject's attributes. Scaled to any depth: the three layers from 12.5% of the depth on
    (clipped to the model), e.g. 4–6 of 32, 2–4 of 16, 0–2 of 4."""
    first = round(num_layers * 4 / 32)
    return list(range(first, min(first + 3, num_layers)))


# --- key statistics ----------------------------------------------------------------------------


@torch.inference_mode()
def key_second_moment(
    model: PreTrainedModel,
    token_batches: Iterable[list[list[int]]],
    layers: Sequence[int],
    pad_token_id: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, torch.Tensor], int]:
    """Σ_l = E[k kᵀ] of `mlp_key` over every real token, batch by batch: each batch's kᵀk in the
    model's precision (at least float32), summed in float64, so memory is m×m per layer whatever
    the corpus size. Returns (Σ per layer, tokens counted)."""
    sums: dict[int, torch.Tensor] = {}
    count = 0
    for sequences in token_batches:
        batch = pad_batch(sequences, pad_token_id, "right")
        mask = batch["attention_mask"].bool().to(model.device)
        with capture(model, "mlp_key", layers) as keys:
            model(input_ids=batch["input_ids"].to(model.device), attention_mask=batch["attention_mask"].to(model.device))
        for layer in layers:
            k = keys[layer][mask]
            k = k.float() if k.dtype in (torch.float16, torch.bfloat16) else k
            sums[layer] = sums.get(layer, 0) + (k.T @ k).double()
        tokens = int(mask.sum())
        count += tokens
        if progress:
            progress(tokens)
    if count == 0:
        raise BadInputError("the statistics corpus has no tokens; pass a corpus with text")
    return {layer: s / count for layer, s in sums.items()}, count


def corpus_batches(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], max_tokens: int, batch_size: int, max_length: int
) -> Iterable[list[list[int]]]:
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


def preservation_matrix(second_moment: torch.Tensor, preserve: str, threshold: float) -> torch.Tensor:
    """P: the null-space projector U₀U₀ᵀ (eigenvectors of Σ with eigenvalue < threshold), Σ⁻¹
    (ROME's covariance), or the identity."""
    m = second_moment.shape[0]
    if preserve == "none":
        return torch.eye(m, dtype=torch.float64, device=second_moment.device)
    if preserve == "covariance":
        return torch.linalg.inv(second_moment)
    if preserve != "nullspace":
        raise BadInputError(f"--preserve takes {', '.join(PRESERVE_MODES)}, got {preserve!r}")
    eigenvalues, eigenvectors = torch.linalg.eigh(second_moment)
    null = eigenvectors[:, eigenvalues < threshold]
    return null @ null.T


# --- the edit ----------------------------------------------------------------------------------


def subject_prompt(
    tokenizer: PreTrainedTokenizerBase, template: str, subject: str, chat: bool, cue: str = "Answer:"
) -> tuple[str, int]:
    """One context template filled with `subject` (chat-wrapped when `chat`, then `cue`), and the
    index of the subject's last token in it (ROME's and MEMIT's "subject_last")."""
    content = template.format(subject)
    rendered = chat_wrap(tokenizer, content) if chat else content
    end = rendered.index(content) + template.index("{}") + len(subject)
    return rendered + cue, len(encode_prompts(tokenizer, [rendered[:end]])[0]) - 1


@torch.inference_mode()
def read_at(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, point: str, layer: int, prompts: Sequence[tuple[str, int]]) -> torch.Tensor:
    """`point` at `layer`, at the given token of each prompt: (len(prompts), dim)."""
    rows = []
    for text, index in prompts:
        ids = torch.tensor(encode_prompts(tokenizer, [text]), device=model.device)
        with capture(model, point, [layer]) as acts:
            model(input_ids=ids)
        rows.append(acts[layer][0, index])
    return torch.stack(rows).double()


def rank_one_update(residual: torch.Tensor, key: torch.Tensor, projector: torch.Tensor, lam: float, c_prev: torch.Tensor | None) -> torch.Tensor:
    """ΔW (d×m). With no earlier edit: r (Pk)ᵀ / (λ + kᵀPk); with C_prev, AlphaEdit's
    r kᵀP ((kkᵀ + C_prev)P + λI)⁻¹, solved (as the code does: X = (P(kkᵀ + C_prev) + λI)⁻¹ P k rᵀ,
    ΔW = Xᵀ) rather than inverted."""
    pk = projector @ key
    if c_prev is None:
        return torch.outer(residual, pk) / (lam + key @ pk)
    m = key.shape[0]
    system = projector @ (torch.outer(key, key) + c_prev) + lam * torch.eye(m, dtype=key.dtype, device=key.device)
    return torch.linalg.solve(system, torch.outer(pk, residual)).T


@dataclass
class LayerEdit:
    layer: int
    key: torch.Tensor
    residual: torch.Tensor
    delta: torch.Tensor


def redirect(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    target: str,
    redirect_to: str,
    config: ROCRConfig,
    projectors: dict[int, torch.Tensor],
    c_prev: dict[int, torch.Tensor] | None = None,
) -> list[LayerEdit]:
    """Edit `model` in place so that `target` is represented as `redirect_to`; the layer edits made.
    `c_prev` (layer -> Σ kkᵀ of earlier targets) is updated for the next target."""
    last = config.layers[-1]
    z = read_at(model, tokenizer, "resid_out", last, [subject_prompt(tokenizer, config.contexts[0], redirect_to, config.chat)])[0]
    contexts = [subject_prompt(tokenizer, c, target, config.chat) for c in config.contexts]
    bare = [subject_prompt(tokenizer, "{}.", target, chat=False, cue="")]
    edits = []
    for i, layer in enumerate(config.layers):
        key = read_at(model, tokenizer, "mlp_key", layer, contexts).mean(0)
        h_cur = read_at(model, tokenizer, "resid_out", last, bare)[0]
        residual = (z - h_cur) / (len(config.layers) - i)
        projector = projectors[layer].to(key.device)
        delta = rank_one_update(residual, key, projector, config.lam, c_prev.get(layer) if c_prev else None)
        with torch.no_grad():
            weight = arch.mlp_out_weight(model, layer)
            weight += delta.to(weight.dtype)
        edits.append(LayerEdit(layer, key, residual, delta))
        if c_prev is not None:
            c_prev[layer] = c_prev.get(layer, torch.zeros_like(projector)) + torch.outer(key, key)
    return edits
