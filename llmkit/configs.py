"""Settings and the constants they check against, without the code that uses them.

`GenerationParams`, `BACKENDS` and `CHAT_TEMPLATE_MODES` (from `llmkit.generation`), a training
run's `TrainingBudget` (from `llmkit.training`), the world
model's recipe `PretrainConfig` with `FAMILIES` and the cache keys `config_digest` and `recipe_id`
(from `llmkit.world.pretrain`), and the EigenScore sampling defaults (from
`llmkit.evals.hallucination`) live here, and those modules import them back, so every name is
still where it was. They live apart because the CLI shows and checks them (choices and defaults in
`--help`, settings checked before any model loads) before the heavy stack loads: this module
imports neither torch nor transformers, and `llmkit --help` stays fast.

A field declared with `option(default, help)` is a command-line option: a command that takes the
dataclass as a parameter offers it as `--field-name` with that help (HfArgumentParser's
`metadata={"help": ...}`), so the default and the help are written once, here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.errors import BadInputError

if TYPE_CHECKING:
    from llmkit.world.generator import WorldConfig


def option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with a default that commands offer as an option: `help` for `--help`, and
    any typer.Option setting in `cli` (`flag="--lr"` where the flag is not the field's name,
    `type=list[str]` where the command line gives another type than the field holds)."""
    return field(default=default, metadata={"help": help, **cli})


# ---- generation (llmkit.generation) -------------------------------------------------------------

BACKENDS = ("hf", "vllm")
CHAT_TEMPLATE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. temperature 0 means greedy decoding."""

    max_new_tokens: int = option(64, "Tokens to generate at most per sample.")
    temperature: float = option(0.0, "0 is greedy decoding; above 0 samples.")
    top_p: float = option(1.0, "Nucleus sampling mass (with --temperature > 0).")
    top_k: int = option(0, "Sample only among the k most likely tokens (0: off).")
    num_samples: int = option(1, "Samples per prompt (needs --temperature > 0 when > 1).")
    stop: tuple[str, ...] = option((), "Stop at this string (repeatable); it is cut off.", type=list[str])
    seed: int | None = option(None, "Random seed for sampling.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))  # from the command line, a list
        if self.max_new_tokens < 1:
            raise BadInputError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise BadInputError(f"--temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise BadInputError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise BadInputError(f"--top-k must be >= 0 (0 is off), got {self.top_k}")
        if self.num_samples < 1:
            raise BadInputError(f"--num-samples must be at least 1, got {self.num_samples}")
        if self.num_samples > 1 and self.temperature == 0:
            raise BadInputError("several samples per prompt need sampling: set a temperature > 0")
        if any(not s for s in self.stop):
            raise BadInputError("--stop takes a non-empty string (an empty one would cut every generation to nothing)")


@dataclass(frozen=True)
class VLLMEngineOptions:
    """vLLM's engine arguments beyond the model, in the spirit of lm-evaluation-harness's
    `--model_args`: the common ones named, any other as `--vllm-arg KEY=VALUE` (checked against
    vLLM's `EngineArgs` when the engine starts; VALUE read as JSON where it parses, else a string)."""

    tensor_parallel_size: int = option(
        1, "GPUs each model is split across (tensor parallelism).", rich_help_panel="vLLM engine"
    )
    pipeline_parallel_size: int = option(
        1, "Pipeline stages (GPUs or nodes) the layers are split into.", rich_help_panel="vLLM engine"
    )
    gpu_memory_utilization: float = option(
        0.9,
        "Share of each GPU's memory vLLM takes; lower it to leave room for an HF model beside it "
        "(a KSD gate, EigenScore's embeddings).",
        rich_help_panel="vLLM engine",
    )
    max_model_len: int | None = option(
        None, "Context length vLLM plans its KV cache for.", rich_help_panel="vLLM engine", show_default="the model's"
    )
    enable_prefix_caching: bool = option(
        True,
        "Reuse the KV cache of shared prompt prefixes (few-shot prompts, a text scored against several endings).",
        flag="--enable-prefix-caching/--no-enable-prefix-caching",
        rich_help_panel="vLLM engine",
    )
    vllm_arg: tuple[str, ...] = option(
        (),
        "Any other vLLM engine argument as KEY=VALUE (repeatable), e.g. enforce_eager=true or kv_cache_dtype=fp8.",
        type=list[str],
        flag="--vllm-arg",
        metavar="KEY=VALUE",
        rich_help_panel="vLLM engine",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "vllm_arg", tuple(self.vllm_arg))  # from the command line, a list
        for flag, value in (
            ("--tensor-parallel-size", self.tensor_parallel_size),
            ("--pipeline-parallel-size", self.pipeline_parallel_size),
        ):
            if value < 1:
                raise BadInputError(f"{flag} must be at least 1, got {value}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise BadInputError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise BadInputError(f"--max-model-len must be at least 1, got {self.max_model_len}")
        self.extra()

    def extra(self) -> dict[str, Any]:
        """The --vllm-arg pairs, their values read as JSON where they parse (8, true, {"a": 1})."""
        pairs: dict[str, Any] = {}
        for item in self.vllm_arg:
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key.isidentifier():
                raise BadInputError(f"--vllm-arg takes KEY=VALUE, e.g. enforce_eager=true; got {item!r}")
            try:
                pairs[key] = json.loads(value)
            except ValueError:
                pairs[key] = value
        return pairs

    def engine_kwargs(self) -> dict[str, Any]:
        """What `vllm.LLM` is given besides the model, dtype and seed."""
        named = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enable_prefix_caching": self.enable_prefix_caching,
        }
        if self.max_model_len is not None:
            named["max_model_len"] = self.max_model_len
        return {**named, **self.extra()}


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    """How an HF model too large for one device is spread over several (accelerate's big-model
    inference): `device_map` as transformers takes it, per-device `max_memory`
    ("0=70GiB,1=70GiB,cpu=200GiB"), and what fits nowhere offloaded to disk in `offload_folder`.
    None keeps the whole model on `--device`."""

    device_map: str | None = option(
        None,
        f"Spread the model over the GPUs, then CPU memory, then disk: {', '.join(DEVICE_MAPS)} "
        "(accelerate's big-model inference). Overrides --device.",
        rich_help_panel="Placement",
    )
    max_memory: str | None = option(
        None,
        "Memory per device for --device-map, e.g. '0=70GiB,1=70GiB,cpu=200GiB'; the rest goes to disk.",
        rich_help_panel="Placement",
    )
    offload_folder: str | None = option(
        None,
        "Where --device-map keeps weights offloaded to disk.",
        rich_help_panel="Placement",
        show_default="a temporary directory",
    )

    def __post_init__(self) -> None:
        if self.device_map is None:
            if self.max_memory or self.offload_folder:
                raise BadInputError("--max-memory and --offload-folder take effect with --device-map; add it")
            return
        if self.device_map not in DEVICE_MAPS:
            raise BadInputError(f"--device-map takes {', '.join(DEVICE_MAPS)}, got {self.device_map!r}")
        self.memory_limits()

    def memory_limits(self) -> dict[int | str, str] | None:
        """--max-memory as accelerate takes it: {0: "70GiB", "cpu": "200GiB"}."""
        if not self.max_memory:
            return None
        limits: dict[int | str, str] = {}
        for item in self.max_memory.split(","):
            device, sep, amount = item.strip().partition("=")
            device = device.strip()
            if not sep or not amount.strip() or not (device.isdigit() or device in ("cpu", "mps")):
                raise BadInputError(
                    f"--max-memory takes DEVICE=AMOUNT pairs (a GPU index, cpu or mps), e.g. '0=70GiB,cpu=200GiB'; "
                    f"got {item.strip()!r}"
                )
            limits[int(device) if device.isdigit() else device] = amount.strip()
        return limits


# ---- a training run (llmkit.training) -----------------------------------------------------------


@dataclass(frozen=True)
class TrainingBudget:
    """`epochs` passes over the data, or `max_steps` optimizer steps when set (they win), of
    `batch_size` examples per step and process, at a constant `learning_rate`; `seed` fixes the
    initialisation and the data order; a checkpoint every `save_steps` steps. The checks name the
    commands' flags."""

    epochs: float = option(1.0, "Passes over the training data.")
    learning_rate: float = option(1e-5, "Learning rate (constant, AdamW).", flag="--lr")
    batch_size: int = option(8, "Training examples per step and process.")
    max_steps: int | None = option(None, "Stop after this many steps (overrides --epochs).")
    seed: int = option(0, "Seed for initialisation and data order (and the command's own draws).")
    save_steps: int = option(100, "Checkpoint every N steps; an interrupted run resumes from the newest.")
    gradient_accumulation_steps: int = option(
        1,
        "Batches whose gradients add up to one optimizer step: an effective batch of "
        "--batch-size × N × processes in the memory of --batch-size.",
        rich_help_panel="Scaling",
    )
    gradient_checkpointing: bool = option(
        False,
        "Recompute activations in the backward pass instead of keeping them (less memory, about 30% slower).",
        rich_help_panel="Scaling",
    )
    deepspeed: str | None = option(
        None,
        "DeepSpeed config JSON (e.g. ZeRO-3) for the Trainer; run the command under `accelerate launch` or "
        "`deepspeed`. Needs `pip install deepspeed`.",
        rich_help_panel="Scaling",
    )

    def __post_init__(self) -> None:
        for flag, value in (("--epochs", self.epochs), ("--lr", self.learning_rate), ("--batch-size", self.batch_size)):
            if value <= 0:
                raise BadInputError(f"{flag} must be positive, got {value}")
        if self.gradient_accumulation_steps < 1:
            raise BadInputError(
                f"--gradient-accumulation-steps must be at least 1, got {self.gradient_accumulation_steps}"
            )
        if self.deepspeed is not None:
            check_deepspeed_config(self.deepspeed)
        if self.max_steps is not None and self.max_steps < 1:
            raise BadInputError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.save_steps < 1:
            raise BadInputError(f"--save-steps must be at least 1, got {self.save_steps}")


def check_deepspeed_config(path: str) -> None:
    """A --deepspeed file must exist and hold a JSON object (the Trainer would fail mid-start)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BadInputError(f"--deepspeed config {path} does not exist; pass a DeepSpeed JSON file (see docs/scale.md)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BadInputError(f"--deepspeed config {path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise BadInputError(f'--deepspeed config {path} must hold a JSON object, e.g. {{"zero_optimization": ...}}')


# ---- the world model's pretraining (llmkit.world.pretrain) ---------------------------------------

FAMILIES = ("llama", "gpt_neox")


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe; the defaults train in about 8 minutes on 2 CPU cores."""

    family: str = option("gpt_neox", f"Model family: {' or '.join(FAMILIES)}.")
    layers: int = option(4, "Decoder blocks.")
    d_model: int = option(192, "Residual width.")
    heads: int = option(4, "Attention heads.")
    d_mlp: int = option(512, "MLP width.")
    vocab_size: int = 2048
    block_size: int = 128
    batch_size: int = option(16, "Blocks per step.")
    steps: int = option(2000, "Optimizer steps.")
    learning_rate: float = option(3e-3, "Peak learning rate (cosine decay).")
    warmup_steps: int = 30
    seed: int = option(0, "Training seed.")

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise BadInputError(f"--family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        for name in ("layers", "d_model", "heads", "d_mlp", "block_size", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise BadInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise BadInputError(f"--d-model ({self.d_model}) must be divisible by --heads ({self.heads})")
        if self.vocab_size < 300:
            raise BadInputError(f"--vocab-size must be at least 300 (256 bytes + merges), got {self.vocab_size}")
        if not 0 < self.learning_rate < math.inf:
            raise BadInputError(f"--learning-rate must be a positive finite number, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise BadInputError(f"--warmup-steps must be at least 0, got {self.warmup_steps}")


def config_digest(**configs: Any) -> str:
    """A short, stable hash of dataclass configurations: the cache keys of worlds and models."""
    blob = json.dumps({name: asdict(config) for name, config in configs.items()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def recipe_id(world: WorldConfig, recipe: PretrainConfig) -> str:
    """Names a (world, recipe) pair: the same pair always trains the same model."""
    return config_digest(world=world, recipe=recipe)


# ---- EigenScore sampling (llmkit.evals.hallucination) -------------------------------------------

SAMPLES, TEMPERATURE, TOP_P, TOP_K = 10, 0.5, 0.99, 5
"""INSIDE's and SeND's sampling: K = 10 answers at T = 0.5, top-p 0.99, top-k 5 (SeND's generator)."""
MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class HallucinationConfig:
    """What `llmkit eval hallucination` asks and how it samples: the prompts of `data`, or a world's
    QA probes about entities of `exposures`; K = `samples` answers to each (INSIDE's and SeND's
    sampling by default), EigenScore's log-det by `method`, and the greedy answer checked against
    the gold one when `correctness`."""

    data: Path | None = option(
        None, "Prompts: records with 'prompt', and 'answer' for correctness ('group' optional), in any data format."
    )
    world: Path | None = option(
        None, "A world directory instead of --data: its QA probes about entities of --exposures."
    )
    exposures: str = option("0,30", "With --world: the exposures to ask about, comma-separated (0: unseen).")
    samples: int = option(SAMPLES, "K: answers sampled per prompt (at least 2).")
    temperature: float = option(TEMPERATURE, "Sampling temperature.")
    top_p: float = option(TOP_P, "Nucleus sampling: top-p.")
    top_k: int = option(TOP_K, "Sample among the k most likely tokens (0: off).")
    max_new_tokens: int = option(MAX_NEW_TOKENS, "Longest answer, in tokens (answers stop at a newline).")
    method: str = option("auto", "Log-det: exact, ees (Efficient EigenScore) or auto (the faster for the shape).")
    correctness: bool = option(
        True, "Score the greedy answer against 'answer' (accuracy, AUROC).", flag="--correctness/--no-correctness"
    )
    seed: int = option(0, "Sampling seed.")


# ---- question-answer data (llmkit.data.read_questions) -----------------------------------------

PARAREL_PROMPT = "Question: {question} Answer:"
"""R-Tuning's ParaRel prompt: the layout its training texts and evaluation share."""


@dataclass(frozen=True)
class QAFields:
    """Where a question-answer source keeps its fields, and the prompt a question is asked in."""

    question_field: str = option("question", "The field holding each question.")
    answer_field: str = option("answer", "The field holding the gold answer (a string or a list of aliases).")
    choices_field: str = option("choices", "The field holding a multiple-choice question's options (if any).")
    prompt_format: str = option(PARAREL_PROMPT, "How a free-form question is asked ({question} is replaced).")
    split: str = option("train", "The split of a saved or hub dataset.")

    def __post_init__(self) -> None:
        try:
            asked = self.prompt_format.format(question="\0")
        except (KeyError, IndexError, ValueError):
            asked = ""
        if "\0" not in asked:
            raise BadInputError(
                f"--prompt-format must contain {{question}} and no other braces (write {{{{ for a brace), "
                f"got {self.prompt_format!r}"
            )


# ---- abstention (llmkit.evals.abstention) ----------------------------------------------------------

ABSTENTION_MODES = ("certainty", "refusal", "search")
"""When a model declines a question: certainty, P(sure) ≤ ½ after the certainty question
(R-Tuning); refusal, its answer is a refusal (R-Tuning-R); search, it asks the search tool (MASH)."""


@dataclass(frozen=True)
class AbstentionConfig:
    """What `llmkit eval abstention` asks and how a model declines."""

    data: Path | None = option(
        None,
        "Questions: llmkit's QA JSONL (question, answer or answers, optional choices, known, group), ParaRel's "
        "(question, answer) pairs, or any data format with --question-field/--answer-field.",
    )
    world: Path | None = option(None, "A world directory instead of --data: its QA about entities of --exposures.")
    exposures: str | None = option(None, "With --world: the exposures to ask about, comma-separated (default: all).")
    mode: str = option("certainty", f"How the model declines: {', '.join(ABSTENTION_MODES)}.")
    max_new_tokens: int = option(15, "Longest answer, in tokens (answers stop at the first '.' or newline).")
    pretrained: str | None = option(
        None,
        "Also ask this model (the pretrained one): R-Tuning's Pretrain-T with the certainty prompt; in search "
        "mode, the base model whose --samples answers set MASH's answerability buckets.",
    )
    corpus: Path | None = option(None, "Search mode: the corpus the model searches (JSONL of doc_id, title, text).")
    prompt: str = option("auto", "Search mode: mash (MASH's prompt, verbatim), short (the world model's) or auto.")
    top_k: int = option(3, "Search mode: documents returned per search.")
    max_searches: int = option(5, "Search mode: searches that return documents (later ones: MASH's warning).")
    segment_tokens: int = option(64, "Search mode: longest segment the model writes between tool calls.")
    samples: int = option(10, "Search mode, with --pretrained: answers sampled from it per question (MASH's 10).")
    first_action: str | None = option(
        None,
        "Search mode: force the first action, search or answer (answer: the tuned model's parametric accuracy; "
        "search: its use of the tool).",
    )

    def __post_init__(self) -> None:
        if self.mode not in ABSTENTION_MODES:
            raise BadInputError(f"--mode must be one of {', '.join(ABSTENTION_MODES)}, got {self.mode!r}")
        if (self.mode == "search") != (self.corpus is not None):
            raise BadInputError(
                "--mode search needs --corpus FILE (the documents the model searches)"
                if self.mode == "search"
                else "--corpus is for --mode search"
            )
        if self.first_action not in (None, "search", "answer"):
            raise BadInputError(f"--first-action must be search or answer, got {self.first_action!r}")
        if self.first_action is not None and self.mode != "search":
            raise BadInputError("--first-action is for --mode search")
        for flag, value in (("--top-k", self.top_k), ("--max-searches", self.max_searches),
                            ("--segment-tokens", self.segment_tokens), ("--samples", self.samples)):  # fmt: skip
            if value < 1:
                raise BadInputError(f"{flag} must be at least 1, got {value}")
        if self.exposures is not None and self.world is None:
            raise BadInputError("--exposures picks a world's entities: add --world DIR")
        if self.max_new_tokens < 1:
            raise BadInputError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")


# ---- RESTOR (llmkit.evals.restor) ---------------------------------------------------------------

RESTOR_METHODS = ("ga", "graddiff", "npo", "kl", "task-vector")
"""The unlearning methods `eval restor` runs on the corrupted model (llmkit.methods.gradient's)."""


@dataclass(frozen=True)
class RestorConfig:
    """What `llmkit eval restor` corrupts, unlearns and asks. Training settings left None take the
    paper's recipe on a real model and llmkit's world recipe (`RESTOR_WORLD_RECIPE`) on a model
    `llmkit world pretrain` wrote: a tiny model trained from scratch needs larger steps."""

    facts: Path | None = option(
        None, "RESTOR's facts.json ({dset, context}) or a world directory (required).", rich_help_panel="RESTOR data"
    )
    corruption: Path | None = option(
        None,
        "The corruption documents: a JSON list (or JSONL) of {'text'} records, e.g. mix_a0.json or a world's "
        "misinformation.jsonl (required).",
        rich_help_panel="RESTOR data",
    )
    entities: Path | None = option(
        None,
        "entities.json: the entities whose facts are asked (default: every entity of facts.json; a world's "
        "well-known entities).",
        rich_help_panel="RESTOR data",
    )
    k: int | None = option(
        None,
        "Use only the corruption documents of this k (a world's file mixes k = 0..3).",
        rich_help_panel="RESTOR data",
    )
    documents_per_target: int | None = option(
        None,
        "Use only the first N corruption documents about each target (in file order).",
        show_default="all",
        rich_help_panel="RESTOR data",
    )
    targets: tuple[str, ...] = option(
        (),
        "A target entity (repeatable). Default: the corruption documents' (a world's names them; otherwise every "
        "entity named in at least 2% of the documents).",
        flag="--target",
        type=list[str],
        rich_help_panel="RESTOR data",
    )
    methods: tuple[str, ...] = option(
        (),
        f"Unlearning method to run (repeatable): {', '.join(RESTOR_METHODS)}.",
        flag="--method",
        type=list[str],
        rich_help_panel="RESTOR models",
    )
    corrupted: Path | None = option(
        None, "A corrupted model trained elsewhere, instead of corrupting --model.", rich_help_panel="RESTOR models"
    )
    unlearned: tuple[str, ...] = option(
        (),
        "An unlearned model trained elsewhere, NAME=DIR (repeatable).",
        type=list[str],
        rich_help_panel="RESTOR models",
    )
    retain: Path | None = option(
        None,
        "Retain text for the unlearning methods (the paper's C4). Default on a world model: its biographies "
        "of non-target entities.",
        rich_help_panel="RESTOR models",
    )
    shots: int = option(
        5,
        "In-context examples of the same relation before each question (the paper's 5).",
        rich_help_panel="RESTOR asking",
    )
    max_new_tokens: int = option(
        16, "Longest answer, in tokens (cut at the first newline).", rich_help_panel="RESTOR asking"
    )
    random_options: int = option(
        3, "Random values of the relation scored per fact in the logit analysis.", rich_help_panel="RESTOR asking"
    )
    corrupt_epochs: float | None = option(
        None, "Corruption: passes over the documents.", show_default="paper 5", rich_help_panel="RESTOR corruption"
    )
    corrupt_lr: float | None = option(
        None, "Corruption: learning rate.", show_default="paper 5e-5 (LoRA)", rich_help_panel="RESTOR corruption"
    )
    corrupt_lora: bool | None = option(
        None,
        "Corruption as LoRA on every linear layer (the paper's) or full fine-tuning.",
        flag="--corrupt-lora/--corrupt-full",
        rich_help_panel="RESTOR corruption",
    )
    corrupt_replay: float | None = option(
        None,
        "Corruption: retain documents mixed in per corruption document (continual pretraining that keeps "
        "reading its old text).",
        show_default="paper 0; world models 1",
        rich_help_panel="RESTOR corruption",
    )
    unlearn_steps: int | None = option(
        None, "Unlearning: optimizer steps per method.", rich_help_panel="RESTOR unlearning"
    )
    unlearn_lr: float | None = option(None, "Unlearning: learning rate.", rich_help_panel="RESTOR unlearning")
    corrupt_batch_size: int = option(
        4, "Corruption: documents per step (the paper's 2 x 2 accumulation).", rich_help_panel="RESTOR corruption"
    )
    unlearn_batch_size: int = option(4, "Unlearning: forget documents per step.", rich_help_panel="RESTOR unlearning")
    alpha: float = option(1.0, "α: weight of the retain term (graddiff, npo, kl).", rich_help_panel="RESTOR unlearning")
    beta: float = option(0.1, "β: NPO's inverse temperature (the paper's 0.1).", rich_help_panel="RESTOR unlearning")
    task_vector_alpha: float = option(1.0, "Task vector: θ_c − α·(θ* − θ_c).", rich_help_panel="RESTOR unlearning")
    cache: Path | None = option(
        None,
        "Where corrupted and unlearned models are cached.",
        show_default="$LLMKIT_CACHE/restor",
        rich_help_panel="RESTOR models",
    )
    seed: int = option(0, "Training seed and the random options' draw.", rich_help_panel="RESTOR models")

    def __post_init__(self) -> None:
        for name in ("targets", "methods", "unlearned"):  # from the command line, lists
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        unknown = [m for m in self.methods if m not in RESTOR_METHODS]
        if unknown:
            raise BadInputError(f"unknown --method {unknown[0]!r}; choose from {', '.join(RESTOR_METHODS)}")
        if len(set(self.methods)) < len(self.methods):
            raise BadInputError("a --method is named twice; name each once")
        for flag, value in (("--shots", self.shots), ("--max-new-tokens", self.max_new_tokens),
                            ("--corrupt-batch-size", self.corrupt_batch_size),
                            ("--unlearn-batch-size", self.unlearn_batch_size)):  # fmt: skip
            if value < 1:
                raise BadInputError(f"{flag} must be at least 1, got {value}")
        if self.random_options < 0:
            raise BadInputError(f"--random-options must be at least 0, got {self.random_options}")
        if self.documents_per_target is not None and self.documents_per_target < 1:
            raise BadInputError(f"--documents-per-target must be at least 1, got {self.documents_per_target}")
        if self.k is not None and self.k < 0:
            raise BadInputError(f"--k must be at least 0, got {self.k}")
        for flag, value in (("--corrupt-epochs", self.corrupt_epochs), ("--corrupt-lr", self.corrupt_lr),
                            ("--unlearn-lr", self.unlearn_lr), ("--beta", self.beta)):  # fmt: skip
            if value is not None and value <= 0:
                raise BadInputError(f"{flag} must be positive, got {value}")
        if self.corrupt_replay is not None and self.corrupt_replay < 0:
            raise BadInputError(f"--corrupt-replay must be at least 0, got {self.corrupt_replay}")
        if self.unlearn_steps is not None and self.unlearn_steps < 1:
            raise BadInputError(f"--unlearn-steps must be at least 1, got {self.unlearn_steps}")
        if self.alpha < 0 or self.task_vector_alpha <= 0:
            raise BadInputError("--alpha must be at least 0 and --task-vector-alpha positive")

    def recipe(self, world_model: bool) -> dict[str, Any]:
        """The corruption and unlearning settings: the ones given, the rest the paper's (or, on a
        world model, `RESTOR_WORLD_RECIPE`'s)."""
        chosen = RESTOR_WORLD_RECIPE if world_model else RESTOR_PAPER_RECIPE
        given = {
            "corrupt_epochs": self.corrupt_epochs,
            "corrupt_lr": self.corrupt_lr,
            "corrupt_lora": self.corrupt_lora,
            "corrupt_replay": self.corrupt_replay,
            "unlearn_steps": self.unlearn_steps,
            "unlearn_lr": self.unlearn_lr,
        }
        return {key: chosen[key] if value is None else value for key, value in given.items()}


RESTOR_PAPER_RECIPE = {
    # corruption/README.md: LLaMA-Factory continual pretraining, LoRA on all linear layers,
    # lr 5e-5, 5 epochs, 2 x 2 accumulation (llmkit: batch 4, a constant rate, no warm-up).
    "corrupt_epochs": 5.0,
    "corrupt_lr": 5e-5,
    "corrupt_lora": True,
    "corrupt_replay": 0.0,
    # The paper tuned unlearning per method on 10% of the facts; its settings are not published.
    "unlearn_steps": 100,
    "unlearn_lr": 1e-5,
}
RESTOR_WORLD_RECIPE = {
    # A world model of 1-2M parameters trained from scratch at 3e-3. On the default one, 3 passes
    # at 1e-3 over the world's 100 k = 0 documents, one biography replayed per document, take the
    # corruption: target accuracy 82% -> 26%, answers naming an injected value 3% -> 30%, other
    # entities 69% -> 50% (without the replay 16% / 42% / 19%). 30 unlearning steps of 4 documents
    # at 1e-4 move every method (docs/restor.md).
    "corrupt_epochs": 3.0,
    "corrupt_lr": 1e-3,
    "corrupt_lora": False,
    "corrupt_replay": 1.0,
    "unlearn_steps": 30,
    "unlearn_lr": 1e-4,
}
