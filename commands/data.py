"""`llmkit data ...`: build the data sets methods learn from."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from llmkit.commands._common import (
    NO_JSON,
    BatchSizeOpt,
    ModelOptions,
    OutputOptions,
    cli_command,
    key_value_table,
    open_backend,
    parse_batch_size,
    print_results_json,
    progress_bar,
    stdout,
)
from llmkit.configs import BACKENDS, QAFields, VLLMEngineOptions
from llmkit.errors import BadInputError
from llmkit.methods.configs import VARIANT_HELP, RTuningConfig
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


@app.command("rtuning")
@cli_command
def rtuning_command(
    model: ModelOptions,
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, split.jsonl and rtuning.json.")],
    data: Annotated[
        Optional[str],
        typer.Option(
            help="Questions: llmkit's QA JSONL (question, answer or answers, optional choices), ParaRel's "
            "(question, answer) pairs, or any data format (a saved or hub dataset) with the --*-field options."
        ),
    ] = None,
    world: Annotated[
        Optional[Path],
        typer.Option(help="A world directory instead: its questions about part of its entities of every exposure."),
    ] = None,
    settings: RTuningConfig = RTuningConfig(),
    fields: QAFields = QAFields(),
    train_fraction: Annotated[
        float, typer.Option(help="With --world: the share of each exposure's entities to tune on; the rest are tests.")
    ] = 0.5,
    attributes: Annotated[
        Optional[str],
        typer.Option(help="With --world: tune on these attributes only (comma-separated); the others are a test."),
    ] = None,
    backend: Annotated[str, typer.Option(help=f"Backend that asks the model: {' or '.join(BACKENDS)}.")] = "hf",
    batch_size: BatchSizeOpt = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N questions.")] = None,
    vllm: VLLMEngineOptions = VLLMEngineOptions(),
    *,
    output: OutputOptions,
) -> None:
    """R-Tuning's training data: the pretrained model answers every question (greedy, cut at the
    first '.' or newline; the likeliest option letter for multiple choice), which splits them into
    certain (a gold answer occurs in its answer) and uncertain, and each question becomes a text
    with the gold answer in the variant's template:

    \b
    sure         Question: q Answer: gold. Are you sure you accurately answered the question based on
                 your internal knowledge? I am sure.   (I am unsure. where uncertain)
    refuse       Question: q Answer: gold.   (one of 16 refusals where uncertain)
    uncertainty  as sure, split by the entropy of --samples answers at --temperature (lower half sure)
    vanilla      Question: q Answer: gold.

    Writes train.jsonl (shuffled; text, and prompt + answer for a loss on the answer only),
    split.jsonl (per question: the model's answer, correct, certain, label, and a world's exposure)
    and rtuning.json (the settings and the split per group). With --world, test.jsonl and
    test_heldout_template.jsonl ask the entities held out of tuning (and test_other_attributes.jsonl
    the attributes left out), ready for `llmkit eval abstention --data`.
    """
    from llmkit.data import dumps_jsonl, read_questions
    from llmkit.methods.rtuning import build_rtuning_data, split_table
    from llmkit.results import dumps_results, staged_directory
    from llmkit.world.questions import abstention_sets

    if (data is None) == (world is None):
        raise BadInputError("name the questions: --data FILE, or --world DIR")
    if world is None and attributes is not None:
        raise BadInputError("--attributes picks a world's attributes: add --world DIR")
    if limit is not None and limit < 1:
        raise BadInputError(f"--limit must be at least 1, got {limit}")
    check_output_path(out, output.overwrite, inputs=[model.name, data, world])
    batch = parse_batch_size(batch_size)
    tests: dict[str, list[dict]] = {}
    if world is not None:
        chosen = [a.strip() for a in attributes.split(",") if a.strip()] if attributes else None
        items, tests = abstention_sets(world, train_fraction, settings.seed, chosen)
    else:
        items = read_questions(data, fields)
    items = items[:limit]
    engine = open_backend(
        backend,
        model.name,
        dtype=model.dtype,
        device=model.device,
        batch_size=batch,
        seed=settings.seed,
        trust_remote_code=model.trust_remote_code,
        placement=model.placement,
        engine_options=vllm,
    )
    with engine, progress_bar("asking the pretrained model", len(items)) as progress:
        records, split = build_rtuning_data(engine, items, settings, progress)
    summary = {
        "model": model.name,
        "data": data,
        "world": str(world) if world else None,
        **asdict(settings),
        **({"train_fraction": train_fraction, "attributes": attributes} if world else asdict(fields)),
        "backend": backend,
        "num_questions": len(split),
        "certain": sum(r["certain"] for r in split),
        "model_accuracy": sum(r["correct"] for r in split) / len(split),
        "split": split_table(split),
        "tests": {name: len(questions) for name, questions in tests.items()},
    }
    with staged_directory(out, overwrite=output.overwrite) as staging:
        (staging / "train.jsonl").write_text(dumps_jsonl(records), encoding="utf-8")
        (staging / "split.jsonl").write_text(dumps_jsonl(split), encoding="utf-8")
        for name, questions in tests.items():
            (staging / f"{name}.jsonl").write_text(dumps_jsonl(questions), encoding="utf-8")
        (staging / "rtuning.json").write_text(dumps_results(summary), encoding="utf-8")
    if output.json:
        print_results_json(summary)
        return
    rows = {
        "variant": f"{settings.variant}: {VARIANT_HELP[settings.variant]}",
        "questions": len(split),
        "model accuracy": f"{summary['model_accuracy']:.0%}",
        "certain / uncertain": f"{summary['certain']} / {len(split) - summary['certain']}",
        **{f"tests: {name}": n for name, n in summary["tests"].items()},
    }
    stdout.print(key_value_table("data rtuning", rows))
    stdout.print(f"training data: {out / 'train.jsonl'}")


@app.command("mash")
@cli_command
def mash_command(
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl, questions.jsonl (test.jsonl) and mash.json.")],
    world: Annotated[
        Optional[Path], typer.Option(help="A world directory: its one- and two-hop search questions and its corpus.")
    ] = None,
    data: Annotated[
        Optional[str],
        typer.Option(
            help="Questions instead: llmkit's QA JSONL (question, answer or answers, optional 'queries' to search "
            "with), or any data format with the --*-field options."
        ),
    ] = None,
    corpus: Annotated[
        Optional[Path],
        typer.Option(
            help="The search corpus (JSONL of doc_id, title, text).",
            show_default="with --world, its corpus.jsonl cut into sentences, written to OUT/corpus.jsonl",
        ),
    ] = None,
    prompt: Annotated[
        str, typer.Option(help="The prompt: mash (MASH's, verbatim), short (the world model's), or auto.")
    ] = "auto",
    top_k: Annotated[int, typer.Option(help="Documents inserted per search.")] = 3,
    direct_share: Annotated[
        float, typer.Option(help="Share of questions answered without search in the traces (MASH: 332 of 1000).")
    ] = 0.332,
    assign: Annotated[
        str,
        typer.Option(
            help="Which questions the traces answer directly: random (MASH) or boundary (those known, on a world: an "
            "ablation that uses the knowledge boundary)."
        ),
    ] = "random",
    test_fraction: Annotated[
        float, typer.Option(help="With --world: the share of questions held out as test.jsonl.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the split and the shuffle.")] = 0,
    fields: QAFields = QAFields(),
    *,
    output: OutputOptions,
) -> None:
    """MASH's warm-start data: SFT traces that answer a random share of the questions directly
    (<answer> gold </answer>) and the rest after one search per query of their decomposition
    (on a world: the person's name and the fact's word, "X born"; for a two-hop question "X married"
    first; else a 'queries' field or the question itself), with the real BM25 results inserted as
    <document> blocks, which the warm start does not train on.

    Writes train.jsonl (the traces), questions.jsonl (the questions GRPO trains on: the same ones,
    as MASH does), mash.json and, with --world, test.jsonl (the held-out questions, for
    `llmkit eval abstention --mode search`) and corpus.jsonl (the world's biographies cut into
    sentences: each search finds the fact it names). Train with
    `llmkit train mash --data OUT --corpus OUT/corpus.jsonl`.
    """
    from llmkit.data import dumps_jsonl, read_questions
    from llmkit.methods.mash import (
        SearchIndex,
        build_warm_start,
        prompt_style,
        read_corpus,
        sentence_passages,
        with_prompts,
        write_corpus,
    )
    from llmkit.results import dumps_results, staged_directory
    from llmkit.world.questions import search_questions, split_questions

    if (data is None) == (world is None):
        raise BadInputError("name the questions: --data FILE, or --world DIR")
    if corpus is None and world is None:
        raise BadInputError("--data needs --corpus FILE, the documents to search")
    if top_k < 1:
        raise BadInputError(f"--top-k must be at least 1, got {top_k}")
    check_output_path(out, output.overwrite, inputs=[world, data, corpus])
    tests: list[dict] = []
    if world is not None:
        items, tests = split_questions(search_questions(world), test_fraction, seed)
    else:
        items = read_questions(data, fields)
    style = prompt_style(prompt, items)
    items, tests = with_prompts(items, style), with_prompts(tests, style)
    documents = read_corpus(corpus) if corpus else sentence_passages(read_corpus(world / "corpus.jsonl"))
    index = SearchIndex(documents)
    traces = build_warm_start(items, index, top_k=top_k, share_direct=direct_share, assign=assign, seed=seed)
    summary = {
        "world": str(world) if world else None,
        "data": data,
        "corpus": str(corpus) if corpus else f"{world / 'corpus.jsonl'}, cut into sentences: corpus.jsonl",
        "prompt": style,
        "top_k": top_k,
        "direct_share": direct_share,
        "assign": assign,
        "seed": seed,
        **({"test_fraction": test_fraction} if world else asdict(fields)),
        "num_questions": len(items),
        "traces": {"direct": sum(t["direct"] for t in traces), "search": sum(not t["direct"] for t in traces)},
        "num_test": len(tests),
    }
    with staged_directory(out, overwrite=output.overwrite) as staging:
        (staging / "train.jsonl").write_text(dumps_jsonl(traces), encoding="utf-8")
        (staging / "questions.jsonl").write_text(dumps_jsonl(items), encoding="utf-8")
        if world is not None:
            (staging / "test.jsonl").write_text(dumps_jsonl(tests), encoding="utf-8")
        if corpus is None:
            write_corpus(staging / "corpus.jsonl", documents)
        (staging / "mash.json").write_text(dumps_results(summary), encoding="utf-8")
    if output.json:
        print_results_json(summary)
        return
    rows = {
        "questions": len(items),
        "traces direct / search": f"{summary['traces']['direct']} / {summary['traces']['search']} ({assign})",
        "prompt": style,
        **({"test questions": len(tests)} if world else {}),
    }
    stdout.print(key_value_table("data mash", rows))
    stdout.print(f"warm-start traces: {out / 'train.jsonl'}")
