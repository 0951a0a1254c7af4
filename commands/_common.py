"""What every command shares: option definitions, error handling, progress bars and output."""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from llmkit.data import dumps_jsonl
from llmkit.errors import BadInputError
from llmkit.results import NAME_MAX, dumps_results, staged_directory

if TYPE_CHECKING:
    from llmkit.generation import Backend

stdout = Console()
stderr = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id or local model directory.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16 or float16.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")]
BatchSizeOpt = Annotated[str, typer.Option(help="Prompts per batch, or 'auto' (start at 64, halve on out-of-memory).")]
TrustRemoteCodeOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow model code from the hub to run (off by default).")
]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed for sampling.")]
OutputPathOpt = Annotated[
    Optional[Path],
    typer.Option("--output-path", "-o", help="Run directory to write results.json and samples.jsonl to."),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the output directory if it exists.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results JSON to stdout instead of a table.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
InterventionOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--intervention",
        metavar="ARTIFACT",
        help="Apply an intervention artifact (llmkit unlearn neuron-adjust | ksd) fitted on this model. Repeatable.",
    ),
]
# The options every training command shares (`train`, `unlearn <gradient method>`).
LoraOpt = Annotated[
    bool,
    typer.Option("--lora", help="Train a LoRA adapter (peft) instead of every weight; writes an adapter directory."),
]
LoraRankOpt = Annotated[int, typer.Option(help="LoRA rank r (α = 2r).")]
LoraTargetOpt = Annotated[
    Optional[str],
    typer.Option(help="Modules LoRA adapts, comma-separated (e.g. q_proj,v_proj).", show_default="peft's choice"),
]
LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate (constant, AdamW).")]
SaveStepsOpt = Annotated[
    int, typer.Option(help="Checkpoint every N steps; an interrupted run resumes from the newest.")
]
CheckpointDirOpt = Annotated[
    Optional[Path],
    typer.Option(help="Where checkpoints go; removed when the run finishes.", show_default="OUT.checkpoints"),
]


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, schedulers and CI send), raised like Ctrl-C so that every staged
    write and training run cleans up as it does for an interrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def check_finite(fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Every float option must be a finite number: `nan` and `inf` parse as floats, and would run
    to the end and write NaN weights or records that are not JSON."""
    for name, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        bad = next((v for v in values if isinstance(v, float) and not math.isfinite(v)), None)
        if bad is not None:
            raise BadInputError(f"{option_flag(fn, name)} must be a finite number, got {bad}")


def option_flag(fn: Callable[..., Any], name: str) -> str:
    """The flag a command's parameter is given by (`lam` -> `--lambda`)."""
    parameter = inspect.signature(fn, eval_str=True).parameters[name]
    for meta in getattr(parameter.annotation, "__metadata__", ()):
        # typer.Option("--flag", ...) keeps its first declaration as `default`.
        declared = [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]
        flags = [d for d in declared if isinstance(d, str) and d.startswith("--")]
        if flags:
            return flags[0]
    return "--" + name.replace("_", "-")


def cli_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into the CLI contract: one line on stderr and exit code 2 for bad
    input (the traceback only with --debug); exit code 130 on Ctrl-C, 143 on SIGTERM."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_finite(fn, kwargs)
            return fn(*args, **kwargs)
        except BadInputError as err:
            if kwargs.get("debug"):
                raise
            sys.stderr.write(f"error: {err}\n")
            raise typer.Exit(2) from None
        except Terminated:
            sys.stderr.write("terminated; no output was written\n")
            raise typer.Exit(128 + signal.SIGTERM) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted; no output was written\n")
            raise typer.Exit(130) from None

    return wrapper


class LlmkitGroup(TyperGroup):
    """The root command: a usage error (a missing option, a value of the wrong type, an unknown
    command) is one `error:` line and exit code 2 instead of Typer's panel, and SIGTERM is
    handled as an interrupt while a command runs."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as Typer shows it
                sys.stderr.write(err.format_message() + "\n")
            else:
                ctx = getattr(err, "ctx", None)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                sys.stderr.write(f"error: {err.format_message()}{hint}\n")
            code = err.exit_code
        except typer.Abort:
            sys.stderr.write("interrupted\n")
            code = 130
        finally:
            if on_main_thread:
                signal.signal(signal.SIGTERM, previous)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def parse_batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise BadInputError(f"--batch-size must be a positive integer or 'auto', got {value!r}")


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (so stdout stays clean for pipelines); yields the
    `progress(done, total)` callback the library calls."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done, total: progress.update(task, completed=done, total=total)


@contextmanager
def counting_progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """`progress_bar` for work reported in increments: yields `advance(amount)`."""
    with progress_bar(description, total) as progress:
        done = 0

        def advance(amount: int) -> None:
            nonlocal done
            done += amount
            progress(done, total)

        yield advance


def print_results_json(results: dict[str, Any]) -> None:
    sys.stdout.write(dumps_results(results))


def key_value_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key, str(value))
    return table


def open_backend(
    backend: str,
    model: str,
    interventions: list[Path] | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int | str = "auto",
    seed: int | None = None,
    trust_remote_code: bool = False,
) -> Backend:
    """The generation/scoring backend every command uses, with its --intervention artifacts applied
    (read first, so a bad artifact fails before any model loads)."""
    from llmkit.generation import load_backend
    from llmkit.methods.intervened import apply_interventions, read_interventions

    artifacts = read_interventions(interventions or [], backend)
    with stderr.status(f"loading {model}"):
        engine = load_backend(
            backend,
            model,
            dtype=dtype,
            device=device,
            batch_size=batch_size,
            seed=seed,
            trust_remote_code=trust_remote_code,
        )
        try:
            return apply_interventions(engine, artifacts, model, device=device, trust_remote_code=trust_remote_code)
        except BaseException:
            engine.close()
            raise


def data_digest(records: list[dict[str, Any]] | None) -> str | None:
    if records is None:
        return None
    return hashlib.sha256(dumps_jsonl(records).encode()).hexdigest()[:16]


def parse_lora_targets(text: Optional[str]) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def lora_settings(lora: bool, rank: int, targets: Optional[str]) -> dict[str, Any] | None:
    """--lora, --lora-rank and --lora-target as a training run records them (None: no LoRA)."""
    return {"rank": rank, "targets": parse_lora_targets(targets)} if lora else None


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch (they set RANK), or a single process."""
    return int(os.environ.get("RANK", "0")) == 0


def checkpoint_path(out: Path, checkpoint_dir: Path | None) -> Path:
    """Where a training command checkpoints: --checkpoint-dir, or OUT.checkpoints beside --out."""
    if checkpoint_dir is not None:
        return checkpoint_dir
    name = f"{out.name}.checkpoints"
    if len(os.fsencode(name)) > NAME_MAX:
        raise BadInputError(
            f"--out {out.name[:40]}... is too long to name its checkpoint directory {name[:20]}...; "
            "pass --checkpoint-dir"
        )
    return out.parent / name


def resume_note(checkpoint_dir: Path, run: dict[str, Any]) -> str | None:
    """The checkpoint a training command resumes from (its name), said on stderr; None for a fresh
    run. Checked before the model loads, so checkpoints of another run fail at once."""
    from llmkit.training import check_checkpoints

    resume_from = check_checkpoints(checkpoint_dir, run)
    if resume_from is None:
        return None
    if is_main_process():
        stderr.print(f"resuming from {resume_from}", highlight=False, soft_wrap=True)
    return Path(resume_from).name


def write_trained_model(
    trainer: Any, tokenizer: Any, out: Path, base_model: str, records: dict[str, Any], overwrite: bool
) -> bool:
    """The end of every training command: the main process writes the trained model (or adapter)
    and its JSON records into `out` in one staged write and drops the checkpoints; every process
    waits for it, then leaves the process group. Returns whether this is the main process (the one
    that reports)."""
    from llmkit.training import leave_process_group, remove_checkpoints, save_trained

    main = is_main_process()
    if main:
        with staged_directory(out, overwrite=overwrite) as staging:
            save_trained(trainer.model, tokenizer, staging, base_model)
            for name, record in records.items():
                (staging / name).write_text(dumps_results(record), encoding="utf-8")
        remove_checkpoints(trainer)
    trainer.accelerator.wait_for_everyone()
    leave_process_group(trainer)
    return main


def train_and_write(
    title: str,
    model: str,
    out: Path,
    checkpoints: Path,
    run: dict[str, Any],
    fit: Callable[[Any, Any, Callable[[int, int], None] | None], tuple[Any, dict[str, Any]]],
    rows: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    record_file: str,
    dtype: str,
    trust_remote_code: bool,
    overwrite: bool,
    json: bool,
) -> None:
    """The tail of every training command (`train`, `unlearn` with a gradient method). Says which
    checkpoint of `run` it resumes from, loads `model` for training (on the CPU: Trainer places
    it), adds LoRA as `run["lora"]` records it, seeded by `run["budget"]["seed"]`, and calls
    `fit(model, tokenizer, progress)` under a progress bar on the main process: it trains and
    returns the trainer and the command's own record fields. The record, `run` + those fields +
    the `RunSummary`, goes beside the trained model in `out` as `record_file`; the main process
    prints it (--json) or a table of `rows(record)` and the time."""
    from llmkit.models import load_model, model_fingerprint
    from llmkit.training import RunSummary, add_lora, training_dtype

    resumed_from = resume_note(checkpoints, run)
    started = time.perf_counter()
    hf_model, tokenizer = load_model(
        model, dtype=training_dtype(dtype), device="cpu", trust_remote_code=trust_remote_code
    )
    original = model_fingerprint(hf_model)
    if run["lora"]:
        hf_model = add_lora(hf_model, run["lora"]["rank"], run["lora"]["targets"], seed=run["budget"]["seed"])
    with progress_bar(title, 1) if is_main_process() else nullcontext(None) as progress:
        trainer, fields = fit(hf_model, tokenizer, progress)
    seconds = time.perf_counter() - started
    summary = RunSummary.of(trainer, original_fingerprint=original, seconds=seconds, resumed_from=resumed_from)
    record = {**run, **fields, **asdict(summary)}
    if not write_trained_model(trainer, tokenizer, out, model, {record_file: record}, overwrite):
        return
    if json:
        print_results_json(record)
        return
    stdout.print(key_value_table(title, {**rows(record), "time": f"{record['train_time_s']:.1f} s"}))
    stdout.print(f"{'adapter' if run['lora'] else 'model'}: {out}")


def loss_change(record: dict[str, Any]) -> str:
    """A training record's first → final loss, for its table."""
    return "-" if record["first_loss"] is None else f"{record['first_loss']:.4g} → {record['final_loss']:.4g}"


def backend_config(engine: Backend, backend: str, batch_size: int | str, dtype: str, device: str) -> dict[str, Any]:
    """How a command's backend ran, for its results.json config: the options and the dtype they resolved to."""
    resolved = str(engine.dtype).removeprefix("torch.")
    return {"backend": backend, "batch_size": batch_size, "dtype": dtype, "resolved_dtype": resolved, "device": device}
