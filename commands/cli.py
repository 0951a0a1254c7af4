"""The `llmkit` entry point: one Typer app, one sub-app per command group."""

from __future__ import annotations

import os
import sys

import typer

from llmkit import __version__
from llmkit.commands import data, evaluate, generate, model, quickstart, train, unlearn, world
from llmkit.commands._common import LlmkitGroup

app = typer.Typer(
    name="llmkit",
    help="Make language models forget, hallucinate less and abstain, and measure it honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LlmkitGroup,
)
app.command("quickstart")(quickstart.quickstart)
app.add_typer(world.app, name="world")
app.command("generate")(generate.generate)
app.add_typer(model.app, name="model")
app.add_typer(train.app, name="train")
app.add_typer(unlearn.app, name="unlearn")
app.add_typer(evaluate.app, name="eval")
app.add_typer(data.app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmkit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Quiet the libraries underneath: llmkit shows its own progress on stderr."""
    import warnings

    # By environment, not by importing them: transformers and datasets take seconds to import, and
    # read these when they are imported (by the command that needs them), so `--help` stays fast.
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # Already imported (llmkit driven from Python, as under the tests), they are told directly.
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    # Renamed-argument notices from transformers (raised through TRL's configs) are not the user's to act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def main() -> None:
    app()
