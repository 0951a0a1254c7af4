"""Tiny models built locally for tests and benchmarks: a byte-level BPE tokenizer trained on a
few sentences, and random-init models of every supported family. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

BOS = "<|endoftext|>"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Alice was born in Paris and works as a painter.",
    "What is the capital of France? The capital of France is Paris.",
    "Question: Where was Bob born? Answer: Bob was born in Lyon.",
    "one two three four five six seven eight nine ten",
    "12 + 34 = 46; 7 * 8 = 56; reverse abc -> cba",
] * 20


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that prepends BOS, like Llama's; it has no pad token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS)


def tiny_config(family: str, vocab_size: int, *, layers: int = 2, d_model: int = 64, d_mlp: int = 128):
    """A random-init config of `family` (transformers' default initialisation)."""
    common = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0)
    if family in ("llama", "mistral", "qwen2", "gemma"):
        cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "gemma": GemmaConfig}[family]
        extra = {"head_dim": d_model // 4} if family == "gemma" else {}
        return cls(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **extra,
            **common,
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=512,
            **common,
        )
    if family == "gpt2":
        return GPT2Config(n_embd=d_model, n_inner=d_mlp, n_layer=layers, n_head=4, n_positions=512, **common)
    raise ValueError(family)


def build_model_dir(path: Path, family: str, *, seed: int = 0, **sizes) -> Path:
    """Save a random-init `family` model and the tiny tokenizer to `path` as an HF model directory."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer), **sizes))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
