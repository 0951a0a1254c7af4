"""The one place that builds a transformers Trainer for llmkit's training commands: its arguments,
LoRA through peft, checkpoints that a run resumes from, and the trained model's output directory.

Everything trains through `build_trainer`, so `accelerate launch` and `torchrun` scale any command
out unchanged: Trainer places the model (one GPU per process, or the CPU with gloo) and shards
the batches; only the main process writes the output (`is_main_process`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers import default_data_collator
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from llmkit.errors import BadInputError, first_line

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_FILE = "llmkit_run.json"
LOCK_FILE = "llmkit.lock"


class _ReportProgress(TrainerCallback):
    """Forwards the step count to a `progress(done, total)` callable (the CLI draws the bar)."""

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        self.progress(state.global_step, state.max_steps)


class _NoFinalCheckpoint(TrainerCallback):
    """Trainer also checkpoints the last step (model and optimizer state); llmkit writes the
    trained model itself and drops the checkpoints, so that save is skipped unless the step is
    a regular `save_steps` one."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and state.global_step % args.save_steps:
            control.should_save = False


class TrainingDiverged(BadInputError):
    """The loss or the weights became NaN or infinite: the settings (most often the learning
    rate) make this run diverge, so it writes no model and keeps no checkpoints."""


class _StopOnDivergence(TrainerCallback):
    """Stops a run at the first logged loss that is not finite (every step is logged)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged: the loss became {loss} at step {state.global_step}; lower --lr")


def check_finite_weights(model: torch.nn.Module) -> None:
    """Refuse trained weights that hold NaN or infinity (a finite loss can hide them: with
    infinite weights the logits, and so the loss, can come out as anything)."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingDiverged(f"training diverged: the trained weight {name} holds NaN or infinity; lower --lr")


class EpochEndCallback(TrainerCallback):
    """Runs `epoch_end` after the last optimizer step of each epoch, before that step's checkpoint
    is written (Trainer's own `on_epoch_end` comes after it), so that a run resumed from a
    checkpoint at an epoch's end has the epoch-end work done."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if abs(state.epoch - round(state.epoch)) < 1e-6:
            self.epoch_end(args, state, model)

    def epoch_end(self, args, state, model) -> None:
        raise NotImplementedError


class EpochEvaluation(EpochEndCallback):
    """Calls `evaluate(model)` after every epoch (on the main process, the model in eval mode) and
    logs what it returns, with the epoch, into the trainer's log history (kept in checkpoints)."""

    def __init__(self, evaluate: Callable[[PreTrainedModel], dict[str, Any]]) -> None:
        self.evaluate = evaluate

    def epoch_end(self, args, state, model) -> None:
        if not state.is_world_process_zero:
            return
        was_training = model.training
        model.eval()
        metrics = self.evaluate(model)
        model.train(was_training)
        state.log_history.append({"epoch": completed_epochs(state), "step": state.global_step, "evaluation": metrics})


def completed_epochs(state) -> int:
    """Whole epochs done (Trainer's `state.epoch` is fractional mid-epoch, and after a resume)."""
    return int(state.epoch + 1e-6)


def training_dtype(dtype: str) -> str:
    """`auto` for training: bfloat16 on a GPU that has it, else float32 (float16 weights without a
    loss scaler underflow)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def training_arguments(
    checkpoint_dir: str | Path,
    *,
    epochs: float = 1.0,
    learning_rate: float = 1e-5,
    batch_size: int = 8,
    max_steps: int | None = None,
    seed: int = 0,
    save_steps: int = 100,
    args_class: type[TrainingArguments] = TrainingArguments,
    **extra: Any,
) -> TrainingArguments:
    """TrainingArguments with llmkit's defaults: a constant learning rate, no weight decay, one
    checkpoint kept (the newest: what a resumed run needs), logging every step, no tqdm and no
    reporting integrations, and every dataset column passed to the loss (methods read their own)."""
    for flag, value in (("--epochs", epochs), ("--lr", learning_rate), ("--batch-size", batch_size)):
        if value <= 0:
            raise BadInputError(f"{flag} must be positive, got {value}")
    if max_steps is not None and max_steps < 1:
        raise BadInputError(f"--max-steps must be at least 1, got {max_steps}")
    if save_steps < 1:
        raise BadInputError(f"--save-steps must be at least 1, got {save_steps}")
    return args_class(
        output_dir=str(checkpoint_dir),
        num_train_epochs=epochs,
        max_steps=max_steps or -1,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        bf16=False,
        fp16=False,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without an accelerator, say so: only then does Trainer run torchrun's processes as DDP over gloo.
        use_cpu=not torch.cuda.is_available() and not torch.backends.mps.is_available(),
        **extra,
    )


def add_lora(
    model: PreTrainedModel, rank: int = 8, targets: Sequence[str] | None = None, alpha: float | None = None, seed: int = 0
) -> PeftModel:
    """Wrap `model` in a LoRA adapter (rank r, scale α/r with α = 2r by default, as LLaMA-Factory);
    only the adapter trains. `targets` None takes peft's per-family default (q_proj, v_proj on Llama).
    The adapter's random initialisation is seeded, so a run does not depend on what drew from the
    global generator before it."""
    if rank < 1:
        raise BadInputError(f"--lora-rank must be at least 1, got {rank}")
    config = LoraConfig(
        r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0,
        target_modules=list(targets) if targets else None, task_type="CAUSAL_LM",
    )
    set_seed(seed)
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise BadInputError(
            f"--lora-target: {first_line(err)}; this model's linear modules are {', '.join(linear)}"
        ) from None


def build_trainer(
    model: PreTrainedModel,
    train_dataset: Dataset,
    args: TrainingArguments,
    *,
    trainer_class: type[Trainer] = Trainer,
    data_collator: Callable | None = None,
    progress: Callable[[int, int], None] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    **trainer_kwargs: Any,
) -> Trainer:
    """A `trainer_class` (Trainer, a subclass overriding `compute_loss`, or one of TRL's) with
    llmkit's defaults: progress reported to the caller instead of tqdm, nothing printed; the
    method's `callbacks` run in order, before the progress report."""
    callbacks = [_NoFinalCheckpoint(), _StopOnDivergence(), *callbacks]
    if progress:
        callbacks.append(_ReportProgress(progress))
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator or default_data_collator,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    # With tqdm off, Trainer prints every log dict to stdout; the library must not print.
    trainer.remove_callback(PrinterCallback)
    return trainer


def check_checkpoints(checkpoint_dir: Path, run: Mapping[str, Any]) -> str | None:
    """The checkpoint to resume from, if `checkpoint_dir` holds one of this same run (`run` is its
    configuration); checkpoints of another run are bad input, not silently resumed."""
    if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise BadInputError(f"checkpoint directory {checkpoint_dir} is a file; pass another --checkpoint-dir")
    record = checkpoint_dir / RUN_FILE
    if not record.is_file():
        if checkpoint_dir.is_dir() and any(checkpoint_dir.iterdir()):
            raise BadInputError(f"{checkpoint_dir} exists and is not an llmkit checkpoint directory; choose another --checkpoint-dir")
        return None
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise BadInputError(f"{record} is damaged (not valid JSON); delete {checkpoint_dir} to start over") from None
    expected = json.loads(json.dumps(run, default=str))
    if saved != expected:
        changed = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
        raise BadInputError(
            f"{checkpoint_dir} holds checkpoints of a different run (changed: {', '.join(changed)}); "
            "delete it to start over, or pass another --checkpoint-dir"
        )
    return get_last_checkpoint(str(checkpoint_dir))


def train(trainer: Trainer, run: Mapping[str, Any]) -> str | None:
    """Train, resuming from the newest checkpoint of this same run if there is one; returns it."""
    checkpoint_dir = Path(trainer.args.output_dir)
    resume_from = check_checkpoints(checkpoint_dir, run)
    created = not checkpoint_dir.exists()
    # Every process has read the directory before the first one records this run in it.
    trainer.accelerator.wait_for_everyone()
    with checkpoint_lock(checkpoint_dir, trainer.is_world_process_zero()):
        if trainer.is_world_process_zero():
            (checkpoint_dir / RUN_FILE).write_text(json.dumps(run, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            trainer.train(resume_from_checkpoint=resume_from)
            check_finite_weights(trainer.model)
        except BadInputError as err:
            # A diverged run's checkpoints are of no use; a run that failed on its input leaves
            # the directory as it found it.
            if trainer.is_world_process_zero() and (created or isinstance(err, TrainingDiverged)):
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
            raise
    return resume_from


@contextmanager
def checkpoint_lock(checkpoint_dir: Path, main: bool) -> Iterator[None]:
    """Hold an exclusive lock on `checkpoint_dir` (created if need be) for the run, so that a
    second run into the same directory (the same --out) fails at once instead of sharing it. The
    main process holds it; where the OS has no `fcntl` (Windows) there is no lock."""
    if not main or fcntl is None:
        yield
        return
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with open(checkpoint_dir / LOCK_FILE, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInputError(
                f"another run is training into {checkpoint_dir} (the same --out); wait for it or choose another --out"
            ) from None
        yield


def leave_process_group(trainer: Trainer) -> None:
    """End a finished run's part in torchrun's process group: drop the DDP wrapper first, then the
    group. In the other order, or left to interpreter exit, the group's last reference goes with
    DDP's reducer while the GIL is held, and gloo's worker thread, still freeing a finished
    collective's tensors, waits for that GIL: a deadlock (PyTorch issue 56297), or SIGABRT at
    exit. A single process has no group, and this only frees references."""
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()
    trainer.accelerator.end_training()


def save_trained(
    model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, directory: Path, base_model: str
) -> None:
    """Write the trained model as an HF model directory, or a LoRA model as a peft adapter whose
    `base_model_name_or_path` names the base (absolute when it is a local directory), so that
    every `--model` loads the adapter on its base."""
    if isinstance(model, PeftModel):
        local = Path(base_model).expanduser()
        model.peft_config["default"].base_model_name_or_path = str(local.resolve()) if local.is_dir() else base_model
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def remove_checkpoints(trainer: Trainer) -> None:
    """Drop the checkpoints of a run that finished (its output now holds the result)."""
    if trainer.is_world_process_zero():
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
