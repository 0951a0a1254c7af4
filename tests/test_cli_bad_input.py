"""Bad input to every command, one thing broken per case: exit code 2, exactly one stderr line
starting `error: ` (naming what is wrong), nothing on stdout, and the file system exactly as it
was, the models, the world and the cache included.

Each case starts from a valid, small invocation of its command (`BASE`) and breaks one thing:
an option's value (negative, zero, out of range, nan, inf, the wrong type), a missing required
option, a missing, empty, non-UTF-8 or wrongly shaped file, an output that exists. Every case is
detected before any slow work, so the whole matrix runs in well under a minute."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TINY_RECIPE, assert_refused, llmkit, tree_snapshot
from llmkit.data import read_records
from tiny import CORPUS

BASE = {
    "generate": ["generate", "-m", "@llama", "-i", "@prompts", "-o", "@out", "--max-new-tokens", "2"],
    "inspect": ["model", "inspect", "-m", "@llama", "--device", "cpu"],
    "build": ["world", "build", "--out", "@out", "--entities", "5"],
    "pretrain": ["world", "pretrain", "@world", "--out", "@out", *TINY_RECIPE, "--steps", "2"],
    "forget-set": ["data", "forget-set", "--world", "@world", "--target", "@target", "--out", "@out"],
    "skill-set": ["data", "skill-set", "--world", "@world", "--skill", "@skill", "--out", "@out"],
    "sft": [
        "train",
        "sft",
        "-m",
        "@llama",
        "--data",
        "@texts",
        "--out",
        "@out",
        "--epochs",
        "1",
        "--eval-samples",
        "0",
        "--batch-size",
        "4",
    ],
    "send": [
        "train",
        "send",
        "-m",
        "@llama",
        "--data",
        "@texts",
        "--out",
        "@out",
        "--epochs",
        "2",
        "--window",
        "2",
        "--drop-epochs",
        "1",
        "--eval-samples",
        "0",
        "--track-fraction",
        "0.2",
        "--batch-size",
        "4",
    ],
    "rocr": [
        "unlearn",
        "rocr",
        "-m",
        "@llama",
        "--target",
        "Alice",
        "--redirect",
        "Bob",
        "--out",
        "@out",
        "--layers",
        "0,1",
        "--stats-corpus",
        "@corpus",
        "--stats-cache",
        "@stats",
        "--device",
        "cpu",
    ],
    "revert": ["unlearn", "revert", "@edited", "--out", "@out"],
    "ksd": ["unlearn", "ksd", "-m", "@llama", "--forget", "@forget", "--out", "@out", "--device", "cpu"],
    "neuron-adjust": [
        "unlearn",
        "neuron-adjust",
        "-m",
        "@llama",
        "--forget",
        "@forget",
        "--retain",
        "@retain",
        "--out",
        "@out",
        "--device",
        "cpu",
    ],
    "ort": [
        "eval",
        "ort",
        "-m",
        "@micro",
        "--probes",
        "@world",
        "--targets",
        "@target",
        "--forms",
        "qa",
        "--limit",
        "1",
        "-o",
        "@out",
    ],
    "skills": ["eval", "skills", "-m", "@llama", "--skill", "s=@items", "--limit", "1", "-o", "@out"],
    "hallucination": [
        "eval",
        "hallucination",
        "-m",
        "@llama",
        "--data",
        "@items",
        "--samples",
        "2",
        "--max-new-tokens",
        "2",
        "--limit",
        "1",
        "-o",
        "@out",
        "--device",
        "cpu",
    ],
    "quickstart": ["quickstart", "--preset", "micro", "--cache-dir", "@cache", "-o", "@out"],
}
for _method in ("ga", "graddiff", "npo", "simnpo", "kl", "rt", "dpo", "task-vector"):
    BASE[_method] = [
        "unlearn",
        _method,
        "-m",
        "@llama",
        "--forget",
        "@forget",
        "--out",
        "@out",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        *(["--retain", "@retain"] if _method in ("graddiff", "kl") else []),
    ]


@dataclass
class Case:
    id: str
    base: str
    extra: list[str] = field(default_factory=list)
    needle: str | None = None
    """A fragment the error line must hold (case-insensitive): the option or the file at fault."""
    drop: list[str] = field(default_factory=list)
    """Options (with their value) or positional placeholders removed from the base first."""
    swap: dict[str, str] = field(default_factory=dict)
    """Placeholders of the base replaced by others (a positional argument's value)."""


def C(id, base, extra=(), needle=None, drop=(), swap=None):
    return Case(id, base, list(extra), needle, list(drop), dict(swap or {}))


CASES = [
    # generate
    C("generate-max-new-tokens-zero", "generate", ["--max-new-tokens", "0"], "--max-new-tokens"),
    C("generate-max-new-tokens-negative", "generate", ["--max-new-tokens", "-5"], "--max-new-tokens"),
    C("generate-max-new-tokens-word", "generate", ["--max-new-tokens", "two"], "--max-new-tokens"),
    C("generate-temperature-negative", "generate", ["--temperature", "-1"], "--temperature"),
    C("generate-temperature-nan", "generate", ["--temperature", "nan"], "--temperature"),
    C("generate-top-p-zero", "generate", ["--temperature", "1", "--top-p", "0"], "--top-p"),
    C("generate-top-p-two", "generate", ["--top-p", "2"], "--top-p"),
    C("generate-top-p-inf", "generate", ["--top-p", "inf"], "--top-p"),
    C("generate-num-samples-zero", "generate", ["--num-samples", "0"], "--num-samples"),
    C("generate-batch-size-zero", "generate", ["--batch-size", "0"], "--batch-size"),
    C("generate-batch-size-word", "generate", ["--batch-size", "many"], "--batch-size"),
    C("generate-limit-negative", "generate", ["--limit", "-1"], "--limit"),
    C("generate-dtype-unknown", "generate", ["--dtype", "float8"], "float8"),
    C("generate-device-unknown", "generate", ["--device", "tpu"], "tpu"),
    C("generate-backend-unknown", "generate", ["--backend", "onnx"], "onnx"),
    C("generate-stop-empty", "generate", ["--stop", ""], "--stop"),
    C("generate-seed-word", "generate", ["--seed", "x"], "--seed"),
    C("generate-input-missing", "generate", ["-i", "@missing_jsonl"], "missing.jsonl"),
    C("generate-input-empty", "generate", ["-i", "@empty"], "empty.jsonl"),
    C("generate-input-binary", "generate", ["-i", "@binary"], "UTF-8"),
    C("generate-input-latin1-csv", "generate", ["-i", "@latin1"], "UTF-8"),
    C("generate-input-records-not-objects", "generate", ["-i", "@notobj"], "notobj.jsonl"),
    C("generate-input-prompt-not-a-string", "generate", ["-i", "@wrongtype"], "'prompt'"),
    C("generate-input-json-not-a-list", "generate", ["-i", "@dictjson"], "dict.json"),
    C("generate-input-no-prompt-field", "generate", ["-i", "@nofield"], "'prompt'"),
    C("generate-input-unknown-suffix", "generate", ["-i", "@xml"], ".xml"),
    C("generate-prompt-field-absent", "generate", ["--prompt-field", "question"], "'question'"),
    C("generate-model-missing", "generate", ["-m", "@missing_dir"], "does not exist"),
    C("generate-model-not-a-model", "generate", ["-m", "@emptydir"], "config.json"),
    C("generate-model-a-file", "generate", ["-m", "@afile"], "a_file.txt"),
    C("generate-output-exists", "generate", ["-o", "@existing"], "--overwrite"),
    C("generate-output-a-file", "generate", ["-o", "@afile"], "a_file.txt"),
    C("generate-output-users-directory", "generate", ["-o", "@mine", "--overwrite"], "mine"),
    C("generate-json-without-output", "generate", ["--json"], "--json", drop=["-o"]),
    C("generate-intervention-missing", "generate", ["--intervention", "@missing_dir"], "nowhere"),
    C("generate-intervention-not-an-artifact", "generate", ["--intervention", "@emptydir"], "intervention"),
    C("generate-no-model", "generate", needle="--model", drop=["-m"]),
    C("generate-no-input", "generate", needle="--input", drop=["-i"]),
    C("generate-unknown-option", "generate", ["--bogus"], "--bogus"),
    # model inspect
    C("inspect-model-missing", "inspect", ["-m", "@missing_dir"], "does not exist"),
    C("inspect-model-a-file", "inspect", ["-m", "@afile"], "a_file.txt"),
    C("inspect-dtype-unknown", "inspect", ["--dtype", "int3"], "int3"),
    C("inspect-no-model", "inspect", needle="--model", drop=["-m"]),
    # world build
    C("build-entities-zero", "build", ["--entities", "0"], "--entities"),
    C("build-entities-negative", "build", ["--entities", "-3"], "--entities"),
    C("build-entities-word", "build", ["--entities", "many"], "--entities"),
    C("build-exposures-word", "build", ["--exposures", "0,x"], "--exposures"),
    C("build-exposures-negative", "build", ["--exposures", "-1,3"], "--exposures"),
    C("build-exposures-empty", "build", ["--exposures", ""], "--exposures"),
    C("build-seed-word", "build", ["--seed", "x"], "--seed"),
    C("build-out-exists", "build", ["--out", "@existing"], "--overwrite"),
    C("build-out-a-file", "build", ["--out", "@afile"], "a_file.txt"),
    C("build-no-out", "build", needle="--out", drop=["--out"]),
    # world pretrain
    C("pretrain-not-a-world", "pretrain", needle="world.json", swap={"@world": "@emptydir"}),
    C("pretrain-world-missing", "pretrain", needle="nowhere", swap={"@world": "@missing_dir"}),
    C("pretrain-no-world", "pretrain", needle="world", drop=["@world"]),
    C("pretrain-steps-zero", "pretrain", ["--steps", "0"], "--steps"),
    C("pretrain-layers-zero", "pretrain", ["--layers", "0"], "--layers"),
    C("pretrain-heads-zero", "pretrain", ["--heads", "0"], "--heads"),
    C("pretrain-d-model-indivisible", "pretrain", ["--d-model", "30", "--heads", "4"], "--d-model"),
    C("pretrain-d-mlp-zero", "pretrain", ["--d-mlp", "0"], "--d-mlp"),
    C("pretrain-batch-size-zero", "pretrain", ["--batch-size", "0"], "--batch-size"),
    C("pretrain-learning-rate-negative", "pretrain", ["--learning-rate", "-0.1"], "--learning-rate"),
    C("pretrain-learning-rate-nan", "pretrain", ["--learning-rate", "nan"], "--learning-rate"),
    C("pretrain-family-unknown", "pretrain", ["--family", "gpt2"], "--family"),
    C("pretrain-out-exists", "pretrain", ["--out", "@existing"], "--overwrite"),
    # data forget-set, skill-set
    C("forget-set-unknown-target", "forget-set", ["--target", "Nobody Atall"], "Nobody Atall"),
    C("forget-set-unknown-form", "forget-set", ["--form", "essay"], "essay"),
    C("forget-set-not-a-world", "forget-set", ["--world", "@emptydir"], "empty-dir"),
    C("forget-set-out-exists", "forget-set", ["--out", "@existing"], "--overwrite"),
    C("forget-set-no-target", "forget-set", needle="--target", drop=["--target"]),
    C("skill-set-unknown-skill", "skill-set", ["--skill", "juggling"], "juggling"),
    C("skill-set-not-a-world", "skill-set", ["--world", "@emptydir"], "empty-dir"),
    C("skill-set-out-exists", "skill-set", ["--out", "@existing"], "--overwrite"),
    # train sft, send
    C("sft-data-missing", "sft", ["--data", "@missing_jsonl"], "missing.jsonl"),
    C("sft-data-empty", "sft", ["--data", "@empty"], "empty.jsonl"),
    C("sft-data-binary", "sft", ["--data", "@binary"], "UTF-8"),
    C("sft-text-field-absent", "sft", ["--text-field", "body"], "--text-field"),
    C("sft-epochs-zero", "sft", ["--epochs", "0"], "--epochs"),
    C("sft-lr-nan", "sft", ["--lr", "nan"], "--lr"),
    C("sft-batch-size-zero", "sft", ["--batch-size", "0"], "--batch-size"),
    C("sft-max-length-one", "sft", ["--max-length", "1"], "--max-length"),
    C("sft-eval-samples-one", "sft", ["--eval-samples", "1"], "--eval-samples"),
    C("sft-eval-prompts-missing", "sft", ["--eval-samples", "2", "--eval-prompts", "@missing_jsonl"], "missing.jsonl"),
    C("sft-save-steps-zero", "sft", ["--save-steps", "0"], "--save-steps"),
    C("sft-track-fraction-above-one", "sft", ["--track-fraction", "1.5"], "--track-fraction"),
    C("sft-test-fraction-negative", "sft", ["--test-fraction", "-0.1"], "--test-fraction"),
    C("sft-lora-rank-zero", "sft", ["--lora", "--lora-rank", "0"], "--lora-rank"),
    C("sft-out-exists", "sft", ["--out", "@existing"], "--overwrite"),
    C("sft-no-data", "sft", needle="--data", drop=["--data"]),
    C("send-drop-fraction-zero", "send", ["--drop-fraction", "0"], "--drop-fraction"),
    C("send-drop-fraction-above-one", "send", ["--drop-fraction", "1.5"], "--drop-fraction"),
    C("send-window-one", "send", ["--window", "1"], "--window"),
    C("send-drop-epochs-zero", "send", ["--drop-epochs", "0"], "--drop-epochs"),
    C("send-drop-target-unknown", "send", ["--drop-target", "attn"], "--drop-target"),
    C("send-eval-prompts-binary", "send", ["--eval-samples", "2", "--eval-prompts", "@binary"], "UTF-8"),
    C("send-prompt-tokens-zero", "send", ["--prompt-tokens", "0"], "--prompt-tokens"),
    # unlearn rocr, revert
    C("rocr-target-is-the-redirect", "rocr", ["--redirect", "Alice"], "Alice", drop=["--redirect"]),
    C("rocr-layers-out-of-range", "rocr", ["--layers", "5,6"], "--layers"),
    C("rocr-layers-word", "rocr", ["--layers", "a-b"], "--layers"),
    C("rocr-lambda-negative", "rocr", ["--lambda", "-1"], "--lambda"),
    C("rocr-lambda-inf", "rocr", ["--lambda", "inf"], "--lambda"),
    C("rocr-preserve-unknown", "rocr", ["--preserve", "rome"], "rome"),
    C("rocr-stats-tokens-zero", "rocr", ["--stats-tokens", "0"], "--stats-tokens"),
    C("rocr-stats-corpus-missing", "rocr", ["--stats-corpus", "@missing_txt"], "missing.txt"),
    C("rocr-stats-corpus-blank", "rocr", ["--stats-corpus", "@blank"], "no text"),
    C("rocr-stats-corpus-binary", "rocr", ["--stats-corpus", "@binary_txt"], "UTF-8"),
    C("rocr-stats-cache-a-file", "rocr", ["--stats-cache", "@afile"], "--stats-cache"),
    C("rocr-contexts-missing", "rocr", ["--contexts", "@missing_txt"], "--contexts"),
    C("rocr-contexts-without-placeholder", "rocr", ["--contexts", "@badcontexts"], "--contexts"),
    C("rocr-chat-template-unknown", "rocr", ["--chat-template", "yes"], "--chat-template"),
    C("rocr-subject-token-unknown", "rocr", ["--subject-token", "middle"], "--subject-token"),
    C("rocr-nullspace-threshold-negative", "rocr", ["--nullspace-threshold", "-1"], "--nullspace-threshold"),
    C("rocr-out-exists", "rocr", ["--out", "@existing"], "--overwrite"),
    C("rocr-no-target", "rocr", needle="--target", drop=["--target"]),
    C("revert-not-an-edit", "revert", needle="rocr", swap={"@edited": "@llama"}),
    C("revert-edit-missing", "revert", needle="nowhere", swap={"@edited": "@missing_dir"}),
    C("revert-damaged-record", "revert", needle="rocr.json", swap={"@edited": "@badedit"}),
    C("revert-out-exists", "revert", ["--out", "@existing"], swap={"@edited": "@badedit"}),
    C("revert-no-out", "revert", needle="--out", drop=["--out"], swap={"@edited": "@badedit"}),
    # unlearn ksd, neuron-adjust
    C("ksd-alpha-negative", "ksd", ["--alpha", "-1"], "--alpha"),
    C("ksd-alpha-nan", "ksd", ["--alpha", "nan"], "--alpha"),
    C("ksd-layer-out-of-range", "ksd", ["--layer", "9"], "--layer"),
    C("ksd-positions-unknown", "ksd", ["--positions", "middle"], "--positions"),
    C("ksd-batch-size-zero", "ksd", ["--batch-size", "0"], "--batch-size"),
    C("ksd-chat-template-unknown", "ksd", ["--chat-template", "yes"], "--chat-template"),
    C("ksd-forget-empty", "ksd", ["--forget", "@empty"], "empty.jsonl"),
    C("ksd-forget-missing", "ksd", ["--forget", "@missing_jsonl"], "missing.jsonl"),
    C("ksd-forget-binary", "ksd", ["--forget", "@binary"], "UTF-8"),
    C("ksd-no-forget", "ksd", needle="--forget", drop=["--forget"]),
    C("neuron-adjust-fraction-zero", "neuron-adjust", ["--fraction", "0"], "--fraction"),
    C("neuron-adjust-fraction-above-one", "neuron-adjust", ["--fraction", "1.5"], "--fraction"),
    C("neuron-adjust-fraction-nan", "neuron-adjust", ["--fraction", "nan"], "--fraction"),
    C("neuron-adjust-batch-size-zero", "neuron-adjust", ["--batch-size", "0"], "--batch-size"),
    C("neuron-adjust-no-retain", "neuron-adjust", needle="--retain", drop=["--retain"]),
    C("neuron-adjust-retain-empty", "neuron-adjust", ["--retain", "@empty"], "empty.jsonl"),
    # the gradient methods
    C("ga-lr-nan", "ga", ["--lr", "nan"], "--lr"),
    C("ga-lr-inf", "ga", ["--lr", "inf"], "--lr"),
    C("ga-epochs-zero", "ga", ["--epochs", "0"], "--epochs", drop=["--max-steps"]),
    C("ga-epochs-negative", "ga", ["--epochs", "-1"], "--epochs", drop=["--max-steps"]),
    C("ga-epochs-nan", "ga", ["--epochs", "nan"], "--epochs"),
    C("ga-batch-size-zero", "ga", ["--batch-size", "0"], "--batch-size"),
    C("ga-max-steps-zero", "ga", ["--max-steps", "0"], "--max-steps"),
    C("ga-save-steps-zero", "ga", ["--save-steps", "0"], "--save-steps"),
    C("ga-lora-rank-zero", "ga", ["--lora", "--lora-rank", "0"], "--lora-rank"),
    C("ga-forget-missing", "ga", ["--forget", "@missing_jsonl"], "missing.jsonl"),
    C("ga-forget-binary", "ga", ["--forget", "@binary"], "UTF-8"),
    C("ga-forget-empty", "ga", ["--forget", "@empty"], "empty.jsonl"),
    C("ga-forget-no-text", "ga", ["--forget", "@nofield"], "'text'"),
    C("ga-out-exists", "ga", ["--out", "@existing"], "--overwrite"),
    C("ga-checkpoint-dir-a-file", "ga", ["--checkpoint-dir", "@afile"], "a_file.txt"),
    C("ga-has-no-alpha", "ga", ["--alpha", "1"], "--alpha"),
    C("ga-no-forget", "ga", needle="--forget", drop=["--forget"]),
    C("graddiff-no-retain", "graddiff", needle="--retain", drop=["--retain"]),
    C("graddiff-alpha-negative", "graddiff", ["--alpha", "-1"], "--alpha"),
    C("graddiff-alpha-nan", "graddiff", ["--alpha", "nan"], "--alpha"),
    C("kl-no-retain", "kl", needle="--retain", drop=["--retain"]),
    C("npo-beta-zero", "npo", ["--beta", "0"], "--beta"),
    C("npo-beta-negative", "npo", ["--beta", "-0.1"], "--beta"),
    C("simnpo-beta-inf", "simnpo", ["--beta", "inf"], "--beta"),
    C("simnpo-gamma-nan", "simnpo", ["--gamma", "nan"], "--gamma"),
    C("rt-passages", "rt", ["--forget", "@texts"], "questions"),
    C("dpo-passages", "dpo", ["--forget", "@texts"], "questions"),
    C("dpo-beta-zero", "dpo", ["--beta", "0"], "--beta"),
    C("task-vector-alpha-inf", "task-vector", ["--alpha", "inf"], "--alpha"),
    # eval ort, skills, hallucination
    C("ort-probes-missing", "ort", ["--probes", "@missing_dir"], "nowhere"),
    C("ort-world-without-targets", "ort", needle="--targets", drop=["--targets"]),
    C("ort-target-unknown", "ort", ["--targets", "Nobody Atall"], "Nobody Atall", drop=["--targets"]),
    C("ort-form-unknown", "ort", ["--forms", "qa,essay"], "essay"),
    C("ort-limit-zero", "ort", ["--limit", "0"], "--limit"),
    C("ort-baseline-missing", "ort", ["--baseline", "@missing_dir"], "--baseline"),
    C("ort-baseline-a-list", "ort", ["--baseline", "@junkbaseline"], "--baseline"),
    C("ort-fail-over-without-value", "ort", ["--fail-over", "forget.qa.prob"], "--fail-over"),
    C("ort-fail-under-not-a-number", "ort", ["--fail-under", "forget.qa.prob=high"], "--fail-under"),
    C("ort-chat-template-unknown", "ort", ["--chat-template", "yes"], "--chat-template"),
    C("ort-plot-without-output", "ort", ["--plot"], "--plot", drop=["-o"]),
    C("ort-batch-size-zero", "ort", ["--batch-size", "0"], "--batch-size"),
    C("ort-backend-unknown", "ort", ["--backend", "onnx"], "onnx"),
    C("ort-out-exists", "ort", ["-o", "@existing"], "--overwrite"),
    C("ort-intervention-not-an-artifact", "ort", ["--intervention", "@emptydir"], "intervention"),
    C("skills-no-items", "skills", needle="--world", drop=["--skill"]),
    C("skills-world-and-skill", "skills", ["--world", "@world"], "--world"),
    C("skills-skill-without-file", "skills", ["--skill", "nofile"], "NAME=FILE", drop=["--skill"]),
    C("skills-skill-file-missing", "skills", ["--skill", "s=@missing_jsonl"], "missing.jsonl", drop=["--skill"]),
    C("skills-skill-file-binary", "skills", ["--skill", "s=@binary"], "UTF-8", drop=["--skill"]),
    C("skills-skill-without-answers", "skills", ["--skill", "s=@prompts"], "answer", drop=["--skill"]),
    C("skills-limit-zero", "skills", ["--limit", "0"], "--limit"),
    C("skills-baseline-a-list", "skills", ["--baseline", "@junkbaseline"], "--baseline"),
    C("skills-out-exists", "skills", ["-o", "@existing"], "--overwrite"),
    C("skills-plot-without-output", "skills", ["--plot"], "--plot", drop=["-o"]),
    C("hallucination-one-sample", "hallucination", ["--samples", "1"], "--samples"),
    C("hallucination-method-unknown", "hallucination", ["--method", "svd"], "svd"),
    C("hallucination-temperature-nan", "hallucination", ["--temperature", "nan"], "--temperature"),
    C("hallucination-temperature-negative", "hallucination", ["--temperature", "-0.5"], "--temperature"),
    C("hallucination-top-p-two", "hallucination", ["--top-p", "2"], "--top-p"),
    C("hallucination-top-k-negative", "hallucination", ["--top-k", "-1"], "--top-k"),
    C("hallucination-max-new-tokens-zero", "hallucination", ["--max-new-tokens", "0"], "--max-new-tokens"),
    C("hallucination-no-prompts", "hallucination", needle="--data", drop=["--data"]),
    C("hallucination-data-and-world", "hallucination", ["--world", "@world"], "--world"),
    C("hallucination-data-binary", "hallucination", ["--data", "@binary"], "UTF-8"),
    C("hallucination-data-without-answers", "hallucination", ["--data", "@prompts"], "answer"),
    C(
        "hallucination-exposures-word",
        "hallucination",
        ["--world", "@world", "--exposures", "x"],
        "--exposures",
        drop=["--data"],
    ),
    C("hallucination-out-exists", "hallucination", ["-o", "@existing"], "--overwrite"),
    # quickstart
    C("quickstart-preset-unknown", "quickstart", ["--preset", "huge"], "huge"),
    C("quickstart-out-exists", "quickstart", ["-o", "@existing"], "--overwrite"),
    C("quickstart-output-users-directory", "quickstart", ["-o", "@mine", "--overwrite"], "mine"),
    C("quickstart-cache-dir-a-file", "quickstart", ["--cache-dir", "@afile"], "a_file.txt"),
]


def jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def places(tmp_path, llama_dir, micro_world, micro_model, world_cache):
    """Placeholder -> value: the session's models and world, and small files made here."""
    binary = b"\xff\xfe\x00bad\x80\n"
    (tmp_path / "binary.jsonl").write_bytes(binary)
    (tmp_path / "binary.txt").write_bytes(binary * 3)
    (tmp_path / "latin1.csv").write_bytes("prompt\ncafé crème\n".encode("latin-1"))
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.txt").write_text("\n \n\n")
    (tmp_path / "notobj.jsonl").write_text("[1, 2]\n")
    (tmp_path / "dict.json").write_text('{"a": 1, "b": 2}')
    (tmp_path / "prompts.xml").write_text("<prompts/>")
    (tmp_path / "a_file.txt").write_text("just a file")
    (tmp_path / "contexts.txt").write_text("no placeholder here\n")
    jsonl(tmp_path / "wrongtype.jsonl", [{"prompt": 5}])
    jsonl(tmp_path / "nofield.jsonl", [{"question": "Who?", "reply": "Bob"}])
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "results.json").write_text("{}")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    (tmp_path / "junk-baseline").mkdir()
    (tmp_path / "junk-baseline" / "results.json").write_text("[1, 2, 3]")
    (tmp_path / "bad-edit").mkdir()
    (tmp_path / "bad-edit" / "rocr.json").write_text("{not json")
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    entities = read_records(micro_world / "entities.jsonl")
    skills = list(dict.fromkeys(item["skill"] for item in read_records(micro_world / "skills.jsonl")))
    values = {
        "llama": llama_dir,
        "micro": micro_model,
        "world": micro_world,
        "cache": world_cache,
        "target": next(e["name"] for e in entities if e["exposure"] == 30),
        "skill": skills[0],
        "out": tmp_path / "out",
        "stats": tmp_path / "stats",
        "edited": tmp_path / "bad-edit",
        "prompts": jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Alice was born in"}, {"prompt": "12 +"}]),
        "items": jsonl(
            tmp_path / "items.jsonl",
            [{"prompt": "12 +", "answer": "34"}, {"prompt": "Alice was born in", "answer": "Paris"}],
        ),
        "forget": jsonl(
            tmp_path / "forget.jsonl",
            [{"prompt": "Where was Bob born?", "answer": "Lyon"}, {"prompt": "12 +", "answer": "34"}],
        ),
        "retain": jsonl(tmp_path / "retain.jsonl", [{"prompt": "What is the capital of France?", "answer": "Paris"}]),
        "texts": jsonl(tmp_path / "texts.jsonl", [{"text": f"{t} ({i})"} for i, t in enumerate(CORPUS[:6] * 4)]),
        "corpus": tmp_path / "corpus.txt",
        "binary": tmp_path / "binary.jsonl",
        "binary_txt": tmp_path / "binary.txt",
        "latin1": tmp_path / "latin1.csv",
        "empty": tmp_path / "empty.jsonl",
        "blank": tmp_path / "blank.txt",
        "notobj": tmp_path / "notobj.jsonl",
        "dictjson": tmp_path / "dict.json",
        "xml": tmp_path / "prompts.xml",
        "wrongtype": tmp_path / "wrongtype.jsonl",
        "nofield": tmp_path / "nofield.jsonl",
        "afile": tmp_path / "a_file.txt",
        "badcontexts": tmp_path / "contexts.txt",
        "emptydir": tmp_path / "empty-dir",
        "existing": tmp_path / "existing",
        "mine": tmp_path / "mine",
        "junkbaseline": tmp_path / "junk-baseline",
        "badedit": tmp_path / "bad-edit",
        "missing_jsonl": tmp_path / "missing.jsonl",
        "missing_txt": tmp_path / "missing.txt",
        "missing_dir": tmp_path / "nowhere",
    }
    return {name: str(value) for name, value in values.items()}


def build_args(case: Case, places: dict[str, str]) -> list[str]:
    args = [case.swap.get(a, a) for a in BASE[case.base]]
    for option in case.drop:
        if option.startswith("@"):
            args.remove(option)
        else:
            i = args.index(option)
            del args[i : i + 2]
    return [re.sub(r"@(\w+)", lambda m: places[m.group(1)], a) for a in args + case.extra]


def test_the_matrix_is_large_and_every_command_is_in_it():
    assert len(CASES) >= 90 and len({c.id for c in CASES}) == len(CASES)
    assert {c.base for c in CASES} == set(BASE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(
    case, places, tmp_path, model_dirs, micro_world, micro_model, world_cache, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # anything written relative to the current directory shows in the snapshot
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "llmkit-cache"))
    roots = (tmp_path, Path(model_dirs["llama"]).parent, world_cache, micro_world, micro_model)
    before = tree_snapshot(*roots)
    result = llmkit(*build_args(case, places))
    assert_refused(result, *([case.needle] if case.needle else []), before=before, roots=roots)
