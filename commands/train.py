"""`llmkit train sft | send | rtuning | mash`: continued training on texts, plain (the baseline) or
with SeND's sensitivity dropout, both splitting the data alike and logging the held-out EigenScore
after every epoch; R-Tuning's supervised tuning on the data `llmkit data rtuning` builds; and
MASH's warm start and GRPO on the data `llmkit data mash` builds."""

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
from llmkit.errors import BadInputError
from llmkit.methods.configs import LOSS_SPANS, ContinuedTrainingConfig, MashConfig, SendConfig, WarmStartConfig
from llmkit.results import check_output_path

app = typer.Typer(
    help="Train a model: plain continued training (sft), SeND (sensitivity dropout), R-Tuning or MASH.",
    no_args_is_help=True,
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


# R-Tuning's official setup is LMFlow's: lr 2e-5, one sample per device; its epochs are not published.
RTUNING_BUDGET = Options(defaults={"learning_rate": 2e-5, "save_steps": 500})


@app.command("rtuning")
@cli_command
def rtuning(
    model: ModelOpt,
    data: Annotated[
        Path, typer.Option(help="A `llmkit data rtuning` directory (its train.jsonl), or a train.jsonl itself.")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Where the tuned model goes: an HF model directory, or a peft adapter with --lora."),
    ],
    loss: Annotated[
        str,
        typer.Option(
            help=f"Which tokens the loss covers: {' or '.join(LOSS_SPANS)} (text: every token, the paper's LMFlow "
            "setup; answer: the answer and certainty after the prompt)."
        ),
    ] = "text",
    max_length: Annotated[int, typer.Option(help="Longest training text, in tokens (longer ones are cut).")] = 512,
    *,
    budget: Annotated[TrainingBudget, RTUNING_BUDGET],
    options: TrainingOptions,
    output: OutputOptions,
) -> None:
    """R-Tuning: supervised tuning on refusal-aware data (`llmkit data rtuning`), the next-token
    loss on the whole text (or on the answer with --loss answer).

    Trains through transformers' Trainer (resumable; `accelerate launch` / `torchrun` scale it out)
    and writes an HF model directory (or a peft adapter with --lora) and train.json. Evaluate it with
    `llmkit eval abstention`.
    """
    from llmkit.data import read_records, records_digest
    from llmkit.training import build_sft_trainer, checkpoint_directory, encode_records, lora_settings, train

    if loss not in LOSS_SPANS:
        raise BadInputError(f"--loss must be {' or '.join(LOSS_SPANS)}, got {loss!r}")
    if max_length < 2:
        raise BadInputError(f"--max-length must be at least 2, got {max_length}")
    source = data / "train.jsonl" if data.is_dir() else data
    if data.is_dir() and not source.is_file():
        raise BadInputError(f"{data} holds no train.jsonl; build the data with `llmkit data rtuning --out {data}`")
    check_output_path(out, output.overwrite, inputs=[model, data, options.checkpoint_dir])
    required = {"text": str} if loss == "text" else {"prompt": str, "answer": str}
    records = [{k: r[k] for k in required} for r in read_records(source, required=required)]
    checkpoints = checkpoint_directory(out, options.checkpoint_dir)
    run = {
        "method": "rtuning",
        "model": model,
        "data_digest": records_digest(records),
        "loss": loss,
        "max_length": max_length,
        "budget": asdict(budget),
        "lora": lora_settings(options.lora, options.lora_rank, options.lora_target),
    }

    def fit(hf_model: Any, tokenizer: Any, progress: Any) -> tuple[Any, dict[str, Any]]:
        examples = [{k: ids[:max_length] for k, ids in e.items()} for e in encode_records(tokenizer, records)]
        trainer = build_sft_trainer(hf_model, tokenizer, examples, checkpoints, budget, progress=progress)
        train(trainer, run)
        return trainer, {"data": str(source), "records": len(records)}

    def rows(record: dict[str, Any]) -> dict[str, Any]:
        return {"records": record["records"], "steps": record["steps"], "loss": loss_change(record)}

    train_and_write("train rtuning", model, out, run, fit, rows, options, output, record_file="train.json")


# MASH's GRPO: lr 1e-6 for Qwen2.5-3B, 400 steps of 64 questions (16 rollouts each; 8 here by default).
MASH_BUDGET = Options(
    defaults={"learning_rate": 1e-6, "max_steps": 400, "batch_size": 8, "save_steps": 50},
    help={"batch_size": "Questions per GRPO step and process (each with --num-generations rollouts)."},
)


@app.command("mash")
@cli_command
def mash(
    model: ModelOpt,
    data: Annotated[
        Path,
        typer.Option(
            help="A `llmkit data mash` directory: train.jsonl (the warm-start traces) "
            "and questions.jsonl (GRPO's questions)."
        ),
    ],
    corpus: Annotated[Path, typer.Option(help="The search corpus (JSONL of doc_id, title, text) the rollouts search.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Where the trained model goes (an HF model directory), with train.json and reward_curve.png."
        ),
    ],
    settings: MashConfig = MashConfig(),
    warm_start: WarmStartConfig = WarmStartConfig(),
    *,
    budget: Annotated[TrainingBudget, MASH_BUDGET],
    options: TrainingOptions,
    output: OutputOptions,
) -> None:
    """MASH: a warm start (supervised tuning on direct and search traces, the documents masked out
    of the loss), then GRPO (TRL's GRPOTrainer) with the pay-per-search reward R = EM ·
    penalty(n, m̂), n the rollout's searches and m̂ the fewest among the correct rollouts of the
    question so far; with the exp penalty, λ^(n − m̂).

    The rollouts search BM25 over --corpus with the <search> q </search> → <document> protocol; the
    tags become tokens of the model's vocabulary. Resumable (the running minimum m̂ is saved with
    each checkpoint; a finished warm start is not redone); `accelerate launch` / `torchrun` scale it
    out. Writes the model, train.json (the reward, accuracy, searches and search rate per step) and
    reward_curve.png. Evaluate with `llmkit eval abstention --mode search`.
    """
    from llmkit.data import read_records, records_digest
    from llmkit.evals.plots import line_plot
    from llmkit.methods.mash import SearchEnvironment, SearchIndex, read_corpus, train_mash
    from llmkit.training import checkpoint_directory, lora_settings

    traces_file, questions_file = data / "train.jsonl", data / "questions.jsonl"
    if not traces_file.is_file() or not questions_file.is_file():
        raise BadInputError(
            f"{data} holds no train.jsonl and questions.jsonl; build them with `llmkit data mash --out {data}`"
        )
    check_output_path(out, output.overwrite, inputs=[model, data, corpus, options.checkpoint_dir])
    traces = read_records(traces_file, required={"prompt": str, "segments": list})
    questions = read_records(questions_file, required={"id": str, "prompt": str, "answers": list})
    env = SearchEnvironment(SearchIndex(read_corpus(corpus)), settings.top_k, settings.max_searches)
    checkpoints = checkpoint_directory(out, options.checkpoint_dir)
    run = {
        "method": "mash",
        "model": model,
        "data_digest": records_digest(traces + questions),
        "corpus": str(corpus),
        "mash": asdict(settings),
        "warm_start": asdict(warm_start),
        "budget": asdict(budget),
        "lora": lora_settings(options.lora, options.lora_rank, options.lora_target),
    }

    def fit(hf_model: Any, tokenizer: Any, progress: Any) -> tuple[Any, dict[str, Any]]:
        trainer, fields = train_mash(
            hf_model, tokenizer, traces, questions, env, settings, warm_start, checkpoints, budget, run, progress
        )
        return trainer, {"data": str(data), "traces": len(traces), "questions": len(questions), **fields}

    def rows(record: dict[str, Any]) -> dict[str, Any]:
        curve = record["curve"]
        first, last = (curve[0], curve[-1]) if curve else ({}, {})
        return {
            "warm start": f"{record['warm_start_run']['steps']} steps, loss {record['warm_start_run']['loss']}"
            if record["warm_start_run"]
            else "none",
            "GRPO steps": record["steps"],
            "reward": f"{first.get('reward', 0):.3f} → {last.get('reward', 0):.3f}",
            "search rate": f"{first.get('search_rate', 0):.0%} → {last.get('search_rate', 0):.0%}",
        }

    def plot(record: dict[str, Any]) -> dict[str, bytes]:
        steps = [p["step"] for p in record["curve"]]
        lines = {name: (steps, [p[name] for p in record["curve"]]) for name in ("reward", "accuracy", "search_rate")}
        return {"reward_curve.png": line_plot("MASH: GRPO per step", lines, "step", "mean over the step's rollouts")}

    train_and_write("train mash", model, out, run, fit, rows, options, output, record_file="train.json", files=plot)
