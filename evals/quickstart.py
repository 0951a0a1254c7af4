"""`llmkit quickstart`'s tour of the synthetic world: a list of stages, each a function of the run's
`Context` returning a `StageResult` (its metrics, samples and tables).

`STAGES` runs in order; each stage's metrics go to results.json under its name, and later stages
read them (ROCR and NPO score against ORT's run). Adding a stage is one function and one entry.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from llmkit import arch
from llmkit.configs import RESTOR_WORLD_RECIPE, SAMPLES, TEMPERATURE, TOP_K, TOP_P, GenerationParams, TrainingBudget
from llmkit.data import read_records, record_texts
from llmkit.evals import restor
from llmkit.evals.abstention import ask_base_model, base_summary, evaluate_abstention, evaluate_search
from llmkit.evals.common import limit_per_group
from llmkit.evals.hallucination import evaluate_hallucination, world_items
from llmkit.evals.knowledge import evaluate_knowledge
from llmkit.evals.ort import (
    Probe,
    biography_only_entities,
    demonstration_entities,
    evaluate_ort,
    load_world_probes,
    ort_table,
    probe_prompts,
    redirect_entity,
)
from llmkit.evals.skills import evaluate_skills, world_skill_items
from llmkit.generation import Backend, HFBackend
from llmkit.methods import gradient, ksd, mash, neuron_adjust, rocr, rtuning
from llmkit.methods.configs import MashConfig, RTuningConfig, WarmStartConfig
from llmkit.methods.intervened import IntervenedBackend
from llmkit.training import build_sft_trainer, encode_records, train
from llmkit.world.forget_set import KNOWN_EXPOSURE, forget_set, skill_set
from llmkit.world.forms import FORMS, phrasing
from llmkit.world.generator import NUMERIC_SKILL
from llmkit.world.questions import abstention_sets, search_questions, split_questions

ProgressBar = Callable[[str, int], AbstractContextManager[Callable[[int, int], None]]]
"""`bar(label, total)`: a context yielding `progress(done, total)` (the CLI's progress bar)."""
CountingProgressBar = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
"""`bar(label, total)` for work reported in increments: a context yielding `advance(amount)`."""


@dataclass(frozen=True)
class StageSettings:
    """What the stages do on one preset's model: NPO's learning rate and steps (on the default
    model those of docs/ort_comparison.sh); the share of neurons Neuron Adjust adjusts and the
    forget and retain records its statistics read (a sample keeps the stage within its minute);
    the hallucination stage's prompts per exposure group (K = 10 answers each); whether the
    target (of ORT, ROCR and NPO) is a biography-only entity, the cross-form case, or a
    demonstration one; ROCR's null-space threshold."""

    npo_learning_rate: float
    npo_steps: int
    neuron_fraction: float
    neuron_records: int
    hallucination_prompts: int
    biography_only_target: bool
    rocr_nullspace_threshold: float = rocr.ROCRConfig.nullspace_threshold
    rtuning_budget: TrainingBudget = TrainingBudget(epochs=10, learning_rate=1e-4, batch_size=8, save_steps=10_000)
    """R-Tuning's tuning on half of the entities of every exposure: on the default model the
    study's setting that declines unseen entities most while still answering known ones
    (docs/abstention.md)."""
    mash_warm_start: WarmStartConfig = WarmStartConfig(3, 3e-4, 16)
    mash_budget: TrainingBudget = TrainingBudget(max_steps=10, learning_rate=3e-5, batch_size=4, save_steps=10_000)
    """MASH's smoke run: a short warm start and a few GRPO steps (the full run: docs/abstention.md)."""
    restor_corruption: TrainingBudget = TrainingBudget(
        epochs=RESTOR_WORLD_RECIPE["corrupt_epochs"], learning_rate=RESTOR_WORLD_RECIPE["corrupt_lr"], batch_size=4,
        save_steps=10_000,
    )  # fmt: skip
    restor_unlearning: TrainingBudget = TrainingBudget(
        max_steps=RESTOR_WORLD_RECIPE["unlearn_steps"], learning_rate=RESTOR_WORLD_RECIPE["unlearn_lr"], batch_size=4,
        save_steps=10_000,
    )  # fmt: skip
    """RESTOR's corruption and unlearning: `eval restor`'s recipe for world models."""


SETTINGS = {
    "default": StageSettings(3e-5, 20, 0.03, 1000, 60, biography_only_target=True),
    # The micro model (2 layers) extracts almost nothing from biographies alone (QA 10% on
    # biography-only entities seen 30 times), so its target is one it knows; and with the paper's
    # threshold ROCR moves its QA answers by 1% (the edit reaches 85% of the way at the contexts'
    # key but not at the questions'), with 1.0 by 18%.
    "micro": StageSettings(
        7e-4,
        20,
        0.03,
        300,
        12,
        biography_only_target=False,
        rocr_nullspace_threshold=1.0,
        rtuning_budget=TrainingBudget(epochs=10, learning_rate=1e-3, save_steps=10_000),
        mash_warm_start=WarmStartConfig(10, 3e-3, 16),
        mash_budget=TrainingBudget(max_steps=4, learning_rate=3e-5, batch_size=2, save_steps=10_000),
    ),
}


@dataclass
class Context:
    """What every stage reads: the model, the world, the preset's settings, a scratch directory
    (removed after the run), the caller's progress bars and the metrics of the stages before it.
    `target` is the entity ORT, ROCR and NPO are about: the most exposed entity of the preset's
    target population."""

    backend: HFBackend
    world_dir: Path
    cache: Path
    scratch: Path
    settings: StageSettings
    probes: list[dict[str, Any]]
    facts: list[dict[str, Any]]
    entities: list[dict[str, Any]]
    skill_items: list[dict[str, Any]]
    target: dict[str, Any]
    ort_probes: list[Probe]
    ort_prompts: list[str]
    progress_bar: ProgressBar
    counting_progress_bar: CountingProgressBar
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_world(
        cls,
        backend: HFBackend,
        world_dir: Path,
        cache: Path,
        scratch: Path,
        preset: str,
        progress_bar: ProgressBar,
        counting_progress_bar: CountingProgressBar,
    ) -> Context:
        """The context of a run on `backend`, the model of `world_dir` and of `preset`."""
        entities = read_records(world_dir / "entities.jsonl")
        settings = SETTINGS[preset]
        target = (biography_only_entities if settings.biography_only_target else demonstration_entities)(entities)[0]
        ort_probes = load_world_probes(world_dir, [target["name"]])
        return cls(
            backend,
            world_dir,
            cache,
            scratch,
            settings,
            probes=read_records(world_dir / "probes.jsonl"),
            facts=read_records(world_dir / "facts.jsonl"),
            entities=entities,
            skill_items=world_skill_items(world_dir),
            target=target,
            ort_probes=ort_probes,
            ort_prompts=probe_prompts(ort_probes, backend.tokenizer, chat=False),
            progress_bar=progress_bar,
            counting_progress_bar=counting_progress_bar,
        )

    def score_ort(self, backend: Backend, label: str, baseline: dict[str, Any] | None = None) -> tuple[dict, list]:
        """ORT's metrics and samples for `backend` on the target's probes, against `baseline`'s run."""
        with self.progress_bar(label, len(self.ort_probes)) as progress:
            metrics, _, samples = evaluate_ort(backend, self.ort_probes, self.ort_prompts, FORMS, baseline, progress)
        return metrics, samples


@dataclass
class StageResult:
    """A stage's metrics, its samples (each tagged with the stage's name as its task unless it
    carries its own) and the tables it prints."""

    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], caption: str | None = None, *, left: int = 1
) -> Table:
    """A report table, its first `left` columns left-aligned and the rest right-aligned."""
    table = Table(title=title, title_justify="left", caption=caption)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*row)
    return table


# --- the stages --------------------------------------------------------------------------------


def knowledge_stage(ctx: Context) -> StageResult:
    """Greedy exact match on every fact, by exposure and form, beside what guessing scores."""
    with ctx.progress_bar("probing knowledge", len(ctx.probes)) as progress:
        metrics, samples = evaluate_knowledge(ctx.backend, ctx.probes, ctx.facts, progress)
    rows = [(exposure, *(_percent(by_form[f]) for f in FORMS)) for exposure, by_form in metrics["accuracy"].items()]
    table = _table("What the model knows: greedy exact match by exposure and form", ("exposure", *FORMS), rows, left=0)
    table.add_row("chance", *(_percent(metrics["chance"][f]) for f in FORMS), style="dim")
    rows = [
        (*key.replace("_", "-").split("/"), *(_percent(by_form[f]) for f in FORMS))
        for key, by_form in metrics["known"].items()
    ]
    populations = _table(
        f"Entities seen {KNOWN_EXPOSURE}+ times: demonstration (also in question sheets) or biography-only, "
        "in trained or held-out phrasings",
        ("entities", "phrasing", *FORMS),
        rows,
        left=1,
    )
    return StageResult(metrics, samples, [table, populations])


def skills_stage(ctx: Context) -> StageResult:
    """Accuracy on each skill's test items (printed beside the skill-unlearning stage's)."""
    with ctx.progress_bar("testing skills", len(ctx.skill_items)) as progress:
        metrics, samples = evaluate_skills(ctx.backend, ctx.skill_items, progress)
    return StageResult(metrics, samples)


def ort_stage(ctx: Context) -> StageResult:
    """ORT (llmkit eval ort) on the target: its facts and its exposure bucket's, in every form."""
    metrics, samples = ctx.score_ort(ctx.backend, "ORT: scoring every form")
    title = f"ORT: is {ctx.target['name']} known in every form? (neighbours: the rest of its exposure bucket)"
    return StageResult(metrics, samples, [ort_table(metrics, title)])


def rocr_stage(ctx: Context) -> StageResult:
    """ROCR on the target, in memory: edit, score the ORT stage's probes again against its
    unedited run, ask three questions about the target, then revert. Statistics come from (and
    go to) the cache, so only the first run pays for them."""
    backend, model, tokenizer, target = ctx.backend, ctx.backend.model, ctx.backend.tokenizer, ctx.target
    redirect_to = redirect_entity(ctx.entities, target)
    config = rocr.ROCRConfig.for_model(
        len(arch.decoder_layers(model)), world_model=True, nullspace_threshold=ctx.settings.rocr_nullspace_threshold
    )
    corpus = rocr.StatisticsCorpus.from_source(str(ctx.world_dir / "pretraining.jsonl"), 200_000, max_length=128)
    asked = [
        p for p in ctx.probes if p["entity_id"] == target["id"] and p["form"] == "qa" and phrasing(p) == "trained"
    ][:3]
    questions = [p["prompt"] for p in asked]
    params = GenerationParams(max_new_tokens=12, stop=("\n",))
    answers_before = [g.texts[0].strip() for g in backend.generate(questions, params)]
    originals = rocr.original_weights(model, config.layers)
    request = rocr.Request(target["name"], redirect_to["name"])
    with ctx.counting_progress_bar("ROCR: key statistics", corpus.max_tokens) as advance:
        edits, record = rocr.unlearn(model, tokenizer, [request], config, corpus, ctx.cache / "rocr-stats", advance)
    try:
        ort, samples = ctx.score_ort(backend, "ROCR: scoring every form after the edit", ctx.metrics["ort"])
        answers_after = [g.texts[0].strip() for g in backend.generate(questions, params)]
    finally:
        rocr.revert(model, rocr.edit_tensors(originals, edits))
    answers = [
        {"question": p["prompt"].split("\n")[0], "before": b, "after": a, "redirect_value": redirect_to[p["attribute"]]}
        for p, b, a in zip(asked, answers_before, answers_after)
    ]
    metrics = {
        "target": target["name"],
        "redirect": redirect_to["name"],
        "layers": list(config.layers),
        "timings": record["timings"],
        "statistics_cached": bool(record["statistics"]["cached_layers"]),
        "ort": ort,
        "answers": answers,
    }
    title = f"ROCR: {target['name']} redirected to {redirect_to['name']}, every form against the unedited model"
    timings, cached = record["timings"], " (cached)" if metrics["statistics_cached"] else ""
    answers_table = _table(
        f"ROCR: asked about {target['name']}, redirected to {redirect_to['name']}",
        ("question", "before", "after", f"{redirect_to['name']}'s"),
        [(a["question"], a["before"], a["after"], a["redirect_value"]) for a in answers],
        f"statistics {timings['statistics_s']:.1f} s{cached}, edit {timings['edit_s']:.2f} s; "
        "the model is reverted afterwards",
        left=4,
    )
    return StageResult(metrics, samples, [ort_table(ort, title), answers_table])


def npo_stage(ctx: Context) -> StageResult:
    """NPO on the target's QA facts (other known entities' QA facts retained), trained on a copy
    of the model, then every form scored against the unedited run; its table sets it beside ROCR."""

    forget, retain, _ = forget_set(ctx.world_dir, ctx.target["name"], "qa")
    model = copy.deepcopy(ctx.backend.model)
    budget = TrainingBudget(
        epochs=1,
        learning_rate=ctx.settings.npo_learning_rate,
        batch_size=len(forget),
        max_steps=ctx.settings.npo_steps,
        save_steps=1000,
    )
    checkpoints = ctx.scratch / "npo"
    checkpoints.mkdir()
    started = time.perf_counter()
    with ctx.progress_bar("NPO: unlearning the QA form", budget.max_steps) as progress:
        gradient.unlearn(model, ctx.backend.tokenizer, "npo", forget, retain, checkpoints, budget, progress=progress)
    train_s = time.perf_counter() - started
    model.eval()
    unlearned = HFBackend(model, ctx.backend.tokenizer)
    ort, samples = ctx.score_ort(unlearned, "NPO: scoring every form after training", ctx.metrics["ort"])
    metrics = {
        "target": ctx.target["name"],
        "forget_records": len(forget),
        "retain_records": len(retain),
        **asdict(budget),
        "train_s": round(train_s, 2),
        "ort": ort,
    }
    rocr = ctx.metrics["rocr"]
    drops = [
        [stage["ort"]["drop"][role][form] for role in ("forget", "neighbor") for stage in (rocr, metrics)]
        for form in rocr["ort"]["drop"]["forget"]
    ]
    table = _table(
        f"Unlearning {rocr['target']}: relative drop of the answer probability by form",
        ("form", "ROCR forget", "NPO forget", "ROCR neighbours", "NPO neighbours"),
        [(form, *map(_percent, row)) for form, row in zip(rocr["ort"]["drop"]["forget"], drops)],
        f"ROCR: a rank-one edit from the name alone ({rocr['timings']['edit_s']:.2f} s). NPO: {metrics['max_steps']} "
        f"steps on the QA form only ({train_s:.1f} s). Form gap: ROCR {_percent(rocr['ort']['form_gap'])}, "
        f"NPO {_percent(ort['form_gap'])}.",
    )
    return StageResult(metrics, samples, [table])


def skill_unlearning_stage(ctx: Context) -> StageResult:
    """KSD and Neuron Adjust, each fitted on the numeric skill's training items (Neuron Adjust
    also on the other skills' as its retain set), then every skill scored against the skills
    stage. Both are inference-time interventions: the model itself is never changed."""
    forget, retain, _ = skill_set(ctx.world_dir, NUMERIC_SKILL)
    backend, model, tokenizer = ctx.backend, ctx.backend.model, ctx.backend.tokenizer
    fraction, records = ctx.settings.neuron_fraction, ctx.settings.neuron_records
    started = time.perf_counter()
    gate, ksd_record = ksd.fit_ksd(model, tokenizer, record_texts(forget, queries=True), ksd.KSDConfig())
    ksd_fit_s = time.perf_counter() - started
    with ctx.counting_progress_bar("Neuron Adjust: neuron statistics", 2 * records) as advance:
        started = time.perf_counter()
        adjust, na_record = neuron_adjust.fit_neuron_adjust(
            model,
            tokenizer,
            record_texts(forget[:records]),
            record_texts(retain[:records]),
            neuron_adjust.NeuronAdjustConfig(fraction=fraction),
            advance,
        )
        na_fit_s = time.perf_counter() - started
    metrics: dict[str, Any] = {
        "skill": NUMERIC_SKILL,
        "ksd": {"fit_s": round(ksd_fit_s, 2), "k": ksd_record["k"], "layer": gate.layer},
        "neuron_adjust": {"fit_s": round(na_fit_s, 2), "fraction": fraction, "neurons": na_record["neurons"]},
    }
    samples: list[dict[str, Any]] = []
    before = ctx.metrics["skills"]
    for name, label, adjusters, gates in (("ksd", "KSD", [], [gate]), ("neuron_adjust", "Neuron Adjust", [adjust], [])):
        intervened = IntervenedBackend(backend, model, adjusters, gates)
        with ctx.progress_bar(f"{label}: testing skills", len(ctx.skill_items)) as progress:
            skills, scored = evaluate_skills(
                intervened, ctx.skill_items, progress, refusals=intervened.refusals, baseline_metrics=before
            )
        metrics[name]["skills"] = skills
        samples += [{"task": f"skills-{name}", **s} for s in scored]
    ksd_skills, na_skills = metrics["ksd"]["skills"], metrics["neuron_adjust"]["skills"]
    rows = [
        (
            skill,
            *map(
                _percent,
                (
                    accuracy,
                    ksd_skills["accuracy"][skill],
                    ksd_skills["abstention"][skill],
                    na_skills["accuracy"][skill],
                    ksd_skills["drop"][skill],
                    na_skills["drop"][skill],
                ),
            ),
        )
        for skill, accuracy in before["accuracy"].items()
    ]
    table = _table(
        f"Skill unlearning: {NUMERIC_SKILL} removed at inference, every skill's accuracy",
        ("skill", "before", "KSD", "KSD abstained", "Neuron Adjust", "KSD drop", "NA drop"),
        rows,
        f"KSD: a hypercube around the {NUMERIC_SKILL} queries' MLP keys at layer {gate.layer}, fitted in "
        f"{metrics['ksd']['fit_s']:.1f} s. Neuron Adjust: {na_record['neurons']} neurons "
        f"({100 * fraction:g}%), fitted in {metrics['neuron_adjust']['fit_s']:.1f} s.",
    )
    return StageResult(metrics, samples, [table])


def hallucination_stage(ctx: Context) -> StageResult:
    """EigenScore of 10 answers sampled per question, about well-known entities (exposure 30)
    and entities never seen (exposure 0); how well it flags the wrong greedy answers (AUROC), by
    the exact log-det and by EES on the same answers."""
    items = limit_per_group(world_items(ctx.world_dir, (0, 30)), ctx.settings.hallucination_prompts, "group")
    params = GenerationParams(
        max_new_tokens=16, temperature=TEMPERATURE, top_p=TOP_P, top_k=TOP_K, num_samples=SAMPLES, stop=("\n",), seed=0
    )
    started = time.perf_counter()
    with ctx.progress_bar("hallucination: sampling answers", len(items)) as progress:
        metrics, samples = evaluate_hallucination(
            ctx.backend, ctx.backend.model, items, params, method="exact", compare="ees", progress=progress
        )
    metrics["time_s"] = round(time.perf_counter() - started, 2)
    labels = {"exposure 30": "known (exposure 30)", "exposure 0": "unseen (exposure 0)"}
    table = _table(
        "Hallucination: EigenScore of 10 sampled answers, known vs unseen entities",
        ("entities", "questions", "accuracy", "EigenScore"),
        [
            (labels.get(group, group), str(g["num_prompts"]), _percent(g["accuracy"]), f"{g['eigenscore']:.2f}")
            for group, g in metrics["groups"].items()
        ],
        f"AUROC of EigenScore for wrong answers: {metrics['auroc']:.3f} (exact log-det), "
        f"{metrics['auroc_ees']:.3f} (EES); {metrics['time_s']:.1f} s.",
    )
    return StageResult(metrics, samples, [table])


def abstention_stage(ctx: Context) -> StageResult:
    """R-Tuning on a copy of the model: half of the entities of every exposure asked, their
    questions labelled sure or unsure by the model's own answers, the copy tuned on them; then the
    other half asked of the tuned model and of the model as it was (the paper's Pretrain-T), and
    how often each declines, by exposure."""
    train_items, tests = abstention_sets(ctx.world_dir, 0.5, seed=0)
    records, split = rtuning.build_rtuning_data(ctx.backend, train_items, RTuningConfig())
    model = copy.deepcopy(ctx.backend.model)
    tokenizer, budget = ctx.backend.tokenizer, ctx.settings.rtuning_budget
    checkpoints = ctx.scratch / "rtuning"
    started = time.perf_counter()
    examples = encode_records(tokenizer, [{"text": r["text"]} for r in records])
    with ctx.progress_bar("R-Tuning: tuning", 1) as progress:
        trainer = build_sft_trainer(model, tokenizer, examples, checkpoints, budget, progress=progress)
        train(trainer, {"method": "rtuning"})
    train_s = time.perf_counter() - started
    model.eval()
    runs, samples = {}, []
    for name, backend in (("tuned", HFBackend(model, tokenizer)), ("pretrained", ctx.backend)):
        with ctx.progress_bar(f"R-Tuning: asking the {name} model", len(tests["test"])) as progress:
            runs[name], asked = evaluate_abstention(backend, tests["test"], progress=progress)
        samples += [{"model": name, **s} for s in asked]
    metrics = {
        "train_questions": len(records),
        "certain": sum(r["certain"] for r in split),
        "test_questions": len(tests["test"]),
        **asdict(budget),
        "train_s": round(train_s, 2),
        **runs,
    }
    tuned, pretrained = runs["tuned"], runs["pretrained"]
    table = _table(
        "Abstention: R-Tuning (declining when P(sure) ≤ ½) on entities held out of the tuning, by exposure",
        ("entities", "questions", "accuracy", "tuned: accuracy", "tuned: declined", "tuned: right when answering"),
        [
            (
                group,
                str(g["num_questions"]),
                _percent(pretrained["groups"][group]["accuracy"]),
                _percent(g["accuracy"]),
                _percent(g["refusal_rate"]),
                _percent(g["accuracy_answered"]),
            )
            for group, g in tuned["groups"].items()
        ],
        f"Tuned on {len(records)} questions ({metrics['certain']} sure) in {train_s:.1f} s. The pretrained model, "
        f"which never read the certainty question, declines {_percent(pretrained['refusal_rate'])} and is right on "
        f"{_percent(pretrained['accuracy'])}; the "
        f"tuned one answers {_percent(tuned['answer_rate'])}, right on {_percent(tuned['accuracy_answered'])} of "
        f"those. AP: tuned {tuned['ap']:.3f}, pretrained {pretrained['ap']:.3f}.",
    )
    return StageResult(metrics, samples, [table])


MASH_CONFIG = MashConfig(top_k=1, segment_tokens=32, max_completion_length=256)
"""The world's search settings: its biographies cut into sentences, each search returns the one that answers."""


def mash_stage(ctx: Context) -> StageResult:
    """MASH, a smoke run: a copy of the model warm-started on direct and search traces for 70% of
    the world's search questions and trained by GRPO for a few steps with the pay-per-search
    reward; then the other 30% asked with the search tool, beside the model as it was (no tool)."""
    items = mash.with_prompts(search_questions(ctx.world_dir), "short")
    train_items, test_items = split_questions(items, 0.3, seed=0)
    test_items = limit_per_group(test_items, 10, "group")
    index = mash.SearchIndex(mash.sentence_passages(mash.read_corpus(ctx.world_dir / "corpus.jsonl")))
    env = mash.SearchEnvironment(index, MASH_CONFIG.top_k, MASH_CONFIG.max_searches)
    traces = mash.build_warm_start(train_items, index, top_k=MASH_CONFIG.top_k, share_direct=mash.direct_share())
    model, tokenizer = copy.deepcopy(ctx.backend.model), copy.deepcopy(ctx.backend.tokenizer)
    budget, warm_start = ctx.settings.mash_budget, ctx.settings.mash_warm_start
    started = time.perf_counter()
    with ctx.progress_bar("MASH: warm start and GRPO", 1) as progress:
        trainer, fields = mash.train_mash(
            model, tokenizer, traces, train_items, env, MASH_CONFIG, warm_start, ctx.scratch / "mash", budget,
            {"method": "mash"}, progress,
        )  # fmt: skip
    train_s = time.perf_counter() - started
    trainer.model.eval()
    with ctx.progress_bar("MASH: asking with search", len(test_items)) as progress:
        tuned, samples = evaluate_search(HFBackend(trainer.model, tokenizer), test_items, env, 32, progress)
    with ctx.progress_bar("MASH: asking the model as it was", len(test_items)) as progress:
        base = base_summary(ask_base_model(ctx.backend, test_items, 1, 15, progress))
    curve = fields["curve"]
    metrics = {
        "train_questions": len(train_items),
        "test_questions": len(test_items),
        **asdict(warm_start),
        **asdict(budget),
        "train_s": round(train_s, 2),
        "curve": curve,
        "tuned": tuned,
        "base": base,
    }
    table = _table(
        "Abstention: MASH (searching as abstaining), a smoke run, on held-out questions by group",
        ("questions", "count", "as it was: accuracy", "MASH: accuracy", "MASH: searched", "MASH: right directly"),
        [
            (
                group,
                str(g["num_questions"]),
                _percent(base["groups"][group]),
                _percent(g["accuracy"]),
                _percent(g["abstention_rate"]),
                _percent(g["precision"]),
            )
            for group, g in tuned["groups"].items()
        ],
        f"A smoke run: {warm_start.warm_start_epochs:g} warm-start epochs and {len(curve)} GRPO steps "
        f"({train_s:.1f} s); mean reward {curve[0]['reward']:.2f} at the first step, {curve[-1]['reward']:.2f} at "
        f"the last. On this world even the full run (docs/abstention.md) learns to use the tool, not when it is "
        f"needed: the model cannot tell the people it knows from those it never saw.",
    )
    return StageResult(metrics, [{"model": "mash", **s} for s in samples], [table])


RESTOR_METHODS = ("ga", "npo")
RESTOR_OTHER_ENTITIES = 20


def restor_stage(ctx: Context) -> StageResult:
    """RESTOR on one target: a copy of the model corrupted by the world's k = 0 misinformation about
    its first target, then unlearned by GA and by NPO (forget: those documents; NPO's retain: other
    entities' biographies); each model asked the target's and 20 other well-known entities' facts."""
    facts = restor.world_facts(ctx.world_dir)
    misinformation = ctx.world_dir / "misinformation.jsonl"
    target = restor.read_corruption(misinformation, facts, k=0).targets[0]
    corruption = restor.read_corruption(misinformation, facts, k=0, targets=[target])
    facts.evaluated = facts.evaluated[:RESTOR_OTHER_ENTITIES]
    items = restor.fact_items(facts, corruption)
    retain = restor.retain_documents(
        ctx.world_dir / "pretraining.jsonl", corruption, facts, len(corruption.documents), seed=0
    )
    tokenizer = ctx.backend.tokenizer
    started = time.perf_counter()
    corrupted = copy.deepcopy(ctx.backend.model)
    with ctx.progress_bar("RESTOR: corrupting", 1) as progress:
        restor.corruption_training(
            corrupted, tokenizer, corruption, ctx.scratch / "restor", ctx.settings.restor_corruption, {}, progress,
            replay=retain[: round(RESTOR_WORLD_RECIPE["corrupt_replay"] * len(corruption.documents))],
        )  # fmt: skip
    models = {"corrupted": corrupted}
    for method in RESTOR_METHODS:
        models[method] = copy.deepcopy(corrupted)
        with ctx.progress_bar(f"RESTOR: unlearning ({method})", 1) as progress:
            gradient.unlearn(
                models[method], tokenizer, method, corruption.texts, retain if method == "npo" else None,
                ctx.scratch / f"restor-{method}", ctx.settings.restor_unlearning, progress=progress,
            )  # fmt: skip
    train_s = time.perf_counter() - started
    runs = {"clean": ctx.backend}
    runs.update({label: HFBackend(model.eval(), tokenizer) for label, model in models.items()})
    metrics: dict[str, Any] = {"target": target, "documents": len(corruption.documents), "train_s": round(train_s, 2)}
    samples = []
    for label, backend in runs.items():
        with ctx.progress_bar(f"RESTOR: asking the {label} model", len(items)) as progress:
            answered = restor.ask(backend, items, 16, progress)
        metrics[label] = restor.model_metrics(answered)
        samples += [{"model": label, **s} for s in answered]
    clean, corrupted_accuracy = metrics["clean"]["target"]["accuracy"], metrics["corrupted"]["target"]["accuracy"]
    for method in RESTOR_METHODS:
        metrics[method]["recovery"] = restor.recovery(metrics[method]["target"]["accuracy"], corrupted_accuracy, clean)
    table = _table(
        f"RESTOR: corrupting {target}, then unlearning the corruption",
        ("model", "target facts right", "other facts right", "corrupted values", "recovery"),
        [
            (
                label,
                _percent(metrics[label]["target"]["accuracy"]),
                _percent(metrics[label]["nontarget"]["accuracy"]),
                _percent(metrics[label]["corrupted_rate"]),
                "-" if metrics[label].get("recovery") is None else f"{metrics[label]['recovery']:.2f}",
            )
            for label in runs
        ],
        f"{len(corruption.documents)} misinformation documents, trained on and then unlearned ({train_s:.1f} s); "
        "recovery = (unlearned − corrupted) / (clean − corrupted) on the target's facts (docs/restor.md).",
    )
    return StageResult(metrics, samples, [table])


# In order; the names are results.json's metrics keys and the samples' tasks.
STAGES: dict[str, Callable[[Context], StageResult]] = {
    "knowledge": knowledge_stage,
    "skills": skills_stage,
    "ort": ort_stage,
    "rocr": rocr_stage,
    "npo": npo_stage,
    "skill_unlearning": skill_unlearning_stage,
    "hallucination": hallucination_stage,
    "abstention": abstention_stage,
    "mash": mash_stage,
    "restor": restor_stage,
}


def run_stages(ctx: Context) -> tuple[list[dict[str, Any]], list[Table], dict[str, float]]:
    """Every stage in order: their samples (tagged with the stage's name), tables and seconds;
    each one's metrics land in `ctx.metrics` under its name."""
    samples: list[dict[str, Any]] = []
    tables: list[Table] = []
    seconds: dict[str, float] = {}
    for name, stage in STAGES.items():
        started = time.perf_counter()
        result = stage(ctx)
        seconds[name] = round(time.perf_counter() - started, 2)
        ctx.metrics[name] = result.metrics
        samples += [{"task": name, **s} for s in result.samples]
        tables += result.tables
    return samples, tables, seconds
