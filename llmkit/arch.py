"""The architecture map: where each family keeps the modules that llmkit's methods touch.

Points (DESIGN.md, "Architecture map"):

- ``layers``: the decoder blocks;
- ``mlp_pre``: the MLP pre-activation, i.e. the output of the first MLP projection (the gate
  projection in gated MLPs), one value per neuron, shape (..., m);
- ``mlp_key``: the input of the MLP output projection, the "key" of the key-value view of the
  MLP, shape (..., m);
- ``mlp_out_weight``: the MLP output projection's matrix, always returned as (d, m);
- ``resid_out``: the block output, i.e. the residual stream after the block, shape (..., d).

GPT-2 builds its projections from ``transformers.pytorch_utils.Conv1D``, whose weight is stored
(in_features, out_features), the transpose of ``nn.Linear``. That is handled here and only here:
`mlp_out_weight` returns a (d, m) view of the parameter for every family, so in-place edits on it
edit the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from llmkit.errors import BadInputError

POINTS = ("mlp_pre", "mlp_key", "resid_out")


@dataclass(frozen=True)
class ArchSpec:
    """Module paths for one family: `layers` from the causal-LM root, the others within a block."""

    layers: str
    mlp_in: str
    mlp_out: str


_LLAMA_LIKE = ArchSpec(layers="model.layers", mlp_in="mlp.gate_proj", mlp_out="mlp.down_proj")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gpt_neox": ArchSpec(layers="gpt_neox.layers", mlp_in="mlp.dense_h_to_4h", mlp_out="mlp.dense_4h_to_h"),
    "gpt2": ArchSpec(layers="transformer.h", mlp_in="mlp.c_fc", mlp_out="mlp.c_proj"),
}


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper, or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def arch_spec(model: nn.Module) -> ArchSpec:
    """The map for this model's family, or a clear error naming the supported ones."""
    model_type = getattr(getattr(unwrap(model), "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise BadInputError(
            f"model family {model_type!r} is not supported by llmkit's hooks; "
            f"supported families: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks, in order."""
    return unwrap(model).get_submodule(arch_spec(model).layers)


def _layer(model: nn.Module, layer: int) -> nn.Module:
    layers = decoder_layers(model)
    if not -len(layers) <= layer < len(layers):
        raise BadInputError(f"layer {layer} does not exist; the model has layers 0..{len(layers) - 1}")
    return layers[layer]


def mlp_in_module(model: nn.Module, layer: int) -> nn.Module:
    """The MLP's first projection; its output is `mlp_pre`."""
    return _layer(model, layer).get_submodule(arch_spec(model).mlp_in)


def mlp_out_module(model: nn.Module, layer: int) -> nn.Module:
    """The MLP's output projection; its input is `mlp_key`, its weight `mlp_out_weight`."""
    return _layer(model, layer).get_submodule(arch_spec(model).mlp_out)


def block_module(model: nn.Module, layer: int) -> nn.Module:
    """The decoder block; its output is `resid_out`."""
    return _layer(model, layer)


def mlp_out_weight(model: nn.Module, layer: int) -> torch.Tensor:
    """The MLP output matrix as (d, m) for every family: a view, so in-place edits reach the model.

    Conv1D (GPT-2) stores it (m, d) and computes x @ W; nn.Linear stores (d, m) and computes x @ W.T.
    """
    module = mlp_out_module(model, layer)
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def module_path(model: nn.Module, point: str, layer: int | str = "{i}") -> str:
    """The dotted path, from the causal-LM root, of the module a point hooks."""
    spec = arch_spec(model)
    inner = {"mlp_pre": spec.mlp_in, "mlp_key": spec.mlp_out, "mlp_out_weight": spec.mlp_out}.get(point)
    block = f"{spec.layers}.{layer}"
    return block if inner is None else f"{block}.{inner}"


@dataclass(frozen=True)
class ArchSummary:
    """Sizes of a model, as `llmkit model inspect` shows them."""

    family: str
    num_layers: int
    d_model: int
    d_mlp: int
    vocab_size: int
    num_parameters: int


def summarize(model: nn.Module) -> ArchSummary:
    """Family, depth, widths (read off the modules, not the config) and parameter count."""
    base = unwrap(model)
    weight = mlp_out_weight(model, 0)
    return ArchSummary(
        family=base.config.model_type,
        num_layers=len(decoder_layers(model)),
        d_model=weight.shape[0],
        d_mlp=weight.shape[1],
        vocab_size=base.get_input_embeddings().weight.shape[0],
        num_parameters=sum(p.numel() for p in base.parameters()),
    )
