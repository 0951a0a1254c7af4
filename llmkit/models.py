"""Load a causal LM and its tokenizer from a local directory or a Hugging Face hub id.

The one place that turns `--model`, `--dtype` and `--device` into a ready model: weights come from
safetensors where the checkpoint has them (transformers reads `.bin` files with
`weights_only=True`), `trust_remote_code` is off unless asked for, and a tokenizer without a pad
token gets one, so batching works for every model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import PreTrainedTokenizerBase

from llmkit.errors import BadInputError, first_line

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must exist on this machine."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise BadInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} asked for, but CUDA is not available; use --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise BadInputError(f"device {device!r} asked for, but MPS is not available; use --device cpu")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on GPUs that support it, float16 on other GPUs and MPS, float32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype not in DTYPES:
        raise BadInputError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return DTYPES[dtype]


def check_model_path(name_or_path: str) -> None:
    """Fail early, with a useful message, on paths that cannot be a model."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInputError(
                f"{name_or_path} is not a model directory (no config.json in it); "
                "pass a directory written by save_pretrained, or a hub id"
            )
        return
    if path.exists():
        raise BadInputError(f"{name_or_path} is a file; --model takes a model directory or a hub id")
    # A hub id is `name` or `org/name`; anything else that does not exist is a mistyped path.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise BadInputError(f"model path {name_or_path} does not exist; check the path, or pass a hub id")


def load_model(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` in eval mode on the resolved device and dtype."""
    check_model_path(name_or_path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    common = {"trust_remote_code": trust_remote_code, "revision": revision}
    tokenizer = load_tokenizer(name_or_path, **common)
    with loading_errors(name_or_path, trust_remote_code):
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, device_map=str(torch_device), **common
        )
    set_pad_token(model, tokenizer)
    model.eval()
    return model, tokenizer


def load_tokenizer(
    name_or_path: str, *, trust_remote_code: bool = False, revision: str | None = None
) -> PreTrainedTokenizerBase:
    """The model's tokenizer, as transformers loads it: every backend encodes prompts and decodes
    generations with this one, so their texts agree token for token."""
    with loading_errors(name_or_path, trust_remote_code):
        return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)


@contextmanager
def loading_errors(name_or_path: str, trust_remote_code: bool) -> Iterator[None]:
    """Turn a model that cannot be loaded into one line of bad input, naming the first reason."""
    try:
        yield
    except (OSError, ValueError, KeyError) as err:
        hint = "" if trust_remote_code else " (if it needs custom code, add --trust-remote-code)"
        raise BadInputError(f"cannot load model {name_or_path!r}: {first_line(err)}{hint}") from err


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short digest that tells models apart: every parameter's name, shape and dtype, and an
    evenly strided sample of about 4096 of its values. Any fine-tune or dense edit (a rank-one
    update changes every entry) changes it, while a 7B model is fingerprinted in a second rather
    than hashed whole. Not a tamper check."""
    sha = hashlib.sha256(model.config.model_type.encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].cpu().contiguous()
        sha.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        sha.update(sample.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


def set_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a pad token one: its EOS (the usual choice), else UNK, else a new
    `<pad>` token with the embedding matrix grown to match. Attention masks keep pads inert."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
