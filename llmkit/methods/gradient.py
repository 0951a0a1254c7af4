"""Gradient unlearning baselines, each a transformers Trainer that overrides one method, `compute_loss`.

With forget data D_f, retain data D_r, the model π_θ and the frozen reference π_ref (the model
before unlearning), and NLL the mean token negative log-likelihood of the answer tokens:

    GA        L = −NLL_f                                                    (gradient ascent)
    GradDiff  L = −NLL_f + α·NLL_r                                          (gradient difference)
    NPO       L = −(2/β)·E_f[log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))] [+ α·NLL_r]
    SimNPO    L = −(2/β)·E_f[log σ(−(β/|y|)·log π_θ(y|x) − γ)]         [+ α·NLL_r]
    KL        L = −NLL_f + α·E_r[KL(π_ref ‖ π_θ)] per retain answer token
    RT        L = NLL of the forget questions answered with refusals     (rejection tuning)
    DPO       TRL's DPO loss, the refusal y_w preferred over the true answer y_l   [+ α·NLL_r]
              −E log σ(β·(log π_θ/π_ref(y_w|x) − log π_θ/π_ref(y_l|x)))

log π(y|x) is the answer's summed log-probability (NPO, Zhang et al. 2024; SimNPO, Fan et al.
2024, normalises by the answer length |y| and drops the reference). SimNPO's margin γ sits outside
β here, σ(−β·log π/|y| − γ); OpenUnlearning and the official SimNPO code put a δ inside it,
σ(β·(NLL/|y| − δ)) with NLL = −log π(y|x), so γ = β·δ. DPO's loss is TRL's −log σ(βΔ);
OpenUnlearning's has a 2/β factor in front. NPO, SimNPO and DPO add the retain term only when
retain data is given, as OpenUnlearning's do. Deliberate differences from
the code the references describe: KL is a true KL on retain answer tokens (RESTOR's `KL_FT` is a
cross-entropy, which differs by the entropy of π_θ, and OpenUnlearning's averages over padding);
NPO's log-ratio is per sequence, as in the paper (RESTOR's takes the ratio of batch means).

The reference is kept once and frozen: a copy of the model, or, when the model is a LoRA
(peft) model, the base model itself with the adapter disabled — no second copy in memory.

Data: records with `text` (the loss covers every token) or `prompt` + `answer` (the loss covers
the answer tokens only; prompt and " " + answer are tokenized jointly, as every llmkit scorer does),
encoded and padded by `llmkit.training` (`encode_records`, `PadCollator`).
Each forget example carries ⌈R/F⌉ (at most 8) retain examples, dealt from a seeded shuffle.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from llmkit.data import check_records
from llmkit.errors import BadInputError
from llmkit.methods import task_vector
from llmkit.methods.configs import LOSSES as LOSSES  # re-exported
from llmkit.methods.configs import METHODS, QUESTIONS_ONLY, RETAIN_USE, GradientConfig
from llmkit.training import (
    IGNORE,
    PadCollator,
    TrainingBudget,
    build_trainer,
    encode_records,
    train,
    training_arguments,
)

MAX_RETAIN_PER_FORGET = 8
REFUSALS_FILE = Path(__file__).with_name("refusals.txt")
"""ORT's 99 "I don't know" answers (generation/idontknow.jsonl; MIT, © 2025 Xiaotian Ye)."""


# ---- data ---------------------------------------------------------------------------------------


def check_request(
    method: str,
    forget: Sequence[Mapping[str, Any]],
    retain: Sequence[Mapping[str, Any]] | None,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
) -> None:
    """The data and settings suit `method`; one line naming the problem otherwise."""
    if method not in METHODS:
        raise BadInputError(f"unknown unlearning method {method!r}; choose one of {', '.join(METHODS)}")
    if beta <= 0:
        raise BadInputError(f"--beta must be positive, got {beta}")
    if alpha < 0:
        raise BadInputError(f"--alpha must be non-negative, got {alpha}")
    check_records(forget, "the forget set", qa_only=method in QUESTIONS_ONLY)
    use = RETAIN_USE.get(method)
    if retain is None and use == "required":
        raise BadInputError(f"{method} needs retain data (what to keep); pass --retain")
    if retain is not None and use is None:
        raise BadInputError(f"{method} uses no retain data; drop --retain (graddiff, kl, npo, simnpo and dpo use one)")
    if retain is not None:
        check_records(retain, "the retain set")


def read_refusals() -> list[str]:
    return [line.strip() for line in REFUSALS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def refusal_records(
    forget: Sequence[Mapping[str, Any]], refusals: Sequence[str], end: str = ""
) -> list[dict[str, str]]:
    """RT's data: each forget question answered with a refusal, cycled in order, then `end` (the
    EOS token, so that generation stops after the refusal)."""
    return [{"prompt": r["prompt"], "answer": refusals[i % len(refusals)] + end} for i, r in enumerate(forget)]


def preference_records(forget: Sequence[Mapping[str, Any]], refusals: Sequence[str]) -> list[dict[str, str]]:
    """DPO's pairs: the refusal chosen over the true answer."""
    return [
        {"prompt": r["prompt"], "chosen": " " + refusals[i % len(refusals)], "rejected": " " + r["answer"].strip()}
        for i, r in enumerate(forget)
    ]


def with_retain(
    rows: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    retain: Sequence[Mapping[str, Any]] | None,
    seed: int,
) -> Dataset:
    """`rows` as a Dataset, each carrying retain examples (`retain_input_ids`, `retain_labels`:
    lists of k = ⌈R/F⌉ examples, at most MAX_RETAIN_PER_FORGET) dealt round robin from a seeded
    shuffle, so every retain example is trained on when R ≤ 8F."""
    if retain:
        retained = encode_records(tokenizer, retain)
        random.Random(seed).shuffle(retained)
        per_row = min(MAX_RETAIN_PER_FORGET, -(-len(retained) // len(rows)))
        for i, row in enumerate(rows):
            pairs = [retained[(i * per_row + j) % len(retained)] for j in range(per_row)]
            row["retain_input_ids"] = [p["input_ids"] for p in pairs]
            row["retain_labels"] = [p["labels"] for p in pairs]
    return Dataset.from_list(rows)


def unlearning_dataset(
    tokenizer: PreTrainedTokenizerBase,
    forget: Sequence[Mapping[str, Any]],
    retain: Sequence[Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> Dataset:
    """One tokenized row per forget example, with its retain examples."""
    return with_retain(encode_records(tokenizer, forget), tokenizer, retain, seed)


# ---- losses -------------------------------------------------------------------------------------


def answer_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed log-probability of its labelled tokens, and how many there are."""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * mask).sum(-1), mask.sum(-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all labelled tokens of the batch (HF's `outputs.loss`)."""
    summed, counts = answer_log_probs(logits, labels)
    return -summed.sum() / counts.sum().clamp(min=1)


def npo_loss(log_prob: torch.Tensor, reference_log_prob: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))."""
    return -(2 / beta) * F.logsigmoid(-beta * (log_prob - reference_log_prob)).mean()


def simnpo_loss(log_prob: torch.Tensor, length: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """−(2/β)·mean log σ(−(β/|y|)·log π_θ(y|x) − γ); γ sits outside β (OpenUnlearning's δ = γ/β)."""
    return -(2 / beta) * F.logsigmoid(-beta * log_prob / length.clamp(min=1) - gamma).mean()


def reference_kl(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) of the next-token distributions, averaged over the labelled positions."""
    mask = labels[:, 1:] != IGNORE
    log_p = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    log_ref = torch.log_softmax(reference_logits[:, :-1].float(), dim=-1)
    per_position = (log_ref.exp() * (log_ref - log_p)).sum(-1)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


# ---- the trainer ----------------------------------------------------------------------------------


def frozen_reference(model: PreTrainedModel | PeftModel) -> PreTrainedModel | None:
    """The frozen π_ref: None for a LoRA model (its base with the adapter disabled is π_ref),
    otherwise a copy of the model as it is now."""
    if isinstance(model, PeftModel):
        return None
    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


class UnlearningTrainer(Trainer):
    """Trainer whose loss is one of `LOSSES`; everything else is transformers' own."""

    def __init__(self, *args: Any, unlearning: GradientConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unlearning = unlearning
        self.reference = frozen_reference(self.model) if unlearning.loss in ("npo", "kl") else None
        if self.reference is not None:
            self.reference.to(self.args.device)

    def reference_logits(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            if self.reference is not None:
                return self.reference(input_ids=input_ids, attention_mask=attention_mask).logits
            peft_model = self.accelerator.unwrap_model(model)
            with peft_model.disable_adapter():
                return peft_model(input_ids=input_ids, attention_mask=attention_mask).logits

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        method, config = self.unlearning.loss, self.unlearning
        forget = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        labels = inputs["labels"]
        if method == "sft":
            loss = mean_nll(forget.logits, labels)
        elif method in ("ga", "graddiff", "kl"):
            loss = -mean_nll(forget.logits, labels)
        elif method == "npo":
            log_prob, _ = answer_log_probs(forget.logits, labels)
            reference_log_prob, _ = answer_log_probs(
                self.reference_logits(model, inputs["input_ids"], inputs["attention_mask"]), labels
            )
            loss = npo_loss(log_prob, reference_log_prob, config.beta)
        else:
            log_prob, length = answer_log_probs(forget.logits, labels)
            loss = simnpo_loss(log_prob, length, config.beta, config.gamma)
        if "retain_input_ids" in inputs and method == "kl":
            retain_ids, retain_mask = inputs["retain_input_ids"], inputs["retain_attention_mask"]
            retain = model(input_ids=retain_ids, attention_mask=retain_mask)
            reference = self.reference_logits(model, retain_ids, retain_mask)
            loss = loss + config.alpha * reference_kl(retain.logits, reference, inputs["retain_labels"])
        elif "retain_input_ids" in inputs:
            loss = loss + config.alpha * retain_nll(model, inputs)
        return (loss, forget) if return_outputs else loss


def retain_nll(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    retain = model(input_ids=inputs["retain_input_ids"], attention_mask=inputs["retain_attention_mask"])
    return mean_nll(retain.logits, inputs["retain_labels"])


def retain_dpo_trainer() -> type[Trainer]:
    """TRL's DPOTrainer with OpenUnlearning's retain term: L = L_DPO + α·NLL_r when the batch
    carries retain examples. (A factory, so TRL is imported only when DPO is asked for.)"""
    from trl import DPOTrainer

    class RetainDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, alpha: float = 1.0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.alpha = alpha

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            retain = {k: inputs.pop(k) for k in [k for k in inputs if k.startswith("retain_")]}
            loss = super().compute_loss(model, inputs, return_outputs=return_outputs)
            if not retain:
                return loss
            if return_outputs:
                return loss[0] + self.alpha * retain_nll(model, retain), loss[1]
            return loss + self.alpha * retain_nll(model, retain)

    return RetainDPOTrainer


# ---- a whole run --------------------------------------------------------------------------------


def build_unlearning_trainer(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    method: str,
    forget: Sequence[Mapping[str, Any]],
    retain: Sequence[Mapping[str, Any]] | None,
    checkpoint_dir: str | Path,
    budget: TrainingBudget,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    gamma: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> Trainer:
    """The trainer for `method` (not yet trained)."""
    check_request(method, forget, retain, alpha=alpha, beta=beta)
    if method == "dpo":
        from trl import DPOConfig
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        args = training_arguments(checkpoint_dir, budget, weights=model.dtype, args_class=DPOConfig, beta=beta)
        collator = PadCollator(tokenizer.pad_token_id, DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id))
        return build_trainer(
            model,
            with_retain(preference_records(forget, read_refusals()), tokenizer, retain, budget.seed),
            args,
            trainer_class=retain_dpo_trainer(),
            data_collator=collator,
            progress=progress,
            processing_class=tokenizer,
            ref_model=frozen_reference(model),
            alpha=alpha,
        )
    loss = {"rt": "sft", "task-vector": "sft"}.get(method, method)
    data = refusal_records(forget, read_refusals(), tokenizer.eos_token or "") if method == "rt" else forget
    return build_trainer(
        model,
        unlearning_dataset(tokenizer, data, retain, budget.seed),
        training_arguments(checkpoint_dir, budget, weights=model.dtype),
        trainer_class=UnlearningTrainer,
        data_collator=PadCollator(tokenizer.pad_token_id),
        progress=progress,
        unlearning=GradientConfig(loss, alpha=alpha, beta=beta, gamma=gamma),
    )


def unlearn(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    method: str,
    forget: Sequence[Mapping[str, Any]],
    retain: Sequence[Mapping[str, Any]] | None,
    checkpoint_dir: str | Path,
    budget: TrainingBudget,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    gamma: float = 0.0,
    run: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Trainer:
    """Unlearn `forget` with `method`, training `model` in place (task vector: then negating what
    it learned). Resumes from `checkpoint_dir` when it holds checkpoints of this same `run`.
    Returns the trainer; its model is the unlearned one."""
    original = task_vector.snapshot(model) if method == "task-vector" else None
    trainer = build_unlearning_trainer(
        model,
        tokenizer,
        method,
        forget,
        retain,
        checkpoint_dir,
        budget,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        progress=progress,
    )
    train(trainer, run or {"method": method})
    if method == "task-vector":
        task_vector.negate(model, original, alpha)
    return trainer
