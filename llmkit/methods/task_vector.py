"""Task-vector negation (Ilharco et al. 2023, "Editing Models with Task Arithmetic") for unlearning:
fine-tune θ on the forget data to θ_ft, then step the other way,

    θ_unlearned = θ − α·(θ_ft − θ).

For a LoRA model the task vector is the adapter itself, ΔW = s·B·A, so negating it is scaling
B by −α: the result is again an ordinary adapter, loaded like any other.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import PreTrainedModel


def snapshot(model: PreTrainedModel | PeftModel) -> dict[str, torch.Tensor] | None:
    """θ before fine-tuning: copies of the trainable parameters (None for LoRA: the base stays θ)."""
    if isinstance(model, PeftModel):
        return None
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def negate(model: PreTrainedModel | PeftModel, original: dict[str, torch.Tensor] | None, alpha: float) -> None:
    """Replace the fine-tuned θ_ft by θ − α·(θ_ft − θ), in place."""
    if isinstance(model, PeftModel):
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(-alpha)
        return
    for name, parameter in model.named_parameters():
        if name in original:
            before = original[name].to(parameter.device)
            parameter.copy_(before - alpha * (parameter - before))
