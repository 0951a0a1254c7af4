"""SeND (llmkit/methods/send.py): sensitive-index selection, the sentence embedding, the drop,
resuming with the selections it made, and training unlike SFT once it drops."""

import pytest
import torch

from conftest import SEND_TEXTS as TEXTS
from conftest import Interrupt
from llmkit.hooks import capture
from llmkit.methods import send
from llmkit.models import load_model
from llmkit.training import TrainingBudget, train

pytestmark = pytest.mark.training  # SeND trains: the outcome depends on the CPU's kernels


def test_sensitive_indices_measure_variability_over_checkpoints_per_sample():
    """Index 0 swings over checkpoints within each sample; index 1 differs between samples but
    never moves. The paper's V picks 0; the released code (epoch-mean, then variability across
    samples) would pick 1."""
    checkpoints, samples, d = 3, 4, 5
    history = torch.zeros(checkpoints, samples, d)
    history[:, :, 0] = torch.tensor([0.0, 1.0, 0.0])[:, None]
    history[:, :, 1] = torch.arange(samples, dtype=torch.float)[None, :] * 10
    assert send.sensitive_indices(history, 0.2).tolist() == [0]
    assert len(send.sensitive_indices(torch.randn(3, 4, 100), 0.2)) == 20


def test_sentence_embedding_is_half_mean_plus_last_token_of_the_penultimate_layer(llama_dir):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    texts = ["a short one", "a somewhat longer text with more words in it"]
    encoded = send.encode_texts(tokenizer, texts, 64)
    batched = send.sentence_embeddings(model, encoded, tokenizer.pad_token_id, batch_size=2)
    for row, ids in enumerate(encoded):
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2][0]
        assert torch.allclose(batched[row], (hidden.mean(0) + hidden[-1]) / 2, atol=1e-5)


@pytest.mark.parametrize("target", send.TARGETS)
def test_the_drop_zeroes_the_selected_coordinates_on_every_forward_pass(llama_dir, target):
    model, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    indices = torch.tensor([1, 3])
    point = "resid_out" if target == "resid" else "mlp_key"
    layer = send.penultimate_layer(model)
    ids = torch.tensor([[1, 5, 7, 9]])
    with send.dropped(model, indices, target), capture(model, point, [layer]) as seen:
        model(ids)
    assert seen[layer][..., indices].abs().max() == 0 and seen[layer].abs().sum() > 0
    with capture(model, point, [layer]) as after:
        model(ids)
    assert after[layer][..., indices].abs().sum() > 0


def send_trainer(llama_dir, checkpoint_dir, config=send.SendConfig(0.25, window=2, drop_epochs=2)):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    dropout = send.SensitivityDropout(config, send.encode_texts(tokenizer, TEXTS[:4], 32), tokenizer.pad_token_id)
    budget = TrainingBudget(epochs=4, learning_rate=1e-2, batch_size=4, save_steps=3)
    trainer = send.build_text_trainer(
        model, tokenizer, TEXTS[4:], checkpoint_dir, budget, max_length=32, callbacks=[dropout]
    )
    return trainer, dropout


def test_interrupted_send_resumes_to_the_same_weights_and_selections(llama_dir, tmp_path):
    """4 steps an epoch, 4 epochs: a selection after epoch 2, dropped in epochs 3 and 4. The run
    stops in epoch 4 (step 14) and resumes from checkpoint-12 with the selection it made."""
    trainer, dropout = send_trainer(llama_dir, tmp_path / "straight")
    train(trainer, {"test": "send"})
    expected = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert [s["epoch"] for s in dropout.selections] == [2, 4]

    trainer, _ = send_trainer(llama_dir, tmp_path / "stopped")
    trainer.add_callback(Interrupt(at_step=14))
    with pytest.raises(KeyboardInterrupt):
        train(trainer, {"test": "send"})
    assert (tmp_path / "stopped" / "checkpoint-12" / send.STATE_FILE).is_file()

    resumed, resumed_dropout = send_trainer(llama_dir, tmp_path / "stopped")
    train(resumed, {"test": "send"})
    assert resumed.state.global_step == 16
    assert resumed_dropout.selections[-1]["indices"] == dropout.selections[-1]["indices"]
    for name, p in resumed.model.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-6), name


def test_send_trains_differently_from_sft_once_it_drops(llama_dir, tmp_path):
    trainer, _ = send_trainer(llama_dir, tmp_path / "send")
    train(trainer, {"test": "send"})
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    budget = TrainingBudget(epochs=4, learning_rate=1e-2, batch_size=4, save_steps=3)
    plain = send.build_text_trainer(model, tokenizer, TEXTS[4:], tmp_path / "sft", budget, max_length=32)
    train(plain, {"test": "sft"})
    assert any(not torch.allclose(a, b) for a, b in zip(trainer.model.parameters(), plain.model.parameters()))
