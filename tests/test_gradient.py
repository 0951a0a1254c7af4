"""The gradient unlearning baselines (llmkit/methods/gradient.py): each loss against a direct
computation, LoRA's reference, resuming and checkpoints, and unlearning on the micro world."""

from __future__ import annotations

import random
import shutil
import statistics

import pytest
import torch
import torch.nn.functional as F

from conftest import Interrupt, perturb
from llmkit.data import read_records
from llmkit.errors import BadInputError
from llmkit.evals.ort import demonstration_entities
from llmkit.generation import GenerationParams, HFBackend
from llmkit.methods import gradient
from llmkit.metrics.probability import answer_probability
from llmkit.models import load_model
from llmkit.training import (
    COMPLETE_FILE,
    TrainingBudget,
    add_lora,
    build_sft_trainer,
    check_checkpoints,
    encode_records,
    train,
    training_arguments,
)
from llmkit.world.forget_set import forget_set

pytestmark = pytest.mark.training  # every test here trains or unlearns: the outcome depends on the CPU's kernels


FORGET = [
    {"prompt": "Question: Where was Bob born? Answer:", "answer": "Lyon"},
    {"prompt": "Alice was born in", "answer": "Paris and works as a painter."},
    {"text": "The quick brown fox jumps over the lazy dog."},
]


RETAIN = [
    {"prompt": "What is the capital of France?", "answer": "The capital of France is Paris."},
    {"text": "one two three four five six seven"},
    {"prompt": "12 + 34 =", "answer": "46"},
]


def budget(**overrides):
    return TrainingBudget(**{"learning_rate": 1e-3, "batch_size": 3, **overrides})


def log_prob(model, ids, labels):
    """Σ log p of the labelled tokens of one unpadded sequence, and how many there are."""
    logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    picked = [logits[t - 1, ids[t]] for t in range(1, len(ids)) if labels[t] != gradient.IGNORE]
    return torch.stack(picked).sum(), len(picked)


def direct_nll(model, encoded):
    sums, counts = zip(*(log_prob(model, e["input_ids"], e["labels"]) for e in encoded))
    return -torch.stack(sums).sum() / sum(counts)


def direct_kl(model, reference, encoded):
    total, count = 0.0, 0
    for e in encoded:
        log_p = model(torch.tensor([e["input_ids"]])).logits[0].log_softmax(-1)
        log_ref = reference(torch.tensor([e["input_ids"]])).logits[0].log_softmax(-1)
        for t in range(1, len(e["input_ids"])):
            if e["labels"][t] != gradient.IGNORE:
                total += (log_ref[t - 1].exp() * (log_ref[t - 1] - log_p[t - 1])).sum()
                count += 1
    return total / count


def trainer_loss(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def test_records_mask_the_prompt_and_keep_passages_whole(loaded_models):
    _, tokenizer = loaded_models["llama"]
    question, _, passage = gradient.encode_records(tokenizer, FORGET)
    answer = [t for t, label in zip(question["input_ids"], question["labels"]) if label != gradient.IGNORE]
    assert tokenizer.decode(answer) == " Lyon"
    assert question["labels"][: len(question["input_ids"]) - len(answer)] == [gradient.IGNORE] * (
        len(question["input_ids"]) - len(answer)
    )
    assert passage["labels"] == passage["input_ids"]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "simnpo", "kl", "rt", "task-vector"])
def test_loss_equals_direct_computation(method, lora, llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    if lora:
        model = add_lora(model, 4)
    retain = RETAIN if gradient.RETAIN_USE.get(method) else None
    trainer = gradient.build_unlearning_trainer(
        model,
        tokenizer,
        method,
        FORGET if method != "rt" else FORGET[:2],
        retain,
        tmp_path,
        budget(),
        alpha=0.7,
        beta=0.3,
        gamma=0.2,
    )
    # After this, the policy differs from the frozen reference; the reference is the model on disk.
    perturb(model, ("lora_B",) if lora else ("",))
    reference, _ = load_model(str(llama_dir), device="cpu", dtype="float32")
    forget = (
        FORGET
        if method != "rt"
        else gradient.refusal_records(FORGET[:2], gradient.read_refusals(), tokenizer.eos_token)
    )
    encoded = gradient.encode_records(tokenizer, forget)
    with torch.no_grad():
        if method in ("rt", "task-vector"):
            expected = direct_nll(model, encoded)
        elif method in ("ga", "graddiff", "kl"):
            expected = -direct_nll(model, encoded)
        else:
            pairs = [log_prob(model, e["input_ids"], e["labels"]) for e in encoded]
            if method == "npo":
                ratios = torch.stack(
                    [lp - log_prob(reference, e["input_ids"], e["labels"])[0] for (lp, _), e in zip(pairs, encoded)]
                )
                expected = -(2 / 0.3) * F.logsigmoid(-0.3 * ratios).mean()
            else:
                normalised = torch.stack([lp / n for lp, n in pairs])
                expected = -(2 / 0.3) * F.logsigmoid(-0.3 * normalised - 0.2).mean()
        retained = gradient.encode_records(tokenizer, RETAIN)
        if method == "kl":
            expected = expected + 0.7 * direct_kl(model, reference, retained)
        elif retain:
            expected = expected + 0.7 * direct_nll(model, retained)
    assert trainer_loss(trainer) == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_dpo_loss_equals_direct_computation(lora, llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    if lora:
        model = add_lora(model, 4)
    questions = FORGET[:2]
    trainer = gradient.build_unlearning_trainer(
        model, tokenizer, "dpo", questions, RETAIN, tmp_path, budget(batch_size=2), alpha=0.7, beta=0.3
    )
    perturb(model, ("lora_B",) if lora else ("",))
    reference, _ = load_model(str(llama_dir), device="cpu", dtype="float32")

    def completion_log_prob(m, prompt, completion):
        prompt_ids = tokenizer(prompt)["input_ids"]
        ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
        return log_prob(m, ids, [gradient.IGNORE] * len(prompt_ids) + ids[len(prompt_ids) :])[0]

    with torch.no_grad():
        margins = []
        for pair in gradient.preference_records(questions, gradient.read_refusals()):
            chosen = completion_log_prob(model, pair["prompt"], pair["chosen"]) - completion_log_prob(
                reference, pair["prompt"], pair["chosen"]
            )
            rejected = completion_log_prob(model, pair["prompt"], pair["rejected"]) - completion_log_prob(
                reference, pair["prompt"], pair["rejected"]
            )
            margins.append(chosen - rejected)
        expected = -F.logsigmoid(0.3 * torch.stack(margins)).mean()
        retained = gradient.encode_records(tokenizer, RETAIN)
        # Two forget rows carry ⌈3/2⌉ = 2 retain examples each: four of the three, one twice.
        per_row = 2
        shuffled = list(retained)
        random.Random(0).shuffle(shuffled)
        dealt = [shuffled[(i * per_row + j) % 3] for i in range(2) for j in range(per_row)]
        expected = expected + 0.7 * direct_nll(model, dealt)
    assert trainer_loss(trainer) == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


def test_interrupted_training_resumes_to_the_same_weights(llama_dir, tmp_path):
    forget = FORGET * 2  # 6 examples, 3 steps an epoch: the interruption falls in the second epoch
    settings = budget(batch_size=2, max_steps=6, save_steps=2, epochs=2)
    run = {"test": "resume"}

    def fresh():
        return load_model(str(llama_dir), device="cpu", dtype="float32")

    model, tokenizer = fresh()
    gradient.unlearn(model, tokenizer, "npo", forget, RETAIN, tmp_path / "straight", settings, run=run)
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}

    model, tokenizer = fresh()
    trainer = gradient.build_unlearning_trainer(model, tokenizer, "npo", forget, RETAIN, tmp_path / "stopped", settings)
    trainer.add_callback(Interrupt(at_step=5))
    with pytest.raises(KeyboardInterrupt):
        train(trainer, run)
    assert sorted(p.name for p in (tmp_path / "stopped").glob("checkpoint-*")) == ["checkpoint-4"]
    # A save that a signal cut short: the weights written, not yet Trainer's state nor the mark.
    partial = tmp_path / "stopped" / "checkpoint-6"
    shutil.copytree(tmp_path / "stopped" / "checkpoint-4", partial)
    (partial / "trainer_state.json").unlink()
    (partial / COMPLETE_FILE).unlink()
    assert check_checkpoints(tmp_path / "stopped", run).endswith("checkpoint-4")

    model, tokenizer = fresh()
    resumed = gradient.unlearn(model, tokenizer, "npo", forget, RETAIN, tmp_path / "stopped", settings, run=run)
    assert resumed.state.global_step == 6
    assert (tmp_path / "stopped" / "checkpoint-6" / COMPLETE_FILE).is_file()  # written afresh, whole
    for name, p in model.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-6), name


def test_a_finished_run_saves_no_checkpoint_beyond_its_save_steps(llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    gradient.unlearn(model, tokenizer, "ga", FORGET, None, tmp_path, budget(batch_size=1, max_steps=3, save_steps=2))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]


def test_checkpoints_of_another_run_are_refused(llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    gradient.unlearn(model, tokenizer, "ga", FORGET, None, tmp_path, budget(max_steps=1, save_steps=1), run={"lr": 1})
    with pytest.raises(gradient.BadInputError, match="different run"):
        gradient.unlearn(
            model, tokenizer, "ga", FORGET, None, tmp_path, budget(max_steps=1, save_steps=1), run={"lr": 2}
        )


# Learning rates and steps that unlearn one micro-world entity (its most exposed demonstration
# entity, 5 QA facts); the retain set is its other known entities' QA facts. Measured on the
# shipped micro model (forget kept / retain kept): methods with a retain term get 40 steps, because
# it first dips the retain set and then repairs it (GradDiff 0.00 / 1.39, NPO 0.00 / 1.51 at 40).
# GA has nothing to hold the rest, so its budget sits between forgetting and collapse, and on this
# model no budget keeps 75% of the rest while halving the target: 0.42 / 0.70 at 10 steps (0.65 /
# 0.80 at 8, 0.26 / 0.59 at 12, 0.09 / 0.45 at 18), so its retain floor is 0.6. The task vector's
# budget: 0.13 / 0.85 at 16 steps (0.18 / 0.87 at 12).
RETAIN_KEPT = {"ga": 0.6}
MICRO_SETTINGS = {
    "ga": dict(learning_rate=1e-4, max_steps=10),
    "graddiff": dict(learning_rate=7e-4, max_steps=40),
    "npo": dict(learning_rate=7e-4, max_steps=40),
    "simnpo": dict(learning_rate=7e-4, max_steps=40),
    "kl": dict(learning_rate=7e-4, max_steps=40),
    "dpo": dict(learning_rate=3e-3, max_steps=40),
    "task-vector": dict(learning_rate=3e-4, max_steps=16),
}


def qa_probability(model, tokenizer, records):
    scores = HFBackend(model, tokenizer, batch_size=64).score(
        [r["prompt"] for r in records], [" " + r["answer"] for r in records]
    )
    return statistics.mean(answer_probability(s.logprobs) for s in scores)


@pytest.fixture(scope="module")
def micro_target(micro_world):
    entity = demonstration_entities(read_records(micro_world / "entities.jsonl"))[0]  # one the micro model knows
    return forget_set(micro_world, entity["name"], "qa")


@pytest.mark.parametrize("method", sorted(MICRO_SETTINGS))
def test_unlearning_the_micro_world_forgets_the_target_and_keeps_the_rest(
    method, micro_model, micro_target, tmp_path, bound
):
    forget, retain, _ = micro_target
    model, tokenizer = load_model(str(micro_model), device="cpu", dtype="float32")
    before = qa_probability(model, tokenizer, forget), qa_probability(model, tokenizer, retain)
    settings = budget(batch_size=len(forget), **MICRO_SETTINGS[method])
    gradient.unlearn(
        model, tokenizer, method, forget, retain if gradient.RETAIN_USE.get(method) else None, tmp_path, settings
    )
    model.eval()
    after = qa_probability(model, tokenizer, forget), qa_probability(model, tokenizer, retain)
    bound("forget_kept", after[0] / before[0], "<=", 0.5)
    bound("retain_kept", after[1] / before[1], ">=", RETAIN_KEPT.get(method, 0.75))


def test_rejection_tuning_makes_the_micro_model_refuse(micro_model, micro_target, tmp_path, bound):
    forget, retain, _ = micro_target
    model, tokenizer = load_model(str(micro_model), device="cpu", dtype="float32")
    params = GenerationParams(max_new_tokens=48, stop=("\n",))  # the longest refusal: 37 tokens
    refusals = set(gradient.read_refusals())

    def refused():
        answers = [
            g.texts[0].strip() for g in HFBackend(model, tokenizer).generate([r["prompt"] for r in forget], params)
        ]
        return sum(a in refusals for a in answers), answers

    assert refused()[0] == 0
    gradient.unlearn(
        model, tokenizer, "rt", forget, None, tmp_path, budget(batch_size=len(forget), learning_rate=3e-3, max_steps=30)
    )
    model.eval()
    count, answers = refused()
    bound("refused", count / len(forget), ">=", 0.8)


# --- training that scales: accumulation, checkpointing, precision ------------------------------

EIGHT = FORGET + RETAIN + FORGET[:2]


def trained_weights(llama_dir, tmp_path, name, fit):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    trainer = fit(model, tokenizer, tmp_path / name)
    return {n: p.detach().clone() for n, p in model.named_parameters()}, trainer


def npo_run(settings):
    return lambda model, tokenizer, out: gradient.unlearn(model, tokenizer, "npo", EIGHT, None, out, settings)


def sft_run(settings):
    def fit(model, tokenizer, out):
        trainer = build_sft_trainer(model, tokenizer, encode_records(tokenizer, EIGHT), out, settings)
        train(trainer, {"test": out.name})
        return trainer

    return fit


@pytest.mark.parametrize("run", [npo_run, sft_run], ids=["npo", "sft"])
def test_two_accumulated_batches_of_two_train_as_one_batch_of_four(run, llama_dir, tmp_path):
    """NPO averages per-sequence terms, and the Trainer normalises the SFT loss by the labelled
    tokens of the whole accumulated batch: either way 2 × 2 is the batch of 4, up to rounding."""
    whole, _ = trained_weights(llama_dir, tmp_path, "whole", run(budget(batch_size=4, max_steps=2)))
    accumulated, trainer = trained_weights(
        llama_dir, tmp_path, "accumulated", run(budget(batch_size=2, gradient_accumulation_steps=2, max_steps=2))
    )
    assert trainer.state.global_step == 2
    original = load_model(str(llama_dir), device="cpu", dtype="float32")[0].state_dict()
    assert any(not torch.equal(whole[n], original[n]) for n in whole)
    for name in whole:
        assert torch.allclose(whole[name], accumulated[name], atol=1e-5), name
    # Without the accumulation, batches of 2 take other steps.
    halves, _ = trained_weights(llama_dir, tmp_path, "halves", run(budget(batch_size=2, max_steps=2)))
    assert any(not torch.allclose(whole[n], halves[n], atol=1e-5) for n in whole)


def test_gradient_checkpointing_gives_the_same_loss_curve(llama_dir, tmp_path):
    plain, plain_trainer = trained_weights(llama_dir, tmp_path, "plain", sft_run(budget(batch_size=2, max_steps=4)))
    checkpointed, trainer = trained_weights(
        llama_dir, tmp_path, "checkpointed", sft_run(budget(batch_size=2, max_steps=4, gradient_checkpointing=True))
    )
    assert trainer.args.gradient_checkpointing and trainer.model.is_gradient_checkpointing
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (plain_trainer, trainer)]
    assert len(losses[0]) == 4 and losses[0][-1] < losses[0][0]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-5), name


def test_mixed_precision_follows_the_weights(llama_dir, tmp_path):
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="bfloat16")
    trainer = build_sft_trainer(model, tokenizer, encode_records(tokenizer, EIGHT), tmp_path / "bf16", budget())
    assert trainer.args.bf16 and not trainer.args.fp16
    model, tokenizer = load_model(str(llama_dir), device="cpu", dtype="float32")
    assert not build_sft_trainer(
        model, tokenizer, encode_records(tokenizer, EIGHT), tmp_path / "fp32", budget()
    ).args.bf16
    with pytest.raises(BadInputError, match="float16 underflows"):
        training_arguments(tmp_path / "fp16", budget(), weights=torch.float16)
