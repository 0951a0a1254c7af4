"""`llmkit train sft | send`: continued training on texts, plain (the baseline) or with SeND's
sensitivity dropout; both split the data alike and log the held-out EigenScore after every epoch."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from llmkit.commands._common import (
    ModelOpt,
    Options,
    OutputOptions,
    TrainingOptions,
    cli_command,
    loss_change,
    train_and_write,
)
from llmkit.configs import TrainingBudget
from llmkit.methods.configs import ContinuedTrainingConfig, SendConfig
from llmkit.results import check_output_path

app = typer.Typer(
    help="Train a model: plain continued training (sft), or SeND (sensitivity dropout).", no_args_is_help=True
)

HELP = {
    "sft": (
        "Continued training on texts (next-token loss): SeND's baseline, on the same split and with the same "
        "per-epoch EigenScore."
    ),
    "send": (
        "SeND (Sensitivity Dropout): continued training that, every --drop-epochs epochs, finds the penultimate-layer "
        "embedding indices that varied most over the last --window epochs on the tracking split, and drops the top "
        "--drop-fraction of them for the next --drop-epochs epochs (a deterministic mask on every forward pass)."
    ),
}
# SeND's learning rate and schedule. No --max-steps: train's records (a resumed run must match them) never held one.
BUDGET = Options(
    defaults={"epochs": 6, "learning_rate": 1e-4, "save_steps": 500}, types={"epochs": int}, exclude=("max_steps",)
)


def train_command(method: str) -> Any:
    def command(
        model: ModelOpt,
        data: Annotated[
            Path,
            typer.Option(
                help="Texts to train on: any data format with a text field (JSONL, CSV, Parquet, a saved or hub "
                "dataset)."
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", help="Where the trained model goes: an HF model directory, or a peft adapter with --lora."
            ),
        ],
        send_config: SendConfig = SendConfig(),
        protocol: ContinuedTrainingConfig = ContinuedTrainingConfig(),
        *,
        budget: Annotated[TrainingBudget, BUDGET],
        options: TrainingOptions,
        output: OutputOptions,
    ) -> None:
        from llmkit.data import read_training_texts, records_digest
        from llmkit.evals.hallucination import epoch_evaluation
        from llmkit.methods import send
        from llmkit.training import checkpoint_directory, lora_settings

        check_output_path(out, output.overwrite, inputs=[model, data, protocol.eval_prompts])
        config = send_config if method == "send" else None
        texts = read_training_texts(data, protocol.text_field)
        train_texts, tracking_texts, test_texts = send.split_texts(
            texts, protocol.track_fraction, protocol.test_fraction, budget.seed
        )
        if config is not None:
            send.check_tracking(tracking_texts, len(texts), protocol.track_fraction)
        checkpoints = checkpoint_directory(out, options.checkpoint_dir)
        run = {
            "method": method,
            "model": model,
            "data_digest": records_digest([{"text": t} for t in texts]),
            "budget": {k: v for k, v in asdict(budget).items() if k != "max_steps"},
            "split": [protocol.track_fraction, protocol.test_fraction],
            "max_length": protocol.max_length,
            "send": asdict(config) if config else None,
            "lora": lora_settings(options.lora, options.lora_rank, options.lora_target),
        }

        def fit(hf_model: Any, tokenizer: Any, progress: Any) -> tuple[Any, dict[str, Any]]:
            evaluate = epoch_evaluation(tokenizer, protocol, test_texts, budget.seed)
            trainer, fields = send.continued_training(
                hf_model,
                tokenizer,
                train_texts,
                tracking_texts,
                checkpoints,
                budget,
                run,
                config=config,
                max_length=protocol.max_length,
                evaluate=evaluate,
                progress=progress,
            )
            counts = {"train": len(train_texts), "tracking": len(tracking_texts), "test": len(test_texts)}
            return trainer, {"data": str(data), "texts": counts, **fields}

        train_and_write(f"train {method}", model, out, run, fit, _table_rows, options, output, record_file="train.json")

    parameters = inspect.signature(command, eval_str=True).parameters.values()
    if method != "send":  # SeND's settings are not offered for plain training
        parameters = [p for p in parameters if p.name != "send_config"]
    command.__signature__ = inspect.Signature(list(parameters))
    command.__doc__ = (
        f"{HELP[method]}\n\nTrains through transformers' Trainer (resumable; `accelerate launch` / `torchrun` "
        "scale it out), writes an HF model directory (or a peft adapter with --lora) and train.json: the loss per "
        "epoch, the EigenScore (EES) of sampled answers to held-out prompts after every epoch, and SeND's selections."
    )
    return cli_command(command)


def _table_rows(record: dict[str, Any]) -> dict[str, Any]:
    """What `train` prints of its record (the time aside)."""
    texts = record["texts"]
    rows: dict[str, Any] = {
        "texts (train/tracking/test)": f"{texts['train']}/{texts['tracking']}/{texts['test']}",
        "steps": record["steps"],
        "loss": loss_change(record),
    }
    for entry in record["evaluations"]:
        metrics = entry["evaluation"]
        accuracy = f", accuracy {metrics['accuracy']:.0%}" if metrics.get("accuracy") is not None else ""
        rows[f"epoch {entry['epoch']}"] = f"EES {metrics['eigenscore']['mean']:.3f}{accuracy}"
    if record["selections"] is not None:
        selections = [f"epoch {s['epoch']}: {len(s['indices'])} indices" for s in record["selections"]]
        rows["SeND selections"] = ", ".join(selections) or "none"
    return rows


for _method in ("sft", "send"):
    app.command(_method)(train_command(_method))
