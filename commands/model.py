"""`llmkit model inspect`: what llmkit sees in a model, checked by running it once."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from llmkit.commands._common import (
    ModelOptions,
    Options,
    OutputOptions,
    cli_command,
    key_value_table,
    print_results_json,
    stdout,
)

app = typer.Typer(help="Look inside a model.", no_args_is_help=True)


@app.command("inspect")
@cli_command
def inspect(model: ModelOptions, *, output: Annotated[OutputOptions, Options(exclude=("overwrite",))]) -> None:
    """Print the resolved architecture map (module paths and shapes of every hook point), the sizes
    and the parameter count of a model. Run it first when a hook-based method fails."""
    from llmkit import arch, hooks

    loaded, tokenizer = model.load()
    report = {
        "model": model.name,
        **vars(arch.summarize(loaded)),
        "dtype": str(next(loaded.parameters()).dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "points": hooks.describe_points(loaded, tokenizer),
    }
    if output.json:
        print_results_json(report)
        return
    stdout.print(key_value_table(model.name, {k: v for k, v in report.items() if k != "points"}))
    table = Table(title="architecture map ({i} = layer index)", title_justify="left")
    for column in ("point", "module", "reads", "shape"):
        table.add_column(column, no_wrap=column == "module")
    for row in report["points"]:
        table.add_row(row["point"], row["module"], row["reads"], " × ".join(map(str, row["shape"])))
    stdout.print(table)
