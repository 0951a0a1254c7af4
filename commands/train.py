"""`llmkit train sft | send`: continued training on texts, plain (the baseline) or with SeND's
sensitivity dropout; both split the data alike and log the held-out EigenScore after every epoch."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from llmkit.commands._common import (
    CheckpointDirOpt,
    DebugOpt,
    DtypeOpt,
    JsonOpt,
    LoraOpt,
    LoraRankOpt,
    LoraTargetOpt,
    LrOpt,
    ModelOpt,
    OverwriteOpt,
    SaveStepsOpt,
    TrustRemoteCodeOpt,
    checkpoint_path,
    cli_command,
    data_digest,
    lora_settings,
    loss_change,
    train_and_write,
)
from llmkit.configs import MAX_NEW_TOKENS, SAMPLES, TEMPERATURE, TOP_K, TOP_P, GenerationParams
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.methods.configs import SendConfig
from llmkit.results import check_output_path

if TYPE_CHECKING:
    from transformers import PreTrainedModel

app = typer.Typer(
    help="Train a model: plain continued training (sft), or SeND (sensitivity dropout).", no_args_is_help=True
)

RECORD_FILE = "train.json"
SEND_OPTIONS = ("drop_fraction", "window", "drop_epochs", "drop_target")
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


def read_training_texts(source: Path, field: str) -> list[str]:
    """The `field` of each record: a string, or a list of strings (sentences; SeND's HELM files) joined by spaces."""
    texts = []
    for i, record in enumerate(read_records(source)):
        value = record.get(field)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(value)
        if not isinstance(value, str):
            raise BadInputError(
                f"{source}: record {i + 1} has no text in {field!r}; name the text field with --text-field"
            )
        if value.strip():
            texts.append(value)
    if not texts:
        raise BadInputError(f"{source} has no texts to train on")
    return texts


def evaluation_prompts(
    eval_prompts: Path | None, test_texts: list[str], tokenizer, prompt_tokens: int, limit: int | None
) -> list[dict[str, Any]]:
    """The prompts EigenScore is logged on after each epoch: `--eval-prompts` records (prompt, and
    answer and group where they have them), or the test split's texts cut to their first
    `prompt_tokens` tokens."""
    from llmkit.evals.hallucination import read_items

    if eval_prompts is not None:
        items = read_items(eval_prompts, correctness=False)
    else:
        items = [
            {"prompt": tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"][:prompt_tokens])}
            for t in test_texts
        ]
    return items[:limit] if limit else items


def train_command(method: str) -> Any:
    def command(
        model: ModelOpt,
        data: Annotated[
            Path,
            typer.Option(
                help="Texts to train on: any data format with a text field "
                "(JSONL, CSV, Parquet, a saved or hub dataset)."
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", help="Where the trained model goes: an HF model directory, or a peft adapter with --lora."
            ),
        ],
        text_field: Annotated[
            str, typer.Option(help="The field holding each text (a list of sentences is joined).")
        ] = "text",
        drop_fraction: Annotated[
            float, typer.Option(help="K: the share of embedding indices dropped, in (0, 1).")
        ] = SendConfig.drop_fraction,
        window: Annotated[
            int, typer.Option(help="C: epochs (checkpoints) the variability is measured over.")
        ] = SendConfig.window,
        drop_epochs: Annotated[
            int, typer.Option(help="T: epochs a selection is dropped for; one is made every T epochs.")
        ] = SendConfig.drop_epochs,
        drop_target: Annotated[
            str,
            typer.Option(
                help="resid: the penultimate layer's output coordinates (the paper); "
                "mlp: its MLP units (the official code)."
            ),
        ] = SendConfig.target,
        track_fraction: Annotated[
            float, typer.Option(help="Share of the texts held out as SeND's tracking split.")
        ] = 0.1,
        test_fraction: Annotated[
            float, typer.Option(help="Share held out as the test split (EigenScore prompts unless --eval-prompts).")
        ] = 0.1,
        eval_prompts: Annotated[
            Optional[Path],
            typer.Option(
                help="Prompts (with 'answer' for accuracy, 'group' optional) to log EigenScore on after each epoch."
            ),
        ] = None,
        eval_limit: Annotated[
            Optional[int], typer.Option(help="Use only the first N evaluation prompts (0: all).")
        ] = 100,
        eval_samples: Annotated[
            int, typer.Option(help="K answers sampled per evaluation prompt (0: no per-epoch evaluation).")
        ] = SAMPLES,
        prompt_tokens: Annotated[int, typer.Option(help="Test-split prompts: the first N tokens of each text.")] = 16,
        lora: LoraOpt = False,
        lora_rank: LoraRankOpt = 8,
        lora_target: LoraTargetOpt = None,
        epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 6,
        lr: LrOpt = 1e-4,  # SeND's
        batch_size: Annotated[int, typer.Option(help="Texts per step and process.")] = 8,
        max_length: Annotated[int, typer.Option(help="Longest text, in tokens (longer ones are cut).")] = 512,
        seed: Annotated[int, typer.Option(help="Seed for the split, initialisation, data order and sampling.")] = 0,
        save_steps: SaveStepsOpt = 500,
        checkpoint_dir: CheckpointDirOpt = None,
        dtype: DtypeOpt = "auto",
        trust_remote_code: TrustRemoteCodeOpt = False,
        overwrite: OverwriteOpt = False,
        json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        from llmkit.evals.hallucination import evaluate_hallucination
        from llmkit.generation import HFBackend
        from llmkit.methods import send
        from llmkit.training import EpochEvaluation, TrainingBudget, build_text_trainer, train

        check_output_path(out, overwrite, inputs=[model, data, eval_prompts])
        config = SendConfig(drop_fraction, window, drop_epochs, drop_target) if method == "send" else None
        if eval_samples == 1 or eval_samples < 0:
            raise BadInputError(
                "--eval-samples must be 0 (no evaluation) or at least 2: EigenScore compares K ≥ 2 answers, got "
                f"{eval_samples}"
            )
        if epochs < 1 or max_length < 2 or prompt_tokens < 1 or (eval_limit is not None and eval_limit < 0):
            raise BadInputError(
                "--epochs and --prompt-tokens must be at least 1, --max-length at least 2, --eval-limit at least 0"
            )
        texts = read_training_texts(data, text_field)
        train_texts, tracking_texts, test_texts = send.split_texts(texts, track_fraction, test_fraction, seed)
        if method == "send":
            send.check_tracking(tracking_texts, len(texts), track_fraction)
        checkpoints = checkpoint_path(out, checkpoint_dir)
        budget = TrainingBudget(epochs, lr, batch_size, seed=seed, save_steps=save_steps)
        run = {
            "method": method,
            "model": model,
            "data_digest": data_digest([{"text": t} for t in texts]),
            # train has no --max-steps, and its records (which a resumed run must match) never held one
            "budget": {k: v for k, v in asdict(budget).items() if k != "max_steps"},
            "split": [track_fraction, test_fraction],
            "max_length": max_length,
            "send": config.__dict__ if config else None,
            "lora": lora_settings(lora, lora_rank, lora_target),
        }

        def fit(hf_model: PreTrainedModel, tokenizer: Any, progress: Any) -> tuple[Any, dict[str, Any]]:
            callbacks: list[Any] = []
            sensitivity = None
            if config is not None:
                tracking = send.encode_texts(tokenizer, tracking_texts, max_length)
                sensitivity = send.SensitivityDropout(config, tracking, tokenizer.pad_token_id)
                callbacks.append(sensitivity)
            items = []
            if eval_samples:
                items = evaluation_prompts(eval_prompts, test_texts, tokenizer, prompt_tokens, eval_limit)
            if items:
                params = GenerationParams(
                    max_new_tokens=MAX_NEW_TOKENS,
                    temperature=TEMPERATURE,
                    top_p=TOP_P,
                    top_k=TOP_K,
                    num_samples=eval_samples,
                    stop=("\n",),
                    seed=seed,
                )
                correctness = all("answer" in item for item in items)

                def evaluate(trained: PreTrainedModel) -> dict[str, Any]:
                    metrics, _ = evaluate_hallucination(
                        HFBackend(trained, tokenizer), trained, items, params, correctness=correctness, method="ees"
                    )
                    return metrics

                callbacks.append(EpochEvaluation(evaluate))
            trainer = build_text_trainer(
                hf_model,
                tokenizer,
                train_texts,
                checkpoints,
                budget,
                max_length=max_length,
                callbacks=callbacks,
                progress=progress,
            )
            train(trainer, run)
            history = trainer.state.log_history
            return trainer, {
                "data": str(data),
                "texts": {"train": len(train_texts), "tracking": len(tracking_texts), "test": len(test_texts)},
                "epoch_losses": _epoch_losses(history),
                "evaluations": [e for e in history if "evaluation" in e],
                "selections": sensitivity.selections if sensitivity else None,
            }

        train_and_write(
            f"train {method}",
            model,
            out,
            checkpoints,
            run,
            fit,
            _table_rows,
            record_file=RECORD_FILE,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            overwrite=overwrite,
            json=json,
        )

    parameters = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if method == "send" or p.name not in SEND_OPTIONS
    ]
    command.__signature__ = inspect.Signature(parameters)
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


def _epoch_losses(history: list[dict[str, Any]]) -> list[float]:
    """Mean training loss of each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for entry in history:
        if "loss" in entry:
            by_epoch.setdefault(int(entry["epoch"] - 1e-9), []).append(entry["loss"])
    return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


for _method in ("sft", "send"):
    app.command(_method)(train_command(_method))
