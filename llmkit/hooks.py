"""Capture and intervene on the architecture map's points, as context managers.

    with capture(model, "resid_out", layers=[0, 3], position="last") as acts:
        model(**batch)
    acts[3]          # (batch, d): block 3's output at each sequence's last real token

    with intervene(model, "mlp_pre", layers=[2], fn=lambda a, layer: a * keep_mask):
        model.generate(...)

A capture holds the activations of the most recent forward pass. Hooks are removed when the
context exits, also on exceptions, and the model is then exactly as before. Pass
`attention_mask` to the model by keyword: "last" positions are read from it, so left and right
padding both work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress

import torch
from torch import nn

from llmkit import arch
from llmkit.batching import last_token_index, length_sorted_batches, pad_batch, position_ids
from llmkit.errors import BadInputError
from llmkit.models import input_device

Activation = torch.Tensor
InterventionFn = Callable[[Activation, int], Activation]


def _check_point(point: str) -> None:
    if point not in arch.POINTS:
        raise BadInputError(f"unknown hook point {point!r}; choose one of {', '.join(arch.POINTS)}")


@contextmanager
def _hook_point(
    model: nn.Module, point: str, layer: int, fn: Callable[[Activation], Activation | None]
) -> Iterator[None]:
    """Call `fn` on the point's activation at `layer`; a tensor it returns replaces the activation."""
    if point == "mlp_key":

        def pre_hook(module, args):
            new = fn(args[0])
            return None if new is None else (new, *args[1:])

        handle = arch.mlp_out_module(model, layer).register_forward_pre_hook(pre_hook)
    else:
        module = arch.mlp_in_module(model, layer) if point == "mlp_pre" else arch.block_module(model, layer)

        def hook(module, args, output):
            # Blocks return a tensor in recent transformers and a tuple in older ones.
            hidden = output[0] if isinstance(output, tuple) else output
            new = fn(hidden)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class ForwardInputs:
    """What the model's most recent forward call was given: its token ids and attention mask
    (None where the call had none), for hooks whose work depends on the token they act on."""

    def __init__(self) -> None:
        self.input_ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.position_ids: torch.Tensor | None = None

    def __call__(self, module, args, kwargs):
        self.input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.mask = kwargs.get("attention_mask")
        self.position_ids = kwargs.get("position_ids")

    def positions(self, num_positions: int) -> torch.Tensor:
        """(batch, num_positions): each of the call's tokens' position among its row's real tokens,
        the same whatever the padding and also for cached decoding, where the mask covers the whole
        sequence. Without a mask (generate drops an all-ones one) the position ids the call was
        given; without either (right-padded scoring), positions count from 0."""
        if self.mask is not None:
            return position_ids(self.mask)[:, -num_positions:]
        if self.position_ids is not None:
            return self.position_ids[:, -num_positions:]
        rows = 1 if self.input_ids is None else self.input_ids.shape[0]
        return torch.arange(num_positions).expand(rows, num_positions)


@contextmanager
def track_inputs(model: nn.Module) -> Iterator[ForwardInputs]:
    """Keep a `ForwardInputs` up to date with each forward call of the model."""
    inputs = ForwardInputs()
    handle = arch.unwrap(model).register_forward_pre_hook(inputs, with_kwargs=True)
    try:
        yield inputs
    finally:
        handle.remove()


class StopForward(Exception):
    """Raised by a `capture(..., stop=True)` hook once the deepest requested layer is recorded."""


class Captured(dict):
    """layer -> activation of the most recent forward pass."""

    point: str
    position: str


@contextmanager
def capture(
    model: nn.Module, point: str, layers: Sequence[int], *, position: str = "all", stop: bool = False
) -> Iterator[Captured]:
    """Record `point` at `layers`: (batch, seq, dim) for position="all", (batch, dim) for "last"
    (each sequence's last real token). With `stop`, the forward pass ends as soon as the deepest
    of `layers` is recorded (baukit's `stop=True`): the layers above it and the LM head are never
    computed, so the model call must be the last statement of the `with` block."""
    _check_point(point)
    if position not in ("all", "last"):
        raise BadInputError(f"unknown position {position!r}; choose 'all' or 'last'")
    captured = Captured()
    captured.point, captured.position = point, position

    def recorder(layer: int) -> Callable[[Activation], None]:
        def record(activation: Activation) -> None:
            activation = activation.detach()
            if position == "last":
                rows = torch.arange(activation.shape[0], device=activation.device)
                if tracker.mask is None:
                    index = torch.full_like(rows, activation.shape[1] - 1)
                else:
                    index = last_token_index(tracker.mask, activation.shape[1]).to(activation.device)
                activation = activation[rows, index]
            captured[layer] = activation
            if stop and layer == max(layers):
                raise StopForward

        return record

    with ExitStack() as stack:
        tracker = stack.enter_context(track_inputs(model))
        for layer in layers:
            stack.enter_context(_hook_point(model, point, layer, recorder(layer)))
        with suppress(StopForward):
            yield captured


@contextmanager
def intervene(model: nn.Module, point: str, layers: Sequence[int], fn: InterventionFn) -> Iterator[None]:
    """Replace `point`'s activation at each of `layers` by `fn(activation, layer)` (same shape)."""
    _check_point(point)
    with ExitStack() as stack:
        for layer in layers:
            stack.enter_context(_hook_point(model, point, layer, lambda a, layer=layer: fn(a, layer)))
        yield


Pool = Callable[[Activation, torch.Tensor], Activation]
"""(batch, seq, d) hidden states and their (batch, seq) attention mask -> (batch, d)."""


@torch.inference_mode()
def pooled_states(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    layer: int,
    pad_token_id: int,
    pool: Pool,
    batch_size: int = 64,
) -> torch.Tensor:
    """(N, d) float32: `pool` of block `layer`'s output for each token-id sequence, from
    length-sorted, right-padded batches whose forward pass stops at the layer."""
    device = input_device(model)
    pooled = torch.empty(0, 0)
    for indices in length_sorted_batches([len(s) for s in sequences], batch_size):
        batch = pad_batch([sequences[i] for i in indices], pad_token_id, "right")
        with capture(model, "resid_out", [layer], stop=True) as captured:
            model(**{k: v.to(device) for k, v in batch.items()})
        rows = pool(captured[layer].float(), batch["attention_mask"].to(device)).cpu()
        if not pooled.numel():
            pooled = torch.empty(len(sequences), rows.shape[1])
        pooled[torch.as_tensor(indices)] = rows
    return pooled


def last_token(hidden: Activation, mask: torch.Tensor) -> Activation:
    """Each row's last real token (right padding)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(1) - 1]


def describe_points(model: nn.Module, tokenizer) -> list[dict[str, object]]:
    """The architecture map as `llmkit model inspect` reports it: per point, its module path, what
    is read there and its shape, the widths measured by one short forward pass at layer 0."""
    batch = tokenizer(["Hello world"], return_tensors="pt").to(input_device(model))
    with ExitStack() as stack:
        captured = {point: stack.enter_context(capture(model, point, [0])) for point in arch.POINTS}
        with torch.inference_mode():
            model(**batch)

    def activation(point: str, reads: str) -> dict[str, object]:
        shape = ["batch", "seq", captured[point][0].shape[-1]]
        return {"point": point, "module": arch.module_path(model, point), "reads": reads, "shape": shape}

    layers = len(arch.decoder_layers(model))
    return [
        {"point": "layers", "module": arch.arch_spec(model).layers, "reads": "decoder blocks", "shape": [layers]},
        activation("mlp_pre", "output"),
        activation("mlp_key", "input"),
        {
            "point": "mlp_out_weight",
            "module": arch.module_path(model, "mlp_out_weight") + ".weight",
            "reads": "weight as (d, m)",
            "shape": list(arch.mlp_out_weight(model, 0).shape),
        },
        activation("resid_out", "output"),
    ]
