"""ROCR, Rank-One Concept Redirection ("LLM Unlearning Should Be Form-Independent"): a training-free,
closed-form edit of the MLP output matrices of a few layers that redirects the model's
representation of a target concept to a harmless other one, so every form of question about the
target reaches the other concept instead.

The released algorithm (AlphaEdit's null-space-projected, MEMIT-style multi-layer update, with one
request), with the differences listed below:

    z      = mean_c resid_out_{L*}(c(redirect))        value: the redirect's residual stream at the
                                                       last edited layer L*, no optimisation
    for i, l in enumerate(layers):                     recomputed after each earlier layer's edit
        k_l    = mean_c mlp_key_l(c(target))           key: over the context templates c
        h_cur  = mean_c resid_out_{L*}(c(target))      the target's current value
        r_l    = (z − h_cur) / (len(layers) − i)       MEMIT's residual spreading
        ΔW_l   = r_l (P_l k_l)ᵀ / (λ + k_lᵀ P_l k_l)   the rank-one update (Sherman–Morrison form of
                                                       AlphaEdit's solve with an empty edit cache)

everything read at the subject's last token (or first, `subject_token`). P_l preserves other
knowledge: with `preserve="nullspace"` the projector onto the eigenvectors of the key second
moment Σ_l = E[k kᵀ] whose eigenvalues are below the threshold (so ΔW_l k ≈ 0 for keys the corpus
holds); with "covariance" ROME's C⁻¹ (P_l = Σ_l⁻¹); with "none" the identity. Several targets are
edited one after another, as AlphaEdit does: C_prev accumulates k kᵀ of the earlier edits, and the
update becomes AlphaEdit's ΔW = r kᵀP ((k kᵀ + C_prev)P + λI)⁻¹.

Differences from the released code, on purpose:
- z and h_cur are read in the same contexts as the keys, averaged. The code reads z from the first
  context only and h_cur from the bare prompt "{}." without a chat template, so r = z − h_cur also
  holds the difference between two prompt layouts, which the edit then writes into the target;
- prompts are read with one BOS (the code's chat-wrapped prompts are tokenized with a second);
- decoder layers that return a bare tensor are read correctly (the code's `cur_out[0]` would take
  batch row 0).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmkit import arch
from llmkit.batching import corpus_batches, pad_batch
from llmkit.data import read_text, read_texts
from llmkit.errors import BadInputError
from llmkit.generation import chat_wrap, encode_prompts
from llmkit.hooks import capture
from llmkit.methods.configs import CONTEXT_STARTERS as CONTEXT_STARTERS  # re-exported
from llmkit.methods.configs import PRESERVE_MODES, SUBJECT_TOKENS, ROCRConfig, check_layers
from llmkit.methods.configs import default_layers as default_layers  # re-exported
from llmkit.models import input_device, load_model, materialized, model_fingerprint
from llmkit.results import check_output_path, staged_directory

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
    the corpus size. The forward pass stops at the deepest layer asked for. Returns (Σ per layer,
    tokens counted)."""
    sums: dict[int, torch.Tensor] = {}
    count = 0
    for sequences in token_batches:
        batch = pad_batch(sequences, pad_token_id, "right")
        mask = batch["attention_mask"].bool()
        device = input_device(model)
        with capture(model, "mlp_key", layers, stop=True) as keys:
            model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        for layer in layers:
            k = keys[layer][mask.to(keys[layer].device)]
            k = k.float() if k.dtype in (torch.float16, torch.bfloat16) else k
            sums[layer] = sums.get(layer, 0) + (k.T @ k).double()
        tokens = int(mask.sum())
        count += tokens
        if progress:
            progress(tokens)
    if count == 0:
        raise BadInputError("the statistics corpus has no text; pass a corpus with text")
    return {layer: s / count for layer, s in sums.items()}, count


@dataclass
class StatisticsCorpus:
    """The text the key statistics are read from, re-readable (`texts()` streams it afresh)."""

    name: str
    texts: Callable[[], Iterable[str]]
    max_tokens: int
    batch_size: int = 16
    max_length: int = 1024

    @classmethod
    def from_source(cls, source: str, max_tokens: int, max_length: int = 1024) -> StatisticsCorpus:
        """`source` as `read_texts` reads it: .txt (a text per line), JSONL/JSON/CSV/Parquet with a
        'text' field, or a saved or hub dataset; not stdin, which could not be read twice."""
        if source == "-":
            raise BadInputError(
                "--stats-corpus is read twice (digest, then statistics), so it cannot be stdin; save it to a file"
            )
        if not Path(source).expanduser().exists() and Path(source).suffix:
            raise BadInputError(f"--stats-corpus {source} does not exist")
        return cls(source, lambda: read_texts(source), max_tokens, max_length=max_length)

    def batches(self, tokenizer: PreTrainedTokenizerBase) -> Iterable[list[list[int]]]:
        return corpus_batches(tokenizer, self.texts(), self.max_tokens, self.batch_size, self.max_length)


def corpus_digest(corpus: StatisticsCorpus, tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what fixes the tokens the statistics read: for a corpus file, its bytes with the
    tokenizer's definition and the truncation (milliseconds, no tokenizer pass); for a dataset,
    the token ids themselves. With the token budget in the key, a changed text, tokenizer or
    budget is a different cache entry."""
    sha = hashlib.sha256(f"{corpus.max_length};".encode())
    path = Path(corpus.name).expanduser()
    if path.is_file():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        sha.update(
            (backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))).encode()
        )
    else:
        for sequences in corpus.batches(tokenizer):
            for ids in sequences:
                sha.update(struct.pack(f"<{len(ids)}q", *ids))
    return sha.hexdigest()[:16]


def statistics_key(fingerprint: str, layer: int, digest: str, max_tokens: int) -> str:
    return f"{fingerprint}-layer{layer}-{digest}-{max_tokens}"


def key_statistics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    corpus: StatisticsCorpus,
    layers: Sequence[int],
    fingerprint: str,
    cache_dir: Path | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Σ_l for each layer: read from `cache_dir` where an earlier run computed it (keyed by model
    fingerprint, layer, corpus digest and token budget), the rest in one streamed pass and cached.
    Returns (Σ per layer, a record of keys, tokens read, cached layers and seconds)."""
    started = time.perf_counter()
    digest = corpus_digest(corpus, tokenizer)
    keys = {layer: statistics_key(fingerprint, layer, digest, corpus.max_tokens) for layer in layers}
    stats, tokens, damaged = {}, 0, []
    for layer in layers:
        path = cache_dir / f"{keys[layer]}.safetensors" if cache_dir else None
        if path is not None and path.is_file():
            cached = load_statistics(path, fingerprint, layer)
            if cached is None:
                damaged.append(layer)
            else:
                stats[layer], tokens = cached
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        computed, tokens = key_second_moment(
            model, corpus.batches(tokenizer), missing, tokenizer.pad_token_id, progress
        )
        stats.update(computed)
        if cache_dir:
            for layer in missing:
                save_statistics(
                    cache_dir / f"{keys[layer]}.safetensors", computed[layer], fingerprint, layer, digest, tokens
                )
    record = {
        "corpus": corpus.name,
        "corpus_digest": digest,
        "tokens": tokens,
        "keys": keys,
        "cached_layers": [layer for layer in layers if layer not in missing],
        "recomputed_damaged_layers": damaged,
        "seconds": time.perf_counter() - started,
    }
    return stats, record


def save_statistics(
    path: Path, second_moment: torch.Tensor, fingerprint: str, layer: int, digest: str, tokens: int
) -> None:
    metadata = {"fingerprint": fingerprint, "layer": str(layer), "corpus_digest": digest, "tokens": str(tokens)}
    write_cached(path, "second_moment", second_moment, metadata)


def write_cached(path: Path, name: str, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
    """A cache file written whole or not at all: staged beside it, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    safetensors.torch.save_file({name: tensor.cpu().contiguous()}, str(staging), metadata=metadata)
    staging.replace(path)


def load_statistics(path: Path, fingerprint: str, layer: int) -> tuple[torch.Tensor, int] | None:
    """A cached Σ and the tokens it was read from, refused when computed on another model or layer;
    None when the file is damaged (cut short, say, by a full disk), so that it is recomputed."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            second_moment, tokens = handle.get_tensor("second_moment"), int(metadata["tokens"])
    except (safetensors.SafetensorError, OSError, KeyError, ValueError):
        return None
    if metadata.get("fingerprint") != fingerprint or metadata.get("layer") != str(layer):
        raise BadInputError(
            f"statistics cache {path} was computed on model {metadata.get('fingerprint')} layer "
            f"{metadata.get('layer')}, not this model ({fingerprint}) layer {layer}; delete it to recompute"
        )
    square = second_moment.dim() == 2 and second_moment.shape[0] == second_moment.shape[1]
    return (second_moment, tokens) if square else None


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
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    subject: str,
    chat: bool,
    token: str = "last",
    cue: str = "Answer:",
) -> tuple[str, int]:
    """One context template filled with `subject` (chat-wrapped when `chat`, then `cue`), and the
    index of the subject's last or first token in it (ROME's `subject_last` / `subject_first`)."""
    content = template.format(subject)
    rendered = chat_wrap(tokenizer, content) if chat else content
    start = rendered.index(content) + template.index("{}")
    if token == "last":
        return rendered + cue, len(encode_prompts(tokenizer, [rendered[: start + len(subject)]])[0]) - 1
    # The space before the subject belongs to its first token, so the prefix is encoded without it.
    return rendered + cue, len(encode_prompts(tokenizer, [rendered[:start].rstrip(" ")], allow_empty=True)[0])


@torch.inference_mode()
def read_at(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[tuple[str, int]],
    reads: Sequence[tuple[str, int]],
) -> list[torch.Tensor]:
    """Each (point, layer) of `reads` at the given token of each prompt, all from one batched
    forward pass (right-padded, so a position sees what it would alone): (len(prompts), dim) each."""
    batch = pad_batch(encode_prompts(tokenizer, [text for text, _ in prompts]), tokenizer.pad_token_id, "right")
    rows = torch.arange(len(prompts))
    positions = torch.tensor([index for _, index in prompts])
    with ExitStack() as stack:
        captured = [stack.enter_context(capture(model, point, [layer])) for point, layer in reads]
        device = input_device(model)
        model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    return [acts[layer][rows, positions].double() for acts, (_, layer) in zip(captured, reads)]


def update_row(key: torch.Tensor, projector: torch.Tensor, lam: float, c_prev: torch.Tensor | None) -> torch.Tensor:
    """u with ΔW = r uᵀ: Pk / (λ + kᵀPk) with no earlier edit (Sherman–Morrison); with C_prev,
    u = (P(kkᵀ + C_prev) + λI)⁻¹ P k, the transpose of AlphaEdit's kᵀP((kkᵀ + C_prev)P + λI)⁻¹,
    solved rather than inverted as the released code does."""
    pk = projector @ key
    if c_prev is None:
        return pk / (lam + key @ pk)
    m = key.shape[0]
    system = projector @ (torch.outer(key, key) + c_prev) + lam * torch.eye(m, dtype=key.dtype, device=key.device)
    return torch.linalg.solve(system, pk)


@dataclass
class LayerEdit:
    layer: int
    key: torch.Tensor
    residual: torch.Tensor
    row: torch.Tensor
    """ΔW = residual rowᵀ (`update_row`): the rank-one update."""

    @property
    def delta(self) -> torch.Tensor:
        return torch.outer(self.residual, self.row)


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
    target_prompts = [subject_prompt(tokenizer, c, target, config.chat, config.subject_token) for c in config.contexts]
    redirect_prompts = [
        subject_prompt(tokenizer, c, redirect_to, config.chat, config.subject_token) for c in config.contexts
    ]
    [z] = read_at(model, tokenizer, redirect_prompts, [("resid_out", last)])
    z = z.mean(0)
    edits = []
    for i, layer in enumerate(config.layers):
        keys, values = read_at(model, tokenizer, target_prompts, [("mlp_key", layer), ("resid_out", last)])
        key, h_cur = keys.mean(0), values.mean(0)
        residual = (z - h_cur) / (len(config.layers) - i)
        projector = projectors[layer].to(key.device)
        edit = LayerEdit(
            layer, key, residual, update_row(key, projector, config.lam, c_prev.get(layer) if c_prev else None)
        )
        # On a dispatched model the weight may be offloaded: edited where accelerate keeps it.
        with torch.no_grad(), materialized(arch.mlp_out_module(model, layer), write=True):
            weight = arch.mlp_out_weight(model, layer)
            weight += edit.delta.to(weight.device, weight.dtype)
        edits.append(edit)
        if c_prev is not None:
            c_prev[layer] = c_prev.get(layer, torch.zeros_like(projector)) + torch.outer(key, key)
    return edits


# --- the whole run: statistics, projectors, one redirection per target -----------------------


@dataclass
class Request:
    target: str
    redirect: str


def check_request(tokenizer: PreTrainedTokenizerBase, request: Request) -> None:
    for role, name in (("target", request.target), ("redirect", request.redirect)):
        if not name.strip():
            raise BadInputError(f"the {role} is empty; name the concept, e.g. --{role} 'Stephen King'")
        if not tokenizer(name, add_special_tokens=False)["input_ids"]:
            raise BadInputError(
                f"the tokenizer turns the {role} {name!r} into no tokens; name it with text the model reads"
            )
    if request.target.strip() == request.redirect.strip():
        raise BadInputError(f"the target and the redirect are both {request.target!r}; redirect to another concept")


def read_contexts(path: Path | None) -> list[str] | None:
    """`ROCRConfig.contexts` from a file (None for None): templates, one per line, each with
    exactly one '{}' for the subject."""
    if path is None:
        return None
    if not path.is_file():
        raise BadInputError(f"--contexts file {path} does not exist")
    contexts = [line.rstrip("\n") for line in read_text(path).splitlines() if line.strip()]
    bad = [c for c in contexts if c.count("{}") != 1]
    if not contexts or bad:
        raise BadInputError(
            f"--contexts {path}: every line needs exactly one {{}} where the subject goes, e.g. 'Tell me about {{}}.'"
        )
    return contexts


def pair_requests(targets: Sequence[str], redirects: Sequence[str]) -> list[Request]:
    """One request per target: with one redirect for all targets, or one redirect each."""
    if not targets or not redirects:
        raise BadInputError("name what to forget with --target and where to send it with --redirect")
    if len(redirects) not in (1, len(targets)):
        raise BadInputError(
            f"give one --redirect for all targets or one per target; "
            f"got {len(targets)} targets and {len(redirects)} redirects"
        )
    if len(redirects) == 1:
        redirects = list(redirects) * len(targets)
    return [Request(t, r) for t, r in zip(targets, redirects)]


def projector_key(statistics_key: str, preserve: str, threshold: float) -> str:
    """The cache key of P: Σ's own key, the preservation mode and (for the null space) its threshold."""
    return f"{statistics_key}-{preserve}-{threshold:g}" if preserve == "nullspace" else f"{statistics_key}-{preserve}"


def projectors_for(
    second_moments: dict[int, torch.Tensor] | None,
    config: ROCRConfig,
    m: int,
    device: torch.device,
    statistics_keys: Mapping[int, str] | None = None,
    cache_dir: Path | None = None,
) -> tuple[dict[int, torch.Tensor], list[int]]:
    """P per layer, in float64 on the model's device (on the CPU for MPS, which has no float64),
    and the layers whose P was read from `cache_dir` (beside Σ, keyed by `projector_key`) rather
    than computed: an eigendecomposition of the m×m Σ is minutes on a 7B layer (m = 14336)."""
    device = torch.device("cpu") if device.type == "mps" else device
    if second_moments is None:
        return {layer: torch.eye(m, dtype=torch.float64, device=device) for layer in config.layers}, []
    projectors, cached = {}, []
    for layer in config.layers:
        path = None
        if cache_dir is not None and statistics_keys is not None:
            key = projector_key(statistics_keys[layer], config.preserve, config.nullspace_threshold)
            path = cache_dir / f"projector-{key}.safetensors"
        if path is not None and path.is_file():
            try:
                projectors[layer] = safetensors.torch.load_file(str(path))["projector"].to(device)
                cached.append(layer)
                continue
            except (safetensors.SafetensorError, OSError, KeyError):
                pass  # damaged (a write cut short): computed again below
        projectors[layer] = preservation_matrix(
            second_moments[layer].to(device), config.preserve, config.nullspace_threshold
        )
        if path is not None:
            write_cached(path, "projector", projectors[layer])
    return projectors, cached


def unlearn(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[Request],
    config: ROCRConfig,
    corpus: StatisticsCorpus | None,
    cache_dir: Path | None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[list[LayerEdit]], dict[str, Any]]:
    """ROCR on `model`, in place: key statistics (skipped for preserve="none"), projectors, then
    each request redirected in turn with C_prev accumulating. Returns the edits per request and the
    record `rocr.json` is made of (timings included: statistics apart from the edit)."""
    if config.preserve not in PRESERVE_MODES:
        raise BadInputError(f"--preserve takes {', '.join(PRESERVE_MODES)}, got {config.preserve!r}")
    if config.lam < 0:
        raise BadInputError(f"--lambda must be at least 0, got {config.lam}")
    if config.subject_token not in SUBJECT_TOKENS:
        raise BadInputError(f"--subject-token takes {', '.join(SUBJECT_TOKENS)}, got {config.subject_token!r}")
    check_layers(config.layers, len(arch.decoder_layers(model)))
    for request in requests:
        check_request(tokenizer, request)
    m = arch.mlp_out_weight(model, config.layers[0]).shape[1]
    fingerprint = model_fingerprint(model)
    statistics, second_moments = None, None
    if config.preserve != "none":
        if corpus is None:
            raise BadInputError(
                f"--preserve {config.preserve} needs key statistics: pass --stats-corpus (text, JSONL or a dataset)"
            )
        second_moments, statistics = key_statistics(
            model, tokenizer, corpus, config.layers, fingerprint, cache_dir, progress
        )
    started = time.perf_counter()
    projectors, cached_projectors = projectors_for(
        second_moments, config, m, input_device(model), statistics["keys"] if statistics else None, cache_dir
    )
    if statistics:
        statistics["cached_projector_layers"] = cached_projectors
    projector_s = time.perf_counter() - started
    c_prev: dict[int, torch.Tensor] = {}
    edits = [redirect(model, tokenizer, r.target, r.redirect, config, projectors, c_prev) for r in requests]
    edit_s = time.perf_counter() - started - projector_s
    record = {
        "method": "rocr",
        "requests": [{"target": r.target, "redirect": r.redirect} for r in requests],
        "config": {**asdict(config), "layers": list(config.layers), "contexts": list(config.contexts)},
        "statistics": statistics,
        "original_fingerprint": fingerprint,
        "edited_fingerprint": model_fingerprint(model),
        "dtype": str(model.dtype).removeprefix("torch."),
        "key_response": [
            {"target": r.target, "layer": e.layer, "reach": float(e.row @ e.key)}
            for r, target_edits in zip(requests, edits)
            for e in target_edits
        ],
        "timings": {
            "statistics_s": round(statistics["seconds"], 3) if statistics else 0.0,
            "projector_s": round(projector_s, 3),
            "edit_s": round(edit_s, 3),
        },
    }
    return edits, record


# --- the output: factors and original weights, so an edit can be inspected and reverted -------

EDIT_FILE = "rocr.json"
WEIGHTS_FILE = "rocr_edit.safetensors"


def edit_tensors(originals: dict[int, torch.Tensor], edits: Sequence[Sequence[LayerEdit]]) -> dict[str, torch.Tensor]:
    """What `WEIGHTS_FILE` holds: each edited layer's original MLP output weight, stored exactly as
    the parameter is (GPT-2's Conv1D included), and each target's factors ΔW = residual rowᵀ."""
    tensors = {f"original.layer{layer}": weight.cpu().contiguous() for layer, weight in originals.items()}
    for i, target_edits in enumerate(edits):
        for edit in target_edits:
            for name in ("key", "residual", "row"):
                tensors[f"edit{i}.layer{edit.layer}.{name}"] = getattr(edit, name).cpu().contiguous()
    return tensors


def original_weights(model: PreTrainedModel, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    originals = {}
    for layer in layers:
        module = arch.mlp_out_module(model, layer)
        with materialized(module):
            originals[layer] = module.weight.detach().cpu().clone()
    return originals


def revert(model: PreTrainedModel, tensors: dict[str, torch.Tensor]) -> list[int]:
    """Put the original MLP output weights back, bit for bit; the layers restored."""
    layers = sorted(int(name.removeprefix("original.layer")) for name in tensors if name.startswith("original.layer"))
    with torch.no_grad():
        for layer in layers:
            module = arch.mlp_out_module(model, layer)
            with materialized(module, write=True):
                module.weight.copy_(tensors[f"original.layer{layer}"].to(module.weight.device))
    return layers


def write_edited_model(
    path: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    record: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    overwrite: bool = False,
) -> None:
    """The edited model as an ordinary HF directory, with `rocr.json` and `rocr_edit.safetensors`
    beside it, appearing whole or not at all."""
    with staged_directory(path, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        safetensors.torch.save_file(tensors, str(staging / WEIGHTS_FILE))
        (staging / EDIT_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_edit(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`rocr.json` and the saved tensors of a directory `unlearn rocr` wrote."""
    if not (path / EDIT_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise BadInputError(
            f"{path} is not a directory written by `llmkit unlearn rocr` (no {EDIT_FILE} and {WEIGHTS_FILE})"
        )
    try:
        record = json.loads((path / EDIT_FILE).read_text(encoding="utf-8"))
    except ValueError:  # not JSON, or not UTF-8
        record = None
    if (
        not isinstance(record, dict)
        or not {"edited_fingerprint", "original_fingerprint", "dtype", "config"} <= record.keys()
    ):
        raise BadInputError(
            f"{path / EDIT_FILE} is damaged (not the JSON `llmkit unlearn rocr` writes); it cannot be reverted"
        )
    try:
        return record, safetensors.torch.load_file(str(path / WEIGHTS_FILE))
    except (safetensors.SafetensorError, OSError) as err:
        raise BadInputError(f"{path / WEIGHTS_FILE} is damaged ({err}); the edit cannot be reverted") from None


def revert_directory(edited: Path, out: Path, overwrite: bool = False) -> dict[str, Any]:
    """Restore the model `unlearn` edited into `edited` to `out`, bit for bit, refusing when the
    weights there changed after the edit or the saved originals do not give the original back.
    Returns the edit's record."""
    check_output_path(out, overwrite, inputs=[edited])
    record, tensors = read_edit(edited)
    model, tokenizer = load_model(str(edited), dtype=record["dtype"], device="cpu")
    found = model_fingerprint(model)
    if found != record["edited_fingerprint"]:
        raise BadInputError(
            f"{edited} does not hold the model ROCR wrote (fingerprint {found}, expected "
            f"{record['edited_fingerprint']}); its weights changed after the edit, so reverting would not restore "
            "the original"
        )
    revert(model, tensors)
    if model_fingerprint(model) != record["original_fingerprint"]:
        raise BadInputError(
            f"{edited}: the saved original weights do not give back the original model; {WEIGHTS_FILE} is damaged"
        )
    with staged_directory(out, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return record
