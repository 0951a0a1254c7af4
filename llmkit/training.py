"""The one place that builds a transformers Trainer for llmkit's training commands: what a run
trains on (prompt/answer records or texts, encoded and padded), how much it trains (`TrainingBudget`),
its arguments, LoRA through peft, checkpoints that a run resumes from, what it reports
(`RunSummary`) and the trained model's output directory.

Everything trains through `build_trainer`, so `accelerate launch` and `torchrun` scale any command
out unchanged: Trainer places the model (one GPU per process, or the CPU with gloo) and shards
the batches; only the main process writes the output (`is_main_process`).

Supervised tuning on prompt/answer data (the loss on the answers only) is

    build_sft_trainer(model, tokenizer, encode_records(tokenizer, records), checkpoint_dir, budget)

and on whole texts `build_text_trainer`; a method with its own loss subclasses Trainer, overrides
`compute_loss`, and passes it to `build_trainer` with `PadCollator` (as `methods.gradient` does).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback

from llmkit.batching import pad_batch
from llmkit.configs import TrainingBudget
from llmkit.errors import BadInputError, first_line
from llmkit.generation import encode_prompts, tokenize_pairs
from llmkit.models import load_model, model_fingerprint, resolve_dtype
from llmkit.results import NAME_MAX, dumps_results, staged_directory

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_FILE = "llmkit_run.json"
LOCK_FILE = "llmkit.lock"
COMPLETE_FILE = "llmkit_complete"
"""Written into a checkpoint after everything else (Trainer's files, then the methods' own state)."""
IGNORE = -100
"""The label of a token the loss skips (PyTorch's and transformers' ignore index)."""


# ---- what a run trains on ----------------------------------------------------------------------


def encode_records(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[Mapping[str, Any]]
) -> list[dict[str, list[int]]]:
    """`input_ids` and `labels` per record: labels are the input ids, with the prompt of a
    question masked (IGNORE) so the loss covers its answer only. A record is a question (`prompt`
    and `answer`: prompt and " " + answer tokenized jointly, as every llmkit scorer does), a
    trajectory (`prompt` and `segments`, [text, trained] pairs each tokenized alone, as a rollout
    appends them: the loss covers the trained ones) or a passage (`text`: the loss covers every
    token)."""
    encoded: list[dict[str, list[int]] | None] = [None] * len(records)
    for i, record in enumerate(records):
        if "segments" in record:
            ids = encode_prompts(tokenizer, [record["prompt"]])[0]
            labels = [IGNORE] * len(ids)
            for text, trained in record["segments"]:
                segment = tokenizer(text, add_special_tokens=False)["input_ids"]
                ids, labels = ids + segment, labels + (segment if trained else [IGNORE] * len(segment))
            encoded[i] = {"input_ids": ids, "labels": labels}
    questions = [i for i, r in enumerate(records) if encoded[i] is None and "prompt" in r and "answer" in r]
    prompts = [records[i]["prompt"] for i in questions]
    pairs = tokenize_pairs(tokenizer, prompts, [" " + records[i]["answer"].strip() for i in questions])
    for i, (context, answer) in zip(questions, pairs):
        encoded[i] = {"input_ids": context + answer, "labels": [IGNORE] * len(context) + answer}
    passages = [i for i in range(len(records)) if encoded[i] is None]
    for i, ids in zip(passages, encode_prompts(tokenizer, [records[i]["text"] for i in passages])):
        encoded[i] = {"input_ids": ids, "labels": list(ids)}
    return encoded  # type: ignore[return-value]


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text as the model reads it, EOS-terminated (as pretraining documents are),
    cut to `max_length`."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [(ids + eos)[:max_length] for ids in encode_prompts(tokenizer, texts)]


class PadCollator:
    """Right-pads `input_ids`/`labels` to the longest in the batch (labels with IGNORE), adding
    the attention masks. Rows may also carry `retain_input_ids`/`retain_labels`, lists of examples
    (the gradient methods' retain term): those are padded alike, as `retain_`-prefixed tensors."""

    def __init__(self, pad_token_id: int, base_collator: Callable | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.base_collator = base_collator
        """Collates the rows' own fields instead (TRL's preference collator, for DPO)."""

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if self.base_collator is not None:
            batch = self.base_collator([{k: v for k, v in r.items() if not k.startswith("retain_")} for r in rows])
        else:
            batch = self._pad([r["input_ids"] for r in rows], [r["labels"] for r in rows], "")
        if "retain_input_ids" in rows[0]:
            ids = [example for r in rows for example in r["retain_input_ids"]]
            labels = [example for r in rows for example in r["retain_labels"]]
            batch.update(self._pad(ids, labels, "retain_"))
        return batch

    def _pad(
        self, ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], prefix: str
    ) -> dict[str, torch.Tensor]:
        padded = pad_batch(ids, self.pad_token_id, "right")
        return {
            f"{prefix}input_ids": padded["input_ids"],
            f"{prefix}attention_mask": padded["attention_mask"],
            f"{prefix}labels": pad_batch(labels, IGNORE, "right")["input_ids"],
        }


# ---- what a run reports (what it may spend, `TrainingBudget`, is in llmkit.configs) ----------------


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reports, after its settings, in train.json and unlearn.json: the
    fingerprint of the weights it started from, its optimizer steps and processes, the first and
    final logged training loss (None without a logged step), the seconds from loading the model
    to the trained one, and the checkpoint it resumed from."""

    original_fingerprint: str
    steps: int
    processes: int
    first_loss: float | None
    final_loss: float | None
    train_time_s: float
    resumed_from: str | None

    @classmethod
    def of(cls, trainer: Trainer, *, original_fingerprint: str, seconds: float, resumed_from: str | None) -> RunSummary:
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        return cls(
            original_fingerprint=original_fingerprint,
            steps=trainer.state.global_step,
            processes=trainer.args.world_size,
            first_loss=losses[0] if losses else None,
            final_loss=losses[-1] if losses else None,
            train_time_s=round(seconds, 2),
            resumed_from=resumed_from,
        )


class _ReportProgress(TrainerCallback):
    """Forwards the step count to a `progress(done, total)` callable (the CLI draws the bar)."""

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        self.progress = progress

    def on_step_end(self, args, state, control, **kwargs):
        self.progress(state.global_step, state.max_steps)


class _MarkCheckpointComplete(TrainerCallback):
    """Marks each checkpoint whole once every callback has saved into it, so that a run resumed
    after an interrupt that cut a save short resumes from the last whole checkpoint."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / COMPLETE_FILE).touch()


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


def epoch_losses(history: Sequence[Mapping[str, Any]]) -> list[float]:
    """The mean logged training loss of each epoch of a Trainer's `state.log_history`."""
    by_epoch: dict[int, list[float]] = {}
    for entry in history:
        if "loss" in entry:
            by_epoch.setdefault(int(entry["epoch"] - 1e-9), []).append(entry["loss"])
    return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


def training_dtype(dtype: str) -> str:
    """`auto` for training: bfloat16 on a GPU that has it, else float32 (float16 weights without a
    loss scaler underflow)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def mixed_precision(weights: torch.dtype) -> dict[str, bool]:
    """The Trainer's own precision flags for weights of this dtype: bf16 autocast for bfloat16
    weights, none for float32. Float16 weights are refused: they train only with a loss scaler
    over float32 master weights, which the Trainer's fp16 flag refuses on float16 weights."""
    if weights == torch.float16:
        raise BadInputError(
            "training in float16 underflows without float32 master weights; use --dtype bfloat16 or float32"
        )
    return {"bf16": weights == torch.bfloat16, "fp16": False}


def check_deepspeed_installed(budget: TrainingBudget) -> None:
    if budget.deepspeed is not None and importlib.util.find_spec("deepspeed") is None:
        raise BadInputError("--deepspeed needs DeepSpeed, which is not installed: pip install deepspeed")


def training_arguments(
    checkpoint_dir: str | Path,
    budget: TrainingBudget,
    *,
    weights: torch.dtype = torch.float32,
    args_class: type[TrainingArguments] = TrainingArguments,
    **extra: Any,
) -> TrainingArguments:
    """TrainingArguments for `budget` with llmkit's defaults: a constant learning rate, no weight
    decay, one checkpoint kept (the newest: what a resumed run needs), logging every step, no tqdm
    and no reporting integrations, and every dataset column passed to the loss (methods read their
    own); mixed precision follows the `weights` dtype (`mixed_precision`); gradient accumulation,
    gradient checkpointing and DeepSpeed as the budget asks. `extra` goes to `args_class` (TRL's
    configs take their method's settings)."""
    check_deepspeed_installed(budget)
    return args_class(
        output_dir=str(checkpoint_dir),
        num_train_epochs=budget.epochs,
        max_steps=budget.max_steps or -1,
        per_device_train_batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=budget.save_steps,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        seed=budget.seed,
        data_seed=budget.seed,
        **mixed_precision(weights),
        gradient_accumulation_steps=budget.gradient_accumulation_steps,
        gradient_checkpointing=budget.gradient_checkpointing,
        # Reentrant checkpointing needs inputs that require grad; the non-reentrant kind does not (PyTorch's advice).
        gradient_checkpointing_kwargs={"use_reentrant": False} if budget.gradient_checkpointing else None,
        deepspeed=budget.deepspeed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Without an accelerator, say so: only then does Trainer run torchrun's processes as DDP over gloo.
        use_cpu=not torch.cuda.is_available() and not torch.backends.mps.is_available(),
        **extra,
    )


def lora_settings(lora: bool, rank: int, targets: str | None) -> dict[str, Any] | None:
    """LoRA as a run records it: the rank and the adapted modules (`targets` comma-separated,
    None for peft's choice); None without LoRA."""
    if not lora:
        return None
    return {"rank": rank, "targets": [t.strip() for t in targets.split(",") if t.strip()] if targets else None}


def add_lora(
    model: PreTrainedModel,
    rank: int = 8,
    targets: Sequence[str] | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> PeftModel:
    """Wrap `model` in a LoRA adapter (rank r, scale α/r with α = 2r by default, as LLaMA-Factory);
    only the adapter trains. `targets` None takes peft's per-family default (q_proj, v_proj on Llama),
    ["all-linear"] every linear layer but the output head.
    The adapter's random initialisation is seeded, so a run does not depend on what drew from the
    global generator before it."""
    if rank < 1:
        raise BadInputError(f"--lora-rank must be at least 1, got {rank}")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=0.0,
        # peft's "all-linear" is a setting, not a module name (the paper recipes' "every linear layer").
        target_modules=("all-linear" if list(targets) == ["all-linear"] else list(targets)) if targets else None,
        task_type="CAUSAL_LM",
    )
    set_seed(seed)
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        )
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
    callbacks.append(_MarkCheckpointComplete())  # last: after every callback's own on_save
    if _takes_collator(trainer_class):  # GRPOTrainer collates its prompts itself
        trainer_kwargs["data_collator"] = data_collator or default_data_collator
    trainer = trainer_class(model=model, args=args, train_dataset=train_dataset, callbacks=callbacks, **trainer_kwargs)
    # With tqdm off, Trainer prints every log dict to stdout; the library must not print.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _takes_collator(trainer_class: type[Trainer]) -> bool:
    """Whether `trainer_class(...)` takes `data_collator`: the first `__init__` in its MRO that
    names its parameters (a subclass's `(*args, **kwargs)` passes them on) says."""
    for cls in trainer_class.__mro__:
        if "__init__" in vars(cls):
            parameters = inspect.signature(cls.__init__).parameters.values()
            if not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
                return any(p.name == "data_collator" for p in parameters)
    return True


def build_sft_trainer(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict[str, list[int]]],
    checkpoint_dir: str | Path,
    budget: TrainingBudget,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Trainer:
    """A plain Trainer of next-token loss, L = NLL of the labelled tokens, on `examples`
    (`input_ids` and `labels`: `encode_records`' for prompt/answer data). Not yet trained: pass it
    to `train`."""
    return build_trainer(
        model,
        Dataset.from_list(list(examples)),
        training_arguments(checkpoint_dir, budget, weights=model.dtype),
        data_collator=PadCollator(tokenizer.pad_token_id),
        progress=progress,
        callbacks=callbacks,
    )


def build_text_trainer(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    checkpoint_dir: str | Path,
    budget: TrainingBudget,
    *,
    max_length: int = 512,
    callbacks: Sequence[TrainerCallback] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Trainer:
    """`build_sft_trainer` on whole texts (`encode_texts`), the loss on every token: continued
    training (`train sft`, SeND's baseline; SeND adds its `SensitivityDropout` callback)."""
    examples = [{"input_ids": ids, "labels": ids} for ids in encode_texts(tokenizer, texts, max_length)]
    return build_sft_trainer(model, tokenizer, examples, checkpoint_dir, budget, callbacks=callbacks, progress=progress)


def check_checkpoints(checkpoint_dir: Path, run: Mapping[str, Any]) -> str | None:
    """The checkpoint to resume from, if `checkpoint_dir` holds one of this same run (`run` is its
    configuration); checkpoints of another run are bad input, not silently resumed."""
    if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise BadInputError(f"checkpoint directory {checkpoint_dir} is a file; pass another --checkpoint-dir")
    record = checkpoint_dir / RUN_FILE
    if not record.is_file():
        if checkpoint_dir.is_dir() and any(checkpoint_dir.iterdir()):
            raise BadInputError(
                f"{checkpoint_dir} exists and is not an llmkit checkpoint directory; choose another --checkpoint-dir"
            )
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
    return last_complete_checkpoint(checkpoint_dir)


def _checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Trainer's checkpoint-N directories, by step."""
    found = [p for p in checkpoint_dir.glob("checkpoint-*") if p.is_dir() and p.name[len("checkpoint-") :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint-") :]))


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint written whole (`COMPLETE_FILE`); one a signal cut short is passed over."""
    complete = [p for p in _checkpoints(checkpoint_dir) if (p / COMPLETE_FILE).is_file()]
    return str(complete[-1]) if complete else None


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
            # A checkpoint cut short would be rotated in as the newest; only this run, holding the lock, may drop it.
            for partial in _checkpoints(checkpoint_dir):
                if not (partial / COMPLETE_FILE).is_file():
                    shutil.rmtree(partial, ignore_errors=True)
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


# ---- a run from loading to its output ------------------------------------------------------------


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (they set RANK), or a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def checkpoint_directory(out: Path, checkpoint_dir: Path | None) -> Path:
    """Where a run writing `out` checkpoints: `checkpoint_dir`, or OUT.checkpoints beside it."""
    if checkpoint_dir is not None:
        return checkpoint_dir
    name = f"{out.name}.checkpoints"
    if len(os.fsencode(name)) > NAME_MAX:
        raise BadInputError(
            f"--out {out.name[:40]}... is too long to name its checkpoint directory {name[:20]}...; "
            "pass --checkpoint-dir"
        )
    return out.parent / name


Fit = Callable[[PreTrainedModel, PreTrainedTokenizerBase], tuple[Trainer, dict[str, Any]]]
"""A method's part of a run: train the loaded model (with `train`), return the trainer and the
method's own record fields."""


def train_and_save(
    base_model: str,
    out: Path,
    run: Mapping[str, Any],
    fit: Fit,
    *,
    record_file: str,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    overwrite: bool = False,
    resumed_from: str | None = None,
    files: Callable[[Mapping[str, Any]], Mapping[str, bytes]] | None = None,
) -> dict[str, Any] | None:
    """Every training command's run around the method's `fit`: load `base_model` for training
    (on the CPU: Trainer places it), add LoRA as `run["lora"]` records it (seeded by the budget's
    seed), fit, then the main process writes the trained model (or adapter) and `record_file`,
    the record = `run` + fit's fields + the `RunSummary` (and `files(record)`, plots), into
    `out` in one staged write and drops the checkpoints; every process waits for it and leaves
    the process group. Returns the record on the main process, None on the others."""
    started = time.perf_counter()
    mixed_precision(resolve_dtype(training_dtype(dtype), torch.device("cpu")))  # refused before minutes of loading
    model, tokenizer = load_model(
        base_model, dtype=training_dtype(dtype), device="cpu", trust_remote_code=trust_remote_code
    )
    original = model_fingerprint(model)
    # An adapter directory loads merged into its base, whose weights peft froze: train them all.
    model.requires_grad_(True)
    if run["lora"]:
        model = add_lora(model, run["lora"]["rank"], run["lora"]["targets"], seed=run["budget"]["seed"])
    trainer, fields = fit(model, tokenizer)
    summary = RunSummary.of(
        trainer, original_fingerprint=original, seconds=time.perf_counter() - started, resumed_from=resumed_from
    )
    record = {**run, **fields, **asdict(summary)}
    main = is_main_process()
    if main:
        with staged_directory(out, overwrite=overwrite) as staging:
            save_trained(trainer.model, tokenizer, staging, base_model)
            (staging / record_file).write_text(dumps_results(record), encoding="utf-8")
            for name, content in (files(record) if files else {}).items():
                (staging / name).write_bytes(content)
        remove_checkpoints(trainer)
    trainer.accelerator.wait_for_everyone()
    leave_process_group(trainer)
    return record if main else None
