"""Load a causal LM and its tokenizer from a local directory or a Hugging Face hub id.

The one place that turns `--model`, `--dtype` and `--device` into a ready model: weights come from
safetensors where the checkpoint has them (transformers reads `.bin` files with
`weights_only=True`), `trust_remote_code` is off unless asked for, and a tokenizer without a pad
token gets one, so batching works for every model.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llmkit.configs import Placement
from llmkit.errors import BadInputError, first_line
from llmkit.hub import check_hub_reachable, model_cached

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


ADAPTER_CONFIG = "adapter_config.json"


def adapter_base(name_or_path: str) -> str | None:
    """The base model a peft adapter directory was trained on, or None for anything else."""
    config = Path(name_or_path).expanduser() / ADAPTER_CONFIG
    if not config.is_file() or (config.parent / "config.json").is_file():
        return None
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except json.JSONDecodeError as err:
        raise BadInputError(f"{config} is not valid JSON ({err.msg}); the adapter directory is damaged") from None
    if not base:
        raise BadInputError(
            f"{config} names no base_model_name_or_path; cannot tell which model the adapter belongs to"
        )
    return base


def check_model_path(name_or_path: str) -> None:
    """Fail early, with a useful message, on paths that cannot be a model."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if adapter_base(name_or_path):
            return
        if not (path / "config.json").is_file():
            raise BadInputError(
                f"{name_or_path} is not a model directory (no config.json in it); "
                "pass a directory written by save_pretrained, a peft adapter directory, or a hub id"
            )
        return
    if path.exists():
        raise BadInputError(f"{name_or_path} is a file; --model takes a model directory or a hub id")
    # A hub id is `name` or `org/name`; anything else that does not exist is a mistyped path.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise BadInputError(f"model path {name_or_path} does not exist; check the path, or pass a hub id")
    check_hub_reachable(name_or_path, "model", cached=model_cached(name_or_path))


def load_model(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    placement: Placement | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `(model, tokenizer)` in eval mode on the resolved device and dtype, or, with a
    `placement` that names a device map, dispatched over the GPUs, CPU memory and disk by
    accelerate. A peft adapter directory is loaded on the base model its adapter_config.json
    names and merged into it."""
    check_model_path(name_or_path)
    base = adapter_base(name_or_path)
    if base is not None:
        return _load_adapter(
            name_or_path, base, dtype=dtype, device=device, trust_remote_code=trust_remote_code, placement=placement
        )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    common = {"trust_remote_code": trust_remote_code, "revision": revision}
    tokenizer = load_tokenizer(name_or_path, **common)
    # No device map on CPU: Trainer then moves a model it trains to its own device.
    where: dict[str, Any] = {"device_map": None if torch_device.type == "cpu" else str(torch_device)}
    if placement is not None and placement.device_map is not None:
        where = {
            "device_map": placement.device_map,
            "max_memory": placement.memory_limits(),
            "offload_folder": placement.offload_folder or tempfile.mkdtemp(prefix="llmkit-offload-"),
        }
    with loading_errors(name_or_path, trust_remote_code):
        model, loading_info = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=torch_dtype, output_loading_info=True, **where, **common
        )
    check_loaded_weights(name_or_path, loading_info)
    set_pad_token(model, tokenizer)
    model.eval()
    return model, tokenizer


def check_loaded_weights(name_or_path: str, loading_info: dict[str, Any]) -> None:
    """Refuse a checkpoint whose weights do not fit its architecture. transformers fills a missing
    weight with random values (and only logs it), which would make every result meaningless."""
    for kind, what in (
        ("missing_keys", "misses"),
        ("mismatched_keys", "has wrongly shaped"),
        ("unexpected_keys", "has unexpected"),
    ):
        names = sorted(str(name if isinstance(name, str) else name[0]) for name in loading_info.get(kind) or ())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise BadInputError(
                f"cannot load model {name_or_path!r}: its checkpoint {what} weights ({shown}); "
                "the checkpoint is damaged or belongs to another architecture"
            )


def _load_adapter(path: str, base: str, **options: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from peft import PeftModel

    if adapter_base(base) is not None:
        raise BadInputError(f"{path}: its base {base} is itself an adapter; merge it first")
    model, tokenizer = load_model(base, **options)
    try:
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        raise BadInputError(f"cannot load adapter {path} on {base}: {first_line(err)}") from err
    if any(Path(path, name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = load_tokenizer(path, trust_remote_code=options.get("trust_remote_code", False))
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
    except SafetensorError as err:
        raise BadInputError(
            f"cannot load model {name_or_path!r}: a weights file is damaged or incomplete ({first_line(err)})"
        ) from err
    except (OSError, ValueError, KeyError) as err:
        hint = "" if trust_remote_code else " (if it needs custom code, add --trust-remote-code)"
        raise BadInputError(f"cannot load model {name_or_path!r}: {first_line(err)}{hint}") from err


def context_length(model: PreTrainedModel) -> int | None:
    """The most tokens the model has positions for (`max_position_embeddings`, GPT-2's
    `n_positions`), or None when its config names no limit."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def check_context(limit: int | None, lengths: Sequence[int], new_tokens: int = 0) -> None:
    """Refuse input that does not fit a model's context of `limit` tokens (None: no limit): the
    longest of `lengths` (token counts) plus `new_tokens` to generate. Past it, position
    embeddings run out (an IndexError deep in the model) or generation runs on without bound."""
    longest = max(lengths, default=0)
    if limit is None or longest + new_tokens <= limit:
        return
    if new_tokens:
        raise BadInputError(
            f"the longest prompt has {longest} tokens and --max-new-tokens asks for {new_tokens} more, "
            f"beyond the model's context of {limit} tokens; shorten the prompts or lower --max-new-tokens "
            f"(at most {max(limit - longest, 0)})"
        )
    raise BadInputError(
        f"the longest input has {longest} tokens, beyond the model's context of {limit} tokens; shorten it"
    )


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short digest that tells models apart: every parameter's name, shape and dtype, and an
    evenly strided sample of about 4096 of its values. Any fine-tune or dense edit (a rank-one
    update changes every entry) changes it, while a 7B model is fingerprinted in a second rather
    than hashed whole. Not a tamper check."""
    sha = hashlib.sha256(model.config.model_type.encode())
    for name, tensor in state_tensors(model):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].cpu().contiguous()
        sha.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        sha.update(sample.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:16]


# ---- models dispatched by accelerate (a device map): their devices, and weights kept offloaded ----


def module_device(module: torch.nn.Module) -> torch.device:
    """Where `module` computes: its accelerate hook's execution device (its weights may wait on
    the CPU or on disk, as meta tensors), else the device of its first parameter."""
    execution = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if execution is not None:
        return torch.device(execution)
    return next(module.parameters()).device


def input_device(model: PreTrainedModel) -> torch.device:
    """Where a model takes its input ids: its embedding's device (`model.device` is the meta
    device when the embedding is offloaded)."""
    device = model.device
    return module_device(model.get_input_embeddings()) if device.type == "meta" else device


@contextmanager
def materialized(module: torch.nn.Module, *, write: bool = False) -> Iterator[None]:
    """`module`'s own parameters real inside the block, on its execution device; for a module whose
    weights accelerate offloaded, loaded from where it keeps them, and with `write`, what the
    block changed written back there (into the offload loader's in-memory state, which it reads
    before the disk), so that later forward passes and `save_pretrained` see the edit. An
    ordinary module is left as it is."""
    from accelerate.utils import align_module_device, has_offloaded_params

    if not has_offloaded_params(module):
        yield
        return
    with align_module_device(module):
        yield
        if write:
            weights = module._hf_hook.weights_map
            store = getattr(weights.dataset, "state_dict", weights.dataset)
            for name, parameter in module.named_parameters(recurse=False):
                store[weights.prefix + name] = parameter.detach().to("cpu", copy=True)


def state_tensors(model: PreTrainedModel) -> Iterator[tuple[str, torch.Tensor]]:
    """`model.state_dict()`'s items, with the tensors accelerate offloaded (meta in the state dict)
    read from where it keeps them, one at a time."""
    for name, tensor in model.state_dict().items():
        if tensor.device.type == "meta":
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner)
            with materialized(module):
                tensor = getattr(module, leaf).detach().cpu()
        yield name, tensor


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
