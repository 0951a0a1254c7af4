"""Task-vector negation (llmkit/methods/task_vector.py): θ − α·δ on the full weights, and on a
LoRA adapter's delta with the base weights untouched."""

import pytest
import torch

from conftest import perturb
from llmkit.methods import task_vector
from llmkit.models import load_model
from llmkit.training import add_lora

pytestmark = pytest.mark.training  # as the gradient methods' tests: the outcome depends on the CPU's kernels


def test_task_vector_negation_is_theta_minus_alpha_delta(llama_dir):
    model, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    original = task_vector.snapshot(model)
    perturb(model)
    finetuned = {n: p.detach().clone() for n, p in model.named_parameters()}
    task_vector.negate(model, original, 0.5)
    for name, p in model.named_parameters():
        assert torch.allclose(p, original[name] - 0.5 * (finetuned[name] - original[name]), atol=1e-7)


def test_task_vector_negates_a_lora_adapter(llama_dir):
    base, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    model = add_lora(base, 4)
    perturb(model, ("lora_",))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    w = layer.base_layer.weight.detach().clone()
    delta = layer.get_delta_weight("default").detach().clone()
    task_vector.negate(model, task_vector.snapshot(model), 2.0)
    assert torch.allclose(layer.get_delta_weight("default"), -2.0 * delta, atol=1e-7)
    assert torch.equal(layer.base_layer.weight, w)
