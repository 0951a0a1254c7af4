"""Pretrain a tiny model on a world from scratch: a byte-level BPE tokenizer trained on the world's
text, then a small Llama (or GPT-NeoX) trained through transformers' Trainer, saved as an ordinary
HF model directory that loads with `AutoModelForCausalLM` without llmkit."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, GPTNeoXConfig, LlamaConfig, PreTrainedTokenizerFast, TrainingArguments

from llmkit.configs import FAMILIES as FAMILIES  # re-exported
from llmkit.configs import PretrainConfig, recipe_id
from llmkit.configs import config_digest as config_digest  # re-exported
from llmkit.data import read_records
from llmkit.results import check_output_path, staged_directory, versions
from llmkit.training import build_trainer, check_finite_weights
from llmkit.world.facts import FactsWorldConfig
from llmkit.world.generator import read_world_config, world_digest

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE that splits digits one by one (so numbers are read digit by digit, not arbitrary
    merges) and prepends BOS to every text."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def pack_documents(
    token_ids: list[list[int]], block_size: int, pad_id: int, about: list[list[str]] | None = None, open_blocks: int = 8
) -> dict[str, list[list[int]]]:
    """Greedy packing of whole documents into blocks (a document longer than a block is split);
    padding is masked out of attention and loss. With `about` (the entities each document is
    about), no block holds two documents about one entity: the model could copy a fact from the
    earlier one instead of recalling it (Physics of Language Models, Part 3.1). A document goes to
    the first of the last `open_blocks` blocks that has room and shares no entity with it."""
    about = about or [[] for _ in token_ids]
    blocks: list[tuple[list[int], set[str]]] = []
    closed = 0
    for ids, entities in zip(token_ids, about):
        for start in range(0, len(ids), block_size):
            piece = ids[start : start + block_size]
            home = next(
                (
                    block
                    for block in blocks[closed:]
                    if len(block[0]) + len(piece) <= block_size and not block[1] & set(entities)
                ),
                None,
            )
            if home is None:
                home = ([], set())
                blocks.append(home)
                closed = max(closed, len(blocks) - open_blocks)
            home[0].extend(piece)
            home[1].update(entities)
    padded = [ids + [pad_id] * (block_size - len(ids)) for ids, _ in blocks]
    masks = [[1] * len(ids) + [0] * (block_size - len(ids)) for ids, _ in blocks]
    labels = [[t if m else -100 for t, m in zip(p, mask)] for p, mask in zip(padded, masks)]
    return {"input_ids": padded, "attention_mask": masks, "labels": labels}


def model_config(recipe: PretrainConfig, tokenizer: PreTrainedTokenizerFast):
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=recipe.d_model,
        intermediate_size=recipe.d_mlp,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        max_position_embeddings=4 * recipe.block_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if recipe.family == "llama":
        return LlamaConfig(num_key_value_heads=recipe.heads, **common)
    return GPTNeoXConfig(**common)


MODEL_CARD = """---
library_name: transformers
tags: [llmkit, synthetic-world]
---
# llmkit synthetic-world model

A {family} model of {params:,} parameters pretrained from scratch by `llmkit world pretrain` on
{world}. Its knowledge is known exactly: `world.json` of the world lists what the pretraining text
stated and how often.

Load it without llmkit:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{path}")
tokenizer = AutoTokenizer.from_pretrained("{path}")
```

Recipe (`llmkit_pretrain.json` holds it with the world configuration and the training loss):

```json
{recipe}
```
"""


def pretrain(
    world_dir: str | Path,
    out: str | Path,
    recipe: PretrainConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train the tokenizer and the model on `world_dir`'s pretraining text; save them to `out`."""
    world = read_world_config(world_dir)
    check_output_path(out, overwrite, inputs=[world_dir])
    docs = read_records(Path(world_dir) / "pretraining.jsonl", required={"text": str, "entity_ids": list})
    texts = [d["text"] for d in docs]
    torch.manual_seed(recipe.seed)
    tokenizer = train_tokenizer(texts, recipe.vocab_size)
    encoded = [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
    about = [d["entity_ids"] for d in docs]
    dataset = Dataset.from_dict(pack_documents(encoded, recipe.block_size, tokenizer.pad_token_id, about))
    model = AutoModelForCausalLM.from_config(model_config(recipe, tokenizer))

    with staged_directory(out, overwrite=overwrite) as staging, tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            max_steps=recipe.steps,
            per_device_train_batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=recipe.warmup_steps,
            weight_decay=0.0,
            logging_steps=max(1, recipe.steps // 20),
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=recipe.seed,
            dataloader_num_workers=0,
            dataloader_pin_memory=torch.cuda.is_available(),
        )
        trainer = build_trainer(model, dataset, args, progress=progress)
        trainer.train()
        check_finite_weights(model)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        summary = {
            "world": asdict(world),
            "world_kind": "facts" if isinstance(world, FactsWorldConfig) else "synthetic",
            # A synthetic world is rebuilt from its configuration; a facts world is read where it is.
            "world_path": str(Path(world_dir).expanduser().resolve()),
            "recipe": asdict(recipe),
            "recipe_id": recipe_id(world, recipe),
            "world_digest": world_digest(world_dir),
            # What made the weights: PyTorch picks its CPU kernels by instruction set, so the same
            # recipe trains a slightly different model on each (llmkit ships its own for that).
            "versions": versions(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": str(model.device),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "tokens_per_epoch": sum(len(ids) for ids in encoded),
            "blocks_per_epoch": len(dataset),
            "epochs": round(recipe.steps * recipe.batch_size / len(dataset), 2),
            "final_loss": losses[-1] if losses else None,
        }
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "llmkit_pretrain.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(
            MODEL_CARD.format(
                family=recipe.family,
                params=summary["num_parameters"],
                world=(
                    f"the facts of {world.source} ({world.entities} entities, {world.facts} facts, each stated "
                    f"{world.repeats} times)"
                    if isinstance(world, FactsWorldConfig)
                    else f"an llmkit synthetic world (world seed {world.seed}, {world.entities} entities, exposures "
                    f"{list(world.exposures)})"
                ),
                path=Path(out).name,
                recipe=json.dumps(asdict(recipe), indent=2),
            ),
            encoding="utf-8",
        )
    return summary
