"""What every command shares: option definitions, error handling, progress bars and output."""

from __future__ import annotations

import functools
import inspect
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from copy import copy
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, get_args, get_origin, get_type_hints

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from llmkit.configs import Placement, VLLMEngineOptions
from llmkit.errors import BadInputError
from llmkit.results import dumps_results

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


@dataclass
class ModelOptions:
    """--model and how it loads: what a command that runs a model where it is takes."""

    name: ModelOpt
    dtype: DtypeOpt = "auto"
    device: DeviceOpt = "auto"
    trust_remote_code: TrustRemoteCodeOpt = False
    placement: Placement = field(default_factory=Placement)

    def load(self) -> tuple[Any, Any]:
        """The model and its tokenizer (`llmkit.models.load_model`), placed as --device-map asks."""
        from llmkit.models import load_model

        with stderr.status(f"loading {self.name}"):
            return load_model(
                self.name,
                dtype=self.dtype,
                device=self.device,
                trust_remote_code=self.trust_remote_code,
                placement=self.placement,
            )


@dataclass
class OutputOptions:
    """What every command that writes takes (a command without JSON to print leaves out --json)."""

    overwrite: OverwriteOpt = False
    json: JsonOpt = False
    debug: DebugOpt = False


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, schedulers and CI send), raised like Ctrl-C so that every staged
    write and training run cleans up as it does for an interrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@dataclass(frozen=True)
class Options:
    """How a command takes an options dataclass (`Annotated[TrainingBudget, Options(...)]`): some of
    its fields' defaults, help or types changed for this command, some left out."""

    defaults: Mapping[str, Any] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)
    types: Mapping[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()


NO_JSON = Options(exclude=("json",))
"""`Annotated[OutputOptions, NO_JSON]`: a command that prints no record."""


def _option_parameters(kind: type, how: Options) -> list[inspect.Parameter]:
    """The options a dataclass offers: its fields declared as options, by `llmkit.configs.option`
    (library configs) or with a Typer annotation (the CLI's own groups, e.g. `TrainingOptions`)."""
    hints = get_type_hints(kind, include_extras=True)
    parameters = []
    for f in fields(kind):
        hint = hints[f.name]
        if f.name in how.exclude:
            continue
        if isinstance(hint, type) and is_dataclass(hint):  # a group within the group: its options too
            parameters += _option_parameters(hint, Options())
            continue
        if get_origin(hint) is Annotated:
            hint, info = get_args(hint)[0], copy(get_args(hint)[1])
        elif "help" in f.metadata:
            settings = dict(f.metadata)
            flag, hint = settings.pop("flag", None), settings.pop("type", hint)
            info = typer.Option(*([flag] if flag else []), **settings)
        else:
            continue
        if f.name in how.help:
            info.help = how.help[f.name]
        default = how.defaults.get(f.name, inspect.Parameter.empty if f.default is MISSING else f.default)
        annotation = Annotated[how.types.get(f.name, hint), info]
        parameters.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        )
    return parameters


def _expand_options(fn: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, tuple[type, list[str]]]]:
    """`fn`'s signature as Typer reads it, each parameter typed as a dataclass replaced by the
    options it offers; and for each such parameter, its dataclass and the options that build it."""
    signature = inspect.signature(fn, eval_str=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, list[str]]] = {}
    for parameter in signature.parameters.values():
        kind, *how = get_args(parameter.annotation) or (parameter.annotation,)
        if not (isinstance(kind, type) and is_dataclass(kind)):
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))  # Typer passes every one by name
            continue
        offered = _option_parameters(kind, next((h for h in how if isinstance(h, Options)), Options()))
        groups[parameter.name] = (kind, [p.name for p in offered])
        parameters += offered
    twice = {p.name for p in parameters if [q.name for q in parameters].count(p.name) > 1}
    if twice:  # a programming error, found when the command is defined
        raise TypeError(f"{fn.__name__} is offered these options twice: {', '.join(sorted(twice))}")
    return signature.replace(parameters=parameters), groups


def _build(kind: type, options: dict[str, Any], offered: set[str]) -> Any:
    """`kind` built from the `offered` options it took (popped from `options`), a dataclass field
    that is itself a group built from its own."""
    hints = get_type_hints(kind, include_extras=True)
    values = {}
    for f in fields(kind):
        hint = hints[f.name]
        if isinstance(hint, type) and is_dataclass(hint):
            values[f.name] = _build(hint, options, offered)
        elif f.name in offered:
            values[f.name] = options.pop(f.name)
    return kind(**values)


def check_finite(parameters: Mapping[str, inspect.Parameter], options: dict[str, Any]) -> None:
    """Every float option must be a finite number: `nan` and `inf` parse as floats, and would run
    to the end and write NaN weights or records that are not JSON."""
    for name, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        bad = next((v for v in values if isinstance(v, float) and not math.isfinite(v)), None)
        if bad is not None:
            raise BadInputError(f"{option_flag(parameters[name])} must be a finite number, got {bad}")


def option_flag(parameter: inspect.Parameter) -> str:
    """The flag a command's parameter is given by (`lam` -> `--lambda`)."""
    for meta in getattr(parameter.annotation, "__metadata__", ()):
        # typer.Option("--flag", ...) keeps its first declaration as `default`.
        declared = [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]
        flags = [d for d in declared if isinstance(d, str) and d.startswith("--")]
        if flags:
            return flags[0]
    return "--" + parameter.name.replace("_", "-")


def cli_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a function into a command: a parameter typed as a dataclass (a method's config, a
    `TrainingBudget`, `EvalOptions`) becomes its options, and the function gets the dataclass,
    built (and so checked) from them. Library errors keep the CLI contract: one line on stderr
    and exit code 2 for bad input (the traceback only with --debug); exit code 130 on Ctrl-C, 143
    on SIGTERM."""
    signature, groups = _expand_options(fn)

    @functools.wraps(fn)
    def wrapper(**options: Any) -> Any:
        debug = options.get("debug", False)
        try:
            check_finite(signature.parameters, options)
            for name, (kind, offered) in groups.items():
                options[name] = _build(kind, options, set(offered))
            return fn(**options)
        except BadInputError as err:
            if debug:
                raise
            sys.stderr.write(f"error: {err}\n")
            raise typer.Exit(2) from None
        except Terminated:
            sys.stderr.write("terminated; no output was written\n")
            raise typer.Exit(128 + signal.SIGTERM) from None
        except KeyboardInterrupt:
            sys.stderr.write("interrupted; no output was written\n")
            raise typer.Exit(130) from None

    wrapper.__signature__ = signature  # what Typer reads
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


def open_backend(backend: str, model: str, interventions: list[Path] | None = None, **settings: Any) -> Backend:
    """`llmkit.methods.intervened.open_intervened_backend` under a spinner: the backend every
    command generates and scores with, its --intervention artifacts applied."""
    from llmkit.methods.intervened import open_intervened_backend

    with stderr.status(f"loading {model}"):
        return open_intervened_backend(backend, model, interventions or (), **settings)


@dataclass
class TrainingOptions:
    """The options every training command shares (`train`, `unlearn <gradient method>`), after its
    data and its `TrainingBudget`."""

    lora: Annotated[
        bool,
        typer.Option(
            "--lora", help="Train a LoRA adapter (peft) instead of every weight; writes an adapter directory."
        ),
    ] = False
    lora_rank: Annotated[int, typer.Option(help="LoRA rank r (α = 2r).")] = 8
    lora_target: Annotated[
        Optional[str],
        typer.Option(help="Modules LoRA adapts, comma-separated (e.g. q_proj,v_proj).", show_default="peft's choice"),
    ] = None
    checkpoint_dir: Annotated[
        Optional[Path],
        typer.Option(help="Where checkpoints go; removed when the run finishes.", show_default="OUT.checkpoints"),
    ] = None
    dtype: DtypeOpt = "auto"
    trust_remote_code: TrustRemoteCodeOpt = False


def train_and_write(
    title: str,
    model: str,
    out: Path,
    run: dict[str, Any],
    fit: Callable[[Any, Any, Callable[[int, int], None] | None], tuple[Any, dict[str, Any]]],
    rows: Callable[[dict[str, Any]], dict[str, Any]],
    options: TrainingOptions,
    output: OutputOptions,
    *,
    record_file: str,
    files: Callable[[dict[str, Any]], dict[str, bytes]] | None = None,
) -> None:
    """The tail of every training command: say which checkpoint of `run` it resumes from, run
    `llmkit.training.train_and_save` with `fit(model, tokenizer, progress)` under a progress bar
    on the main process, which then prints the record (--json) or a table of `rows(record)`."""
    from llmkit.training import check_checkpoints, checkpoint_directory, is_main_process, train_and_save

    resumed_from = check_checkpoints(checkpoint_directory(out, options.checkpoint_dir), run)
    if resumed_from is not None and is_main_process():
        stderr.print(f"resuming from {resumed_from}", highlight=False, soft_wrap=True)
    with progress_bar(title, 1) if is_main_process() else nullcontext(None) as progress:
        record = train_and_save(
            model,
            out,
            run,
            lambda hf_model, tokenizer: fit(hf_model, tokenizer, progress),
            record_file=record_file,
            dtype=options.dtype,
            trust_remote_code=options.trust_remote_code,
            overwrite=output.overwrite,
            resumed_from=Path(resumed_from).name if resumed_from else None,
            files=files,
        )
    if record is None:
        return
    if output.json:
        print_results_json(record)
        return
    stdout.print(key_value_table(title, {**rows(record), "time": f"{record['train_time_s']:.1f} s"}))
    stdout.print(f"{'adapter' if run['lora'] else 'model'}: {out}")


def loss_change(record: dict[str, Any]) -> str:
    """A training record's first → final loss, for its table."""
    return "-" if record["first_loss"] is None else f"{record['first_loss']:.4g} → {record['final_loss']:.4g}"


def backend_config(
    engine: Backend,
    backend: str,
    batch_size: int | str,
    dtype: str,
    device: str,
    placement: Placement | None = None,
    engine_options: VLLMEngineOptions | None = None,
) -> dict[str, Any]:
    """How a command's backend ran, for its results.json config: the options, the dtype they
    resolved to, the HF placement (a device map) or the vLLM engine arguments given to `vllm.LLM`."""
    resolved = str(engine.dtype).removeprefix("torch.")
    config = {
        "backend": backend,
        "batch_size": batch_size,
        "dtype": dtype,
        "resolved_dtype": resolved,
        "device": device,
    }
    if backend == "hf":
        config["placement"] = asdict(placement or Placement())
    else:
        config["vllm_engine_args"] = (engine_options or VLLMEngineOptions()).engine_kwargs()
        config["vllm_engine"] = engine.engine_settings()
    return config
