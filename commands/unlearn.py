"""`llmkit unlearn ...`: make a model forget. `rocr` edits weights in closed form and `revert`
undoes it; `ga`, `graddiff`, `npo`, `simnpo`, `kl`, `rt`, `dpo` and `task-vector` train;
`neuron-adjust` and `ksd` fit skill-unlearning artifacts applied at inference with --intervention."""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from llmkit.commands._common import (
    NO_JSON,
    ModelOpt,
    ModelOptions,
    Options,
    OutputOptions,
    TrainingOptions,
    cli_command,
    counting_progress_bar,
    key_value_table,
    loss_change,
    print_results_json,
    stderr,
    stdout,
    train_and_write,
)
from llmkit.configs import CHAT_TEMPLATE_MODES, TrainingBudget
from llmkit.data import read_records, read_set, record_texts
from llmkit.errors import BadInputError
from llmkit.methods.configs import (
    DEFAULT_BETA,
    METHOD_HELP,
    METHOD_OPTIONS,
    METHODS,
    PRESERVE_MODES,
    SUBJECT_TOKENS,
    GradientConfig,
    KSDConfig,
    NeuronAdjustConfig,
    ROCRConfig,
)
from llmkit.results import check_output_path
from llmkit.world.cache import default_cache_dir, pretraining_corpus

if TYPE_CHECKING:
    from llmkit.interventions import Artifact

app = typer.Typer(help="Make a model forget a concept or a skill.", no_args_is_help=True)

RECORD_FILE = "unlearn.json"
OutOpt = Annotated[
    Path, typer.Option("--out", help="Directory to write the model to (an ordinary HF model directory).")
]


def edit_table(record: dict[str, Any]) -> Table:
    table = Table(title="ROCR: rank-one concept redirection", title_justify="left")
    for column in ("target", "redirect", "layer", "reach s/(λ+s)"):
        table.add_column(column, justify="right" if column in ("layer", "reach s/(λ+s)") else "left")
    redirects = {r["target"]: r["redirect"] for r in record["requests"]}
    for row in record["key_response"]:
        table.add_row(row["target"], redirects[row["target"]], str(row["layer"]), f"{row['reach']:.3f}")
    timings = record["timings"]
    table.caption = (
        f"statistics {timings['statistics_s']:.1f} s, projectors {timings['projector_s']:.1f} s, "
        f"edit {timings['edit_s']:.2f} s"
    )
    return table


@app.command("rocr")
@cli_command
def rocr_command(
    model: ModelOptions,
    out: OutOpt,
    target: Annotated[
        list[str], typer.Option("--target", "-t", help="Concept to forget (repeatable: edited one after another).")
    ],
    redirect: Annotated[
        list[str],
        typer.Option(
            "--redirect",
            "-r",
            help="Harmless concept the target is redirected to (one for all targets, or one per target).",
        ),
    ],
    layers: Annotated[
        Optional[str],
        typer.Option(
            help="Edited layers, contiguous: '4,5,6' or '4-6'.",
            show_default="the paper's 4-6 of 32, scaled to the depth",
        ),
    ] = None,
    lam: Annotated[
        Optional[float],
        typer.Option(
            "--lambda",
            help="λ: the edit reaches s/(λ+s) of the way, s = kᵀPk.",
            show_default="1 (the paper's); 0.1 on llmkit world models",
        ),
    ] = None,
    preserve: Annotated[
        str, typer.Option(help=f"What keeps other knowledge intact: {', '.join(PRESERVE_MODES)}.")
    ] = ROCRConfig.preserve,
    nullspace_threshold: Annotated[
        float, typer.Option(help="Eigenvalues of E\\[kkᵀ] below this span the null space (the paper's 2e-2).")
    ] = ROCRConfig.nullspace_threshold,
    subject_token: Annotated[
        str, typer.Option(help=f"Where keys are read: {' or '.join(SUBJECT_TOKENS)} subject token (the paper's: last).")
    ] = ROCRConfig.subject_token,
    stats_corpus: Annotated[
        Optional[str],
        typer.Option(
            help="Text for the key statistics: .txt (a text per line), JSONL/JSON/CSV/Parquet with a 'text' field, a "
            "saved or hub dataset.",
            show_default="a world model's pretraining text; required otherwise unless --preserve none",
        ),
    ] = None,
    stats_tokens: Annotated[int, typer.Option(help="Tokens of the corpus to read.")] = 1_000_000,
    stats_cache: Annotated[
        Optional[Path], typer.Option(help="Where key statistics are cached.", show_default="$LLMKIT_CACHE/rocr-stats")
    ] = None,
    contexts: Annotated[
        Optional[Path],
        typer.Option(help="Context templates, one per line with '{}' for the subject.", show_default="the paper's six"),
    ] = None,
    chat_template: Annotated[
        str, typer.Option(help=f"Wrap contexts in the chat template: {', '.join(CHAT_TEMPLATE_MODES)}.")
    ] = "auto",
    *,
    output: OutputOptions,
) -> None:
    """Forget a concept without training: redirect it to another with a rank-one edit per layer.

    ROCR (LLM Unlearning Should Be Form-Independent) reads the target's MLP keys and the redirect's
    residual stream, and adds ΔW = r (Pk)ᵀ / (λ + kᵀPk) to each edited layer's MLP output matrix,
    P protecting the keys of a statistics corpus. Writes the edited model, rocr.json and the
    edit's factors with the original weights (rocr_edit.safetensors): `llmkit unlearn revert`
    restores the original exactly. Key statistics are cached and reused.
    """
    from llmkit import arch
    from llmkit.generation import use_chat_template
    from llmkit.methods import rocr

    requests = rocr.pair_requests(target, redirect)
    check_output_path(out, output.overwrite, inputs=[model.name, contexts, stats_corpus, stats_cache])
    context_templates = rocr.read_contexts(contexts)
    if stats_tokens < 1:
        raise BadInputError(f"--stats-tokens must be at least 1, got {stats_tokens}")
    if stats_cache is not None and stats_cache.expanduser().exists() and not stats_cache.expanduser().is_dir():
        raise BadInputError(f"--stats-cache {stats_cache} is a file; it names a directory to keep key statistics in")
    hf_model, tokenizer = model.load()
    world_text = pretraining_corpus(model.name)
    config = ROCRConfig.for_model(
        len(arch.decoder_layers(hf_model)),
        world_model=world_text is not None,
        layers=layers,
        lam=lam,
        preserve=preserve,
        nullspace_threshold=nullspace_threshold,
        subject_token=subject_token,
        chat=use_chat_template(chat_template, tokenizer),
        **({"contexts": context_templates} if context_templates else {}),
    )
    max_length = min(getattr(hf_model.config, "max_position_embeddings", None) or 1024, 1024)
    source = stats_corpus or (str(world_text) if world_text else None)
    use_corpus = source and preserve != "none"
    corpus = rocr.StatisticsCorpus.from_source(source, stats_tokens, max_length) if use_corpus else None
    originals = rocr.original_weights(hf_model, config.layers)
    cache_dir = stats_cache.expanduser() if stats_cache else default_cache_dir() / "rocr-stats"
    with counting_progress_bar("ROCR: key statistics", stats_tokens) as advance:
        edits, record = rocr.unlearn(hf_model, tokenizer, requests, config, corpus, cache_dir, advance)
    record["model"] = model.name
    notes = {
        "cached_layers": "key statistics for layers {} reused from the cache",
        "recomputed_damaged_layers": "key statistics for layers {} damaged in the cache; recomputed",
        "cached_projector_layers": "projectors for layers {} reused from the cache (no eigendecomposition)",
    }
    for key, note in notes.items():
        if record["statistics"] and record["statistics"][key]:
            stderr.print(f"{note.format(record['statistics'][key])} ({cache_dir})", highlight=False, soft_wrap=True)
    rocr.write_edited_model(out, hf_model, tokenizer, record, rocr.edit_tensors(originals, edits), output.overwrite)
    if output.json:
        print_results_json(record)
        return
    stdout.print(edit_table(record))
    stdout.print(f"edited model: {out}")


@app.command("revert")
@cli_command
def revert_command(
    edited: Annotated[Path, typer.Argument(help="A directory `llmkit unlearn rocr` wrote.")],
    out: OutOpt,
    *,
    output: Annotated[OutputOptions, NO_JSON],
) -> None:
    """Restore the model ROCR edited, bit for bit, from the original weights saved beside the edit."""
    from llmkit.methods import rocr

    record = rocr.revert_directory(edited, out, output.overwrite)
    stdout.print(f"original model restored to {out} (layers {', '.join(map(str, record['config']['layers']))})")


# ---- the gradient baselines ------------------------------------------------------------------------

BETA_DEFAULT = f"{GradientConfig.beta}; SimNPO {DEFAULT_BETA['simnpo']}"
BUDGET = Options(
    defaults={"epochs": 5.0},
    help={"epochs": "Passes over the forget data.", "batch_size": "Forget examples per step and process."},
)
GAMMA_HELP = (
    "γ: SimNPO's margin, outside β: σ(−β·log π/|y| − γ). OpenUnlearning and the official SimNPO code put a δ "
    "inside β, σ(β·(NLL/|y| − δ)): γ = β·δ."
)


def gradient_command(method: str) -> Any:
    def command(
        model: ModelOpt,
        forget: Annotated[
            Path,
            typer.Option(
                help="What to forget: JSONL (or any data format) with 'text' passages or 'prompt' + 'answer' "
                "questions (loss on the answer only)."
            ),
        ],
        out: Annotated[
            Path,
            typer.Option(
                "--out", help="Where the unlearned model goes: an HF model directory, or a peft adapter with --lora."
            ),
        ],
        retain: Annotated[
            Optional[Path],
            typer.Option(help="What to keep, same formats; each forget example carries ⌈R/F⌉ (≤ 8) retain examples."),
        ] = None,
        alpha: Annotated[
            float, typer.Option(help="α: weight of the retain term (task-vector: how far to step back).")
        ] = GradientConfig.alpha,
        beta: Annotated[
            Optional[float], typer.Option(help="β: inverse temperature.", show_default=BETA_DEFAULT)
        ] = None,
        gamma: Annotated[float, typer.Option(help=GAMMA_HELP)] = GradientConfig.gamma,
        *,
        budget: Annotated[TrainingBudget, BUDGET],
        options: TrainingOptions,
        output: OutputOptions,
    ) -> None:
        from llmkit.data import records_digest
        from llmkit.methods import gradient
        from llmkit.training import checkpoint_directory, lora_settings

        check_output_path(out, output.overwrite, inputs=[model, forget, retain, options.checkpoint_dir])
        forget_records = read_records(forget)
        retain_records = read_records(retain) if retain else None
        beta = beta if beta is not None else DEFAULT_BETA.get(method, GradientConfig.beta)
        gradient.check_request(method, forget_records, retain_records, alpha=alpha, beta=beta)
        checkpoints = checkpoint_directory(out, options.checkpoint_dir)
        hyper = {"alpha": alpha, "beta": beta, "gamma": gamma}
        run = {
            "method": method,
            "model": model,
            "forget_digest": records_digest(forget_records),
            "retain_digest": records_digest(retain_records),
            "budget": asdict(budget),
            "settings": {k: v for k, v in hyper.items() if method in METHOD_OPTIONS[k]},
            "lora": lora_settings(options.lora, options.lora_rank, options.lora_target),
        }

        def fit(hf_model: Any, tokenizer: Any, progress: Any) -> tuple[Any, dict[str, Any]]:
            trainable = sum(p.numel() for p in hf_model.parameters() if p.requires_grad)
            trainer = gradient.unlearn(
                hf_model,
                tokenizer,
                method,
                forget_records,
                retain_records,
                checkpoints,
                budget,
                **hyper,
                run=run,
                progress=progress,
            )
            return trainer, {
                "forget": str(forget),
                "retain": str(retain) if retain else None,
                "forget_records": len(forget_records),
                "retain_records": len(retain_records) if retain_records else None,
                "trainable_parameters": trainable,
            }

        def rows(record: dict[str, Any]) -> dict[str, Any]:
            return {
                "forget records": record["forget_records"],
                "steps": record["steps"],
                "trainable parameters": record["trainable_parameters"],
                "loss": loss_change(record),
            }

        train_and_write(f"unlearn {method}", model, out, run, fit, rows, options, output, record_file=RECORD_FILE)

    parameters = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name not in METHOD_OPTIONS or method in METHOD_OPTIONS[p.name]
    ]
    command.__signature__ = inspect.Signature(parameters)
    command.__doc__ = (
        f"{METHOD_HELP[method]}\n\nTrains through transformers' Trainer (resumable; `accelerate launch` / `torchrun` "
        "scale it out) and writes an HF model directory, or with --lora a peft adapter that every --model loads."
    )
    return cli_command(command)


for _method in METHODS:
    app.command(_method)(gradient_command(_method))


# --- skill unlearning without training: artifacts applied with --intervention -----------------

ArtifactOutOpt = Annotated[
    Path, typer.Option("--out", help="Artifact directory to write (apply it with --intervention).")
]
ForgetOpt = Annotated[
    str,
    typer.Option(
        help="The skill to forget: records with 'text', or 'prompt' and 'answer' (llmkit data skill-set writes them)."
    ),
]


def print_artifact(path: Path, artifact: Artifact, rows: dict[str, Any], json: bool) -> None:
    if json:
        print_results_json(
            {"artifact": str(path), "method": artifact.method, "params": artifact.params, "record": artifact.record}
        )
        return
    stdout.print(key_value_table(f"{artifact.method} artifact", rows))
    stdout.print(f"artifact: {path} (apply with --intervention {path})")


@app.command("neuron-adjust")
@cli_command
def neuron_adjust_command(
    model: ModelOptions,
    out: ArtifactOutOpt,
    forget: ForgetOpt,
    retain: Annotated[Optional[str], typer.Option(help="Data of the skills to keep, same format as --forget.")] = None,
    config: NeuronAdjustConfig = NeuronAdjustConfig(),
    *,
    output: OutputOptions,
) -> None:
    """Forget a skill without training by adjusting the MLP neurons that tell it apart.

    Neuron Adjust (Effective Skill Unlearning through Intervention and Abstention) fits a Gaussian
    to each MLP neuron's pre-activation over every token of the forget and the retain data,
    selects the --fraction of neurons with the largest |μ_f - μ_r| across all layers, and at
    inference maps a value that is more likely under the forget Gaussian onto the retain one,
    with probability p_f/(p_r+p_f). Writes an artifact to apply with --intervention.
    """
    from llmkit.interventions import write_artifact
    from llmkit.methods import neuron_adjust

    check_output_path(out, output.overwrite, inputs=[model.name, forget, retain])
    forget_texts = record_texts(read_set(forget, "forget"))
    retain_texts = record_texts(read_set(retain, "retain"))
    hf_model, tokenizer = model.load()
    started = time.perf_counter()
    with counting_progress_bar("Neuron Adjust: neuron statistics", len(forget_texts) + len(retain_texts)) as advance:
        adjust, record = neuron_adjust.fit_neuron_adjust(
            hf_model, tokenizer, forget_texts, retain_texts, config, advance
        )
    record.update(model=model.name, forget=forget, retain=retain, fit_s=round(time.perf_counter() - started, 3))
    artifact = neuron_adjust.neuron_adjust_artifact(hf_model, adjust, config, record)
    write_artifact(out, artifact, overwrite=output.overwrite)
    rows = {
        "neurons adjusted": f"{record['neurons']} of {record['total_neurons']:,} ({100 * config.fraction:g}%)",
        "per layer": ", ".join(f"{layer}: {n}" for layer, n in record["neurons_per_layer"].items()),
        "|μ_f - μ_r| selected": f"{record['gap_range'][0]:.3g} to {record['gap_range'][1]:.3g}",
        "forget tokens": record["forget_tokens"],
        "retain tokens": record["retain_tokens"],
        "fit seconds": record["fit_s"],
    }
    print_artifact(out, artifact, rows, output.json)


@app.command("ksd")
@cli_command
def ksd_command(
    model: ModelOptions,
    out: ArtifactOutOpt,
    forget: ForgetOpt,
    config: KSDConfig = KSDConfig(),
    chat_template: Annotated[
        str,
        typer.Option(
            help=f"Wrap the queries in the chat template as evaluations do: {', '.join(CHAT_TEMPLATE_MODES)}."
        ),
    ] = "auto",
    *,
    output: OutputOptions,
) -> None:
    """Forget a skill without training by abstaining on its queries: Key Space Detection.

    KSD (Effective Skill Unlearning through Intervention and Abstention) reads the forget queries'
    MLP keys at one layer (the input of its output projection) and bounds them with a hypercube
    μ ± α·k·σ. At inference a prompt whose key at its last token falls inside is answered with
    --refusal; the check is one prefill pass, so the gate works with --backend hf and vllm.
    Writes an artifact to apply with --intervention.
    """
    from llmkit.generation import chat_wrap, use_chat_template
    from llmkit.interventions import write_artifact
    from llmkit.methods import ksd

    check_output_path(out, output.overwrite, inputs=[model.name, forget])
    queries = record_texts(read_set(forget, "forget"), queries=True)
    hf_model, tokenizer = model.load()
    if use_chat_template(chat_template, tokenizer):
        queries = [chat_wrap(tokenizer, q) for q in queries]
    started = time.perf_counter()
    with stderr.status("KSD: reading the forget keys"):
        gate, record = ksd.fit_ksd(hf_model, tokenizer, queries, config)
    record.update(model=model.name, forget=forget, fit_s=round(time.perf_counter() - started, 3))
    artifact = ksd.ksd_artifact(hf_model, gate, config, record)
    write_artifact(out, artifact, overwrite=output.overwrite)
    rows = {
        "layer": gate.layer,
        "forget queries": record["queries"],
        "key vectors": record["vectors"],
        "tight scale k": record["k"],
        "half-width": f"α·k·σ = {config.alpha:g}·{record['k']:.3g}·σ",
        "fit seconds": record["fit_s"],
    }
    print_artifact(out, artifact, rows, output.json)
