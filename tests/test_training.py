"""Training (llmkit/training.py): LoRA trains only the adapter, and a run whose loss diverges is
reported as bad input."""

import pytest

from conftest import TEXTS
from llmkit.models import load_model
from llmkit.training import add_lora


@pytest.mark.training
def test_lora_trains_only_the_adapter(llama_dir):
    model, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    total = sum(p.numel() for p in model.parameters())
    model = add_lora(model, 4, ["q_proj", "v_proj"])
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    layers, d = model.config.num_hidden_layers, model.config.hidden_size
    kv = model.config.num_key_value_heads * d // model.config.num_attention_heads
    assert sum(trainable.values()) == layers * (4 * d + d * 4 + 4 * d + kv * 4)
    assert sum(p.numel() for p in model.parameters()) - sum(trainable.values()) == total


# Hostile input, defects 9, 10: numbers that are not finite, training that diverges.
@pytest.mark.usefixtures("isolated")
def test_the_library_reports_divergence_as_bad_input(llama_dir, tmp_path):
    from llmkit.errors import BadInputError
    from llmkit.methods import gradient
    from llmkit.models import load_model
    from llmkit.training import TrainingBudget

    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    forget = [{"text": t} for t in TEXTS[:4]]
    budget = TrainingBudget(epochs=1, learning_rate=1e30, batch_size=2, max_steps=8, save_steps=1)
    with pytest.raises(BadInputError, match="diverged"):
        gradient.unlearn(model, tokenizer, "ga", forget, None, tmp_path / "checkpoints", budget)
