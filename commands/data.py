"""`llmkit data ...`: build the data sets methods learn from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmkit.commands._common import NO_JSON, OutputOptions, cli_command, stdout
from llmkit.results import check_output_path
from llmkit.world.forget_set import FORGET_FORMS, forget_set, skill_set, write_sets

app = typer.Typer(help="Build the data sets methods learn from.", no_args_is_help=True)


@app.command("forget-set")
@cli_command
def forget_set_command(
    world: Annotated[Path, typer.Option(help="A world directory (llmkit world build).")],
    target: Annotated[str, typer.Option(help="The entity to forget: its name or id.")],
    out: Annotated[Path, typer.Option(help="Directory for forget.jsonl, retain.jsonl and forget_set.json.")],
    form: Annotated[
        str, typer.Option(help=f"Form of the facts: {', '.join(FORGET_FORMS)} (bio: biography sentences as 'text').")
    ] = "qa",
    *,
    output: Annotated[OutputOptions, NO_JSON],
) -> None:
    """A target's facts in one form (forget.jsonl) and other known entities' facts in the same
    form (retain.jsonl), ready for `llmkit unlearn ga|graddiff|npo|... --forget --retain`.

    Retain entities come from outside the target's exposure bucket where the world has known
    entities there, so ORT's neighbours (that bucket) stay unseen by training.
    """
    check_output_path(out, output.overwrite, inputs=[world])
    forget, retain, summary = forget_set(world, target, form)
    write_sets(out, forget, retain, "forget_set.json", {"world": str(world), **summary}, output.overwrite)
    stdout.print(
        f"{summary['forget_records']} {form} records about {summary['target']} (exposure {summary['exposure']}) in "
        f"{out / 'forget.jsonl'}; {summary['retain_records']} about {len(summary['retain_entities'])} other entities "
        f"in {out / 'retain.jsonl'}"
    )


@app.command("skill-set")
@cli_command
def skill_set_command(
    world: Annotated[Path, typer.Option(help="A world directory (llmkit world build).")],
    skill: Annotated[str, typer.Option(help="The skill to forget, e.g. the world's numeric skill.")],
    out: Annotated[Path, typer.Option(help="Directory for forget.jsonl, retain.jsonl and skill_set.json.")],
    *,
    output: Annotated[OutputOptions, NO_JSON],
) -> None:
    """One skill's training items (forget.jsonl) and the other skills' (retain.jsonl), ready for
    `llmkit unlearn ksd | neuron-adjust --forget --retain`. Test items are left for `llmkit eval skills`."""
    check_output_path(out, output.overwrite, inputs=[world])
    forget, retain, summary = skill_set(world, skill)
    write_sets(out, forget, retain, "skill_set.json", {"world": str(world), **summary}, output.overwrite)
    stdout.print(
        f"{summary['forget_records']} {skill} items in {out / 'forget.jsonl'}; "
        f"{summary['retain_records']} items of {', '.join(summary['retain_skills'])} in {out / 'retain.jsonl'}"
    )
