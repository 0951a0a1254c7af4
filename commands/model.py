"""`llmkit model inspect`: what llmkit sees in a model, checked by running it once."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import typer
from rich.table import Table

from llmkit.commands._common import (
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    ModelOpt,
    TrustRemoteCodeOpt,
    cli_command,
    key_value_table,
    print_results_json,
    stderr,
    stdout,
)

app = typer.Typer(help="Look inside a model.", no_args_is_help=True)


def _measured_dims(model, tokenizer) -> dict[str, int]:
    """Run one short forward pass and read every point's last dimension at the first layer."""
    import torch

    from llmkit import arch, hooks

    batch = tokenizer(["Hello world"], return_tensors="pt").to(model.device)
    with ExitStack() as stack:
        captured = {point: stack.enter_context(hooks.capture(model, point, [0])) for point in arch.POINTS}
        with torch.inference_mode():
            model(**batch)
    return {point: acts[0].shape[-1] for point, acts in captured.items()}


@app.command("inspect")
@cli_command
def inspect(
    model: ModelOpt,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print the resolved architecture map (module paths and shapes of every hook point), the sizes
    and the parameter count of a model. Run it first when a hook-based method fails."""
    from llmkit import arch
    from llmkit.models import load_model

    with stderr.status(f"loading {model}"):
        loaded, tokenizer = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    summary = arch.summarize(loaded)
    dims = _measured_dims(loaded, tokenizer)
    points: list[dict[str, Any]] = [
        {
            "point": "layers",
            "module": arch.arch_spec(loaded).layers,
            "reads": "decoder blocks",
            "shape": [summary.num_layers],
        },
        {
            "point": "mlp_pre",
            "module": arch.module_path(loaded, "mlp_pre"),
            "reads": "output",
            "shape": ["batch", "seq", dims["mlp_pre"]],
        },
        {
            "point": "mlp_key",
            "module": arch.module_path(loaded, "mlp_key"),
            "reads": "input",
            "shape": ["batch", "seq", dims["mlp_key"]],
        },
        {
            "point": "mlp_out_weight",
            "module": arch.module_path(loaded, "mlp_out_weight") + ".weight",
            "reads": "weight as (d, m)",
            "shape": list(arch.mlp_out_weight(loaded, 0).shape),
        },
        {
            "point": "resid_out",
            "module": arch.module_path(loaded, "resid_out"),
            "reads": "output",
            "shape": ["batch", "seq", dims["resid_out"]],
        },
    ]
    report = {
        "model": model,
        **vars(summary),
        "dtype": str(next(loaded.parameters()).dtype).removeprefix("torch."),
        "device": str(loaded.device),
        "points": points,
    }
    if json:
        print_results_json(report)
        return
    stdout.print(key_value_table(model, {k: v for k, v in report.items() if k != "points"}))
    table = Table(title="architecture map ({i} = layer index)", title_justify="left")
    for column in ("point", "module", "reads", "shape"):
        table.add_column(column, no_wrap=column == "module")
    for row in points:
        table.add_row(row["point"], row["module"], row["reads"], " × ".join(map(str, row["shape"])))
    stdout.print(table)
