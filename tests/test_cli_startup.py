"""The CLI starts fast: parsing arguments, a usage error and every `--help` load none of the heavy
libraries (torch alone takes over a second to import); a command imports them when it runs."""

import subprocess
import sys

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from llmkit.commands.cli import app

HEAVY = (
    "torch",
    "transformers",
    "datasets",
    "peft",
    "trl",
    "accelerate",
    "safetensors",
    "sklearn",
    "matplotlib",
    "vllm",
)

# Run in a fresh interpreter: this test process has imported torch long ago (conftest).
STARTUP = f"""
import sys

import typer
from typer.testing import CliRunner

from llmkit.commands.cli import app

typer.main.get_command(app)
runner = CliRunner()
for args, code in ((["--help"], 0), (["unlearn", "npo", "--help"], 0), (["generate", "-m", "x"], 2)):
    result = runner.invoke(app, args)
    assert result.exit_code == code, (args, result.exit_code, result.output)
print(" ".join(name for name in {HEAVY!r} if name in sys.modules))
"""


def test_help_and_usage_errors_import_no_heavy_library():
    result = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"imported at start-up: {result.stdout.strip()}"


def command_paths(command, path=()):
    """The path of `command` and of every command below it."""
    yield path
    if isinstance(command, TyperGroup):
        for name, sub in sorted(command.commands.items()):
            yield from command_paths(sub, (*path, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def test_the_walk_reaches_every_group():
    assert {("unlearn", "npo"), ("eval", "ort"), ("train", "send"), ("world", "pretrain"), ("quickstart",)} <= set(
        PATHS
    )


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "llmkit")
def test_every_command_renders_its_help(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
