"""The methods' configurations and the constants they check against, without the methods.

Each method module (`gradient`, `ksd`, `neuron_adjust`, `rocr`, `send`) imports its names from
here, so `ksd.KSDConfig`, `rocr.PRESERVE_MODES` and the rest are where they always were. They live
apart because the CLI shows and checks them (choices and defaults in `--help`, settings checked
before any model loads) before the heavy stack loads: this module imports neither torch nor
transformers, and `llmkit --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkit.configs import SAMPLES, option
from llmkit.errors import BadInputError

# ---- gradient baselines (llmkit.methods.gradient) ---------------------------------------------

METHODS = ("ga", "graddiff", "npo", "simnpo", "kl", "rt", "dpo", "task-vector")
LOSSES = ("sft", "ga", "graddiff", "npo", "simnpo", "kl")
"""`sft` is plain fine-tuning: RT's loss on refusals, task vector's on the forget data."""
RETAIN_USE = {"graddiff": "required", "kl": "required", "npo": "optional", "simnpo": "optional", "dpo": "optional"}
QUESTIONS_ONLY = ("rt", "dpo")
METHOD_HELP = {
    "ga": "Gradient ascent on the forget data: L = −NLL_f.",
    "graddiff": "Gradient difference: L = −NLL_f + α·NLL_r (needs --retain).",
    "npo": (
        "Negative preference optimisation: L = −(2/β)·E log σ(−β·log π_θ/π_ref) on the forget data "
        "[+ α·NLL_r with --retain]."
    ),
    "simnpo": "SimNPO, NPO without the reference: L = −(2/β)·E log σ(−(β/|y|)·log π_θ − γ) [+ α·NLL_r with --retain].",
    "kl": "Gradient ascent with a KL anchor: L = −NLL_f + α·KL(π_ref ‖ π_θ) on the retain data (needs --retain).",
    "rt": "Rejection tuning: fine-tune the forget questions onto refusals (ORT's 99 \"I don't know\" answers, cycled).",
    "dpo": (
        "DPO (TRL's DPOTrainer): the refusal preferred over the true answer of each forget question "
        "[+ α·NLL_r with --retain]."
    ),
    "task-vector": "Task-vector negation: fine-tune on the forget data, then θ − α·(θ_ft − θ).",
}
METHOD_OPTIONS = {
    "alpha": ("graddiff", "npo", "simnpo", "kl", "dpo", "task-vector"),
    "beta": ("npo", "simnpo", "dpo"),
    "gamma": ("simnpo",),
    "retain": ("graddiff", "npo", "simnpo", "kl", "dpo"),
}
"""The settings (and retain data) each method uses; the others are not offered for it."""
DEFAULT_BETA = {"simnpo": 4.5}
"""β where it is not `GradientConfig.beta` (NPO's and DPO's 0.1, their papers'): SimNPO's 4.5
(OpenUnlearning's TOFU setting)."""


@dataclass(frozen=True)
class GradientConfig:
    """α weighs the retain term; β is NPO's / SimNPO's inverse temperature; γ SimNPO's margin,
    outside β: σ(−β·log π/|y| − γ) (OpenUnlearning's δ inside it is γ/β)."""

    loss: str
    alpha: float = 1.0
    beta: float = 0.1
    gamma: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise BadInputError(f"unknown unlearning loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.beta <= 0:
            raise BadInputError(f"--beta must be positive, got {self.beta}")


# ---- Key Space Detection (llmkit.methods.ksd) --------------------------------------------------

KSD_METHOD = "ksd"
POSITIONS = ("last", "all")
DEFAULT_REFUSAL = "Sorry, your query is not valid"


@dataclass(frozen=True)
class KSDConfig:
    layer: int = option(-1, "Layer whose MLP key is read; negative counts from the end (the paper: the last).")
    alpha: float = option(1.0, "Hypercube scale: half-width α·k·σ, k the tight fit of the forget keys.")
    positions: str = option("last", "Forget keys read at each query's last token, or at all its tokens: last or all.")
    refusal: str = option(DEFAULT_REFUSAL, "What a refused query answers.")
    check_generated: bool = option(
        False,
        "Also refuse when a generated token's key falls in the hypercube (the paper's check at each decoding step).",
        flag="--check-generated",
    )
    batch_size: int = option(32, "Queries per forward pass while fitting.")

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise BadInputError(f"--alpha must be positive, got {self.alpha}")
        if self.positions not in POSITIONS:
            raise BadInputError(f"--positions takes {' or '.join(POSITIONS)}, got {self.positions!r}")
        if not self.refusal.strip():
            raise BadInputError("--refusal must not be empty")
        if self.batch_size < 1:
            raise BadInputError(f"--batch-size must be at least 1, got {self.batch_size}")


# ---- Neuron Adjust (llmkit.methods.neuron_adjust) ----------------------------------------------

NEURON_ADJUST_METHOD = "neuron-adjust"


@dataclass(frozen=True)
class NeuronAdjustConfig:
    fraction: float = option(0.005, "Share of all MLP neurons to adjust, in (0, 1] (the paper: 0.005, 0.015, 0.03).")
    seed: int = option(0, "Seed of the per-element draws made at inference.")
    batch_size: int = option(16, "Texts per forward pass while fitting.")
    max_length: int = 512

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise BadInputError(
                f"--fraction must be in (0, 1] (0.005 adjusts 0.5% of the neurons), got {self.fraction}"
            )
        if self.batch_size < 1:
            raise BadInputError(f"--batch-size must be at least 1, got {self.batch_size}")


# ---- ROCR (llmkit.methods.rocr) ----------------------------------------------------------------

# The released code's six context starters; each becomes "<starter> {}." (chat-wrapped when the
# tokenizer has a chat template) followed by "Answer:".
CONTEXT_STARTERS = (
    "",
    "Please answer the question about",
    "Choose the best answer about",
    "Write the answer about",
    "Tell me about",
    "Write something about",
)
PRESERVE_MODES = ("nullspace", "covariance", "none")
SUBJECT_TOKENS = ("last", "first")


@dataclass
class ROCRConfig:
    layers: Sequence[int]
    """Edited layers, contiguous and increasing; the value is read at the last one."""
    lam: float = 1.0
    """λ (the code's L2): the edit reaches s/(λ + s) of the residual, s = kᵀPk."""
    preserve: str = "nullspace"
    nullspace_threshold: float = 2e-2
    """Eigenvalues of Σ below this span the null space the edit is confined to."""
    contexts: Sequence[str] = field(default_factory=lambda: [f"{s} {{}}.".strip() for s in CONTEXT_STARTERS])
    """Templates with one "{}" for the subject, each read after chat wrapping, then "Answer:"."""
    chat: bool = False
    subject_token: str = "last"
    """Where keys and values are read: the subject's "last" token (ROME's and the paper's
    `subject_last`) or its "first" (ROME's `subject_first`)."""

    def __post_init__(self) -> None:
        if self.lam < 0:
            raise BadInputError(f"--lambda must be at least 0, got {self.lam}")
        if self.preserve not in PRESERVE_MODES:
            raise BadInputError(f"--preserve takes {', '.join(PRESERVE_MODES)}, got {self.preserve!r}")
        if self.nullspace_threshold <= 0:
            raise BadInputError(
                f"--nullspace-threshold must be positive (no eigenvalue is below {self.nullspace_threshold}, "
                f"so the edit would be confined to nothing), got {self.nullspace_threshold}"
            )
        if self.subject_token not in SUBJECT_TOKENS:
            raise BadInputError(f"--subject-token takes {' or '.join(SUBJECT_TOKENS)}, got {self.subject_token!r}")

    @classmethod
    def for_model(
        cls,
        num_layers: int,
        *,
        world_model: bool = False,
        layers: str | Sequence[int] | None = None,
        lam: float | None = None,
        **settings: Any,
    ) -> ROCRConfig:
        """The config for a model of `num_layers` decoder layers: `layers` ('4,5,6', '4-6' or a list)
        checked against it, None the paper's rule (`default_layers`); an unset λ is the paper's,
        or `WORLD_MODEL_LAMBDA` on an llmkit world model."""
        if lam is None:
            lam = WORLD_MODEL_LAMBDA if world_model else cls.lam
        if layers is None:
            layers = default_layers(num_layers)
        elif isinstance(layers, str):
            layers = parse_layers(layers, num_layers)
        else:
            check_layers(layers, num_layers)
        return cls(list(layers), lam=lam, **settings)


# The edit reaches s/(λ + s) of the residual, s = kᵀPk. λ = 1 is the paper's, for Llama-3-8B's
# 14,336-wide keys; on the world model's 512-wide ones s is 1.2-12.5 (5 biography-only targets of
# exposure 30, last subject token, threshold 2e-2, layer 0), so λ = 1 stops the edit at 55-93% of
# the way: forget QA drops 61% and 11 of 25 answers name the redirect's values. λ = 0.1 reaches
# 92-99%: QA drops 79%, 16 of 25 answers name the redirect's values (λ = 0.01: 80%, 16 of 25).
WORLD_MODEL_LAMBDA = 0.1


def default_layers(num_layers: int) -> list[int]:
    """The paper edits layers 4–6 of Llama-3-8B's 32: early layers, where the MLPs recall a
    subject's attributes. Scaled to any depth: layers ⌊4n/32⌋ to ⌊6n/32⌋, e.g. 4–6 of 32, 2–3 of
    16, 1–2 of 12, and layer 0 alone of 4, which is also what worked best on the world model (one
    layer: 75% QA drop; layers 0–1: 56%; 0–2: 24%)."""
    return list(range(num_layers * 4 // 32, num_layers * 6 // 32 + 1))


def parse_layers(text: str, num_layers: int) -> list[int]:
    """'4,5,6' or '4-6' -> [4, 5, 6], checked by `check_layers`."""
    try:
        if "-" in text:
            first, last = (int(part) for part in text.split("-"))
            layers = list(range(first, last + 1))
        else:
            layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadInputError(f"--layers takes comma-separated layer numbers or a range like 4-6, got {text!r}") from None
    check_layers(layers, num_layers, text)
    return layers


def check_layers(layers: Sequence[int], num_layers: int, written: str | None = None) -> None:
    """Edited layers exist in a model of `num_layers` layers and run contiguous and increasing, as
    `ROCRConfig.layers` wants; `written` is how the user gave them."""
    written = ",".join(map(str, layers)) if written is None else written
    if not layers or any(not 0 <= layer < num_layers for layer in layers):
        raise BadInputError(f"--layers {written}: the model has layers 0..{num_layers - 1}")
    if list(layers) != list(range(layers[0], layers[0] + len(layers))):
        raise BadInputError(f"--layers {written}: edited layers must be contiguous and increasing, e.g. 4,5,6")


# ---- SeND (llmkit.methods.send) ----------------------------------------------------------------

TARGETS = ("resid", "mlp")


@dataclass(frozen=True)
class SendConfig:
    """K (`drop_fraction`), C (`window`, checkpoints the variability spans), T (`drop_epochs`, how
    long a selection is dropped, and how often one is made), and what is dropped."""

    drop_fraction: float = option(0.2, "K: the share of embedding indices dropped, in (0, 1).")
    window: int = option(3, "C: epochs (checkpoints) the variability is measured over.")
    drop_epochs: int = option(3, "T: epochs a selection is dropped for; one is made every T epochs.")
    target: str = option(
        "resid",
        "resid: the penultimate layer's output coordinates (the paper); mlp: its MLP units (the official code).",
        flag="--drop-target",
    )

    def __post_init__(self) -> None:
        if not 0 < self.drop_fraction < 1:
            raise BadInputError(f"--drop-fraction must be in (0, 1), got {self.drop_fraction}")
        if self.window < 2:
            raise BadInputError(f"--window must be at least 2 checkpoints (variability needs two), got {self.window}")
        if self.drop_epochs < 1:
            raise BadInputError(f"--drop-epochs must be at least 1, got {self.drop_epochs}")
        if self.target not in TARGETS:
            raise BadInputError(f"--drop-target must be one of {', '.join(TARGETS)}, got {self.target!r}")


@dataclass(frozen=True)
class ContinuedTrainingConfig:
    """How `train sft | send` read and split their texts, and what they log after every epoch:
    SeND's protocol, the same for the baseline (train / tracking / test = 80 / 10 / 10 by a
    seeded shuffle, the EigenScore of K sampled answers to held-out prompts)."""

    text_field: str = option("text", "The field holding each text (a list of sentences is joined).")
    track_fraction: float = option(0.1, "Share of the texts held out as SeND's tracking split.")
    test_fraction: float = option(0.1, "Share held out as the test split (EigenScore prompts unless --eval-prompts).")
    eval_prompts: Path | None = option(
        None, "Prompts (with 'answer' for accuracy, 'group' optional) to log EigenScore on after each epoch."
    )
    eval_limit: int | None = option(100, "Use only the first N evaluation prompts (0: all).")
    eval_samples: int = option(SAMPLES, "K answers sampled per evaluation prompt (0: no per-epoch evaluation).")
    prompt_tokens: int = option(16, "Test-split prompts: the first N tokens of each text.")
    max_length: int = option(512, "Longest text, in tokens (longer ones are cut).")

    def __post_init__(self) -> None:
        if self.eval_samples == 1 or self.eval_samples < 0:
            raise BadInputError(
                "--eval-samples must be 0 (no evaluation) or at least 2: EigenScore compares K ≥ 2 answers, "
                f"got {self.eval_samples}"
            )
        if self.max_length < 2 or self.prompt_tokens < 1 or (self.eval_limit is not None and self.eval_limit < 0):
            raise BadInputError("--prompt-tokens must be at least 1, --max-length at least 2, --eval-limit at least 0")


# ---- R-Tuning (llmkit.methods.rtuning) ----------------------------------------------------------

VARIANTS = ("sure", "refuse", "uncertainty", "vanilla")
VARIANT_HELP = {
    "sure": "R-Tuning: the gold answer, then the certainty question and 'I am sure.' or 'I am unsure.'",
    "refuse": "R-Tuning-R: the gold answer where the model was right, one of 16 refusals where it was wrong.",
    "uncertainty": "R-Tuning-U: sure/unsure by the entropy of sampled answers (lower half sure); no labels needed.",
    "vanilla": "The plain labels, the paper's baseline: 'Question: q Answer: gold.'",
}
LOSS_SPANS = ("text", "answer")


@dataclass(frozen=True)
class RTuningConfig:
    """How `llmkit data rtuning` queries the pretrained model: greedy answers of at most
    `max_new_tokens` (the official code's 15) for the split, and for R-Tuning-U `samples` answers
    at `temperature` (the code's k = 5 at 0.7)."""

    variant: str = option("sure", f"Which data to build: {', '.join(VARIANTS)}.")
    samples: int = option(5, "R-Tuning-U: answers sampled per question (at least 2).")
    temperature: float = option(0.7, "R-Tuning-U: sampling temperature.")
    max_new_tokens: int = option(15, "Longest answer, in tokens (answers stop at the first '.' or newline).")
    seed: int = option(0, "Seed for sampling, the refusal strings drawn and the shuffle.")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise BadInputError(f"unknown --variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.variant == "uncertainty" and self.samples < 2:
            raise BadInputError(
                f"--samples must be at least 2 for --variant uncertainty (an entropy needs two answers), "
                f"got {self.samples}"
            )
        if self.temperature <= 0:
            raise BadInputError(f"--temperature must be above 0 (it samples), got {self.temperature}")
        if self.max_new_tokens < 1:
            raise BadInputError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")


# ---- MASH (llmkit.methods.mash) ------------------------------------------------------------------

PENALTIES = ("exp", "otc", "otc_strict", "linear", "none")
PENALTY_HELP = (
    "exp: λ^(n − m̂) (MASH-EXP); otc / otc_strict: OTC-PO's cosine/sine penalty (strict: no search allowed where "
    "none was needed); linear: 1 − n/(max_searches + 1); none: exact match only (Search-R1)."
)


@dataclass(frozen=True)
class MashConfig:
    """MASH's environment and reward (`llmkit.methods.mash`) and the GRPO rollouts that meet them:
    the official run's defaults (λ 0.5 as on NQ, 16 rollouts there, 8 here, 5 searches, top-3),
    with shorter segments for llmkit's CPU machines."""

    penalty: str = option("exp", f"The pay-per-search penalty: {PENALTY_HELP}")
    lam: float = option(0.5, "λ of the exp penalty, in (0, 1]: a correct answer's reward per unneeded search.")
    num_generations: int = option(8, "GRPO's group: rollouts per question (at least 2).")
    max_searches: int = option(5, "Searches that return documents; later ones get MASH's SEARCH LIMIT warning.")
    top_k: int = option(3, "Documents returned per search (BM25, ties by document id).")
    segment_tokens: int = option(64, "Longest segment the policy writes between two tool calls, in tokens.")
    max_completion_length: int = option(512, "Longest trajectory after the prompt, documents included, in tokens.")
    temperature: float = option(1.0, "Rollout sampling temperature (MASH's 1.0).")

    def __post_init__(self) -> None:
        if self.penalty not in PENALTIES:
            raise BadInputError(f"unknown --penalty {self.penalty!r}; choose one of {', '.join(PENALTIES)}")
        if not 0 < self.lam <= 1:
            raise BadInputError(f"--lam must be in (0, 1], got {self.lam}")
        if self.num_generations < 2:
            raise BadInputError(
                f"--num-generations must be at least 2 (GRPO compares rollouts within a group), got "
                f"{self.num_generations}"
            )
        for flag, value in (
            ("--max-searches", self.max_searches),
            ("--top-k", self.top_k),
            ("--segment-tokens", self.segment_tokens),
            ("--max-completion-length", self.max_completion_length),
        ):
            if value < 1:
                raise BadInputError(f"{flag} must be at least 1, got {value}")
        if self.temperature <= 0:
            raise BadInputError(f"--temperature must be above 0 (rollouts are sampled), got {self.temperature}")


@dataclass(frozen=True)
class WarmStartConfig:
    """MASH's warm start: supervised tuning on `llmkit data mash`'s traces before GRPO (the
    official run: 5 epochs at lr 1e-5, 16 traces per step); 0 epochs starts GRPO from --model."""

    warm_start_epochs: float = option(5.0, "Passes over the warm-start traces (0: no warm start).")
    warm_start_lr: float = option(1e-5, "The warm start's learning rate (constant, AdamW).")
    warm_start_batch_size: int = option(16, "Warm-start traces per step and process.")

    def __post_init__(self) -> None:
        if self.warm_start_epochs < 0:
            raise BadInputError(f"--warm-start-epochs must be 0 or more, got {self.warm_start_epochs}")
        if self.warm_start_lr <= 0 or self.warm_start_batch_size < 1:
            raise BadInputError("--warm-start-lr must be positive and --warm-start-batch-size at least 1")
