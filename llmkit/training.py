"""The one place that builds a transformers Trainer for llmkit's training commands."""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, default_data_collator
from transformers.trainer_callback import PrinterCallback


class _ReportProgress(TrainerCallback):
    """Forwards the step count to a `progress(done, total)` callable (the CLI draws the bar)."""

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        self.progress(state.global_step, state.max_steps)


def build_trainer(
    model: PreTrainedModel,
    train_dataset: Dataset,
    args: TrainingArguments,
    *,
    data_collator: Callable | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Trainer:
    """A Trainer with llmkit's defaults: pre-padded examples, progress reported to the caller
    instead of tqdm. `accelerate launch` / `torchrun` scale it out unchanged."""
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator or default_data_collator,
        callbacks=[_ReportProgress(progress)] if progress else None,
    )
    # With tqdm off, Trainer prints every log dict to stdout; the library must not print.
    trainer.remove_callback(PrinterCallback)
    return trainer
