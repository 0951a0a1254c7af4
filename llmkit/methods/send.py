"""SeND / SenD, Sensitivity Dropout (Mohammadzadeh et al., "Hallucination Detox", arXiv 2410.15460).

Continued training that, every T epochs, finds the Sensitive Embedding Indices (SEIs) — the
coordinates of the penultimate layer's sentence embedding that swung most over the last C epochs —
and drops them deterministically for the next T epochs:

    e(x)  = ½·(mean over tokens of h^{L−1}(x) + h^{L−1}(x) at the last token)     (Definition 3.1)
    V_i   = (1/N_s)·Σ_x Var_t(e_i^t(x)) · Σ_t |e_i^t(x) − e_i^{t−1}(x)|            (Definitions 3.2, 3.3)
    S     = the top K% of indices by V (K = 20%, C = T = 3)

per tracking sample x over the last C epoch-end checkpoints t, then averaged over the N_s tracking
samples (Algorithm 2). The drop is a mask: on every training forward pass of the drop epochs,
coordinates S of the penultimate block's output are set to 0 (`target="resid"`, as the paper
describes), or the penultimate MLP's units with those indices (`target="mlp"`, the units the
official code zeroes). Embeddings are tracked with no mask, so a dropped index can be selected again.

Where this departs from the official code (github notarobot-hub/SEND), deliberately: the code
averages the embeddings over epochs first and measures variability across tracking samples, not
across checkpoints; it embeds the second-to-last token of inputs padded to 512 (often a pad); and
it zeroes MLP weights once per epoch, which AdamW then regrows, reusing residual indices as MLP-unit
indices. Here variability is per sample over checkpoints, e is Definition 3.1 over real tokens,
and the mask holds on every forward pass (`target="mlp"` keeps the code's reuse of indices as
unit numbers, which is what makes it the code's variant). No rescaling of the kept units: the
paper states none and the code does none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from llmkit import arch
from llmkit.errors import BadInputError
from llmkit.hooks import intervene, last_token, pooled_states
from llmkit.methods.configs import TARGETS as TARGETS  # re-exported
from llmkit.methods.configs import SendConfig
from llmkit.training import EpochEndCallback, EpochEvaluation, TrainingBudget, completed_epochs, epoch_losses, train
from llmkit.training import build_text_trainer as build_text_trainer  # re-exported: SeND trains through it
from llmkit.training import encode_texts as encode_texts  # re-exported: the tracking samples' encoding

STATE_FILE = "send_state.safetensors"


def penultimate_layer(model: torch.nn.Module) -> int:
    """The block whose output is hidden_states[−2]: the input of the last block."""
    return max(len(arch.decoder_layers(model)) - 2, 0)


def sentence_embeddings(
    model: PreTrainedModel, encoded: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 64
) -> torch.Tensor:
    """(N, d) float32: e = ½·(mean over real tokens + last real token) of the penultimate block's
    output, from forward passes that stop there."""

    def half_mean_plus_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(hidden.dtype)[..., None]
        return ((hidden * weights).sum(1) / weights.sum(1) + last_token(hidden, mask)) / 2

    return pooled_states(model, encoded, penultimate_layer(model), pad_token_id, half_mean_plus_last, batch_size)


def sensitive_indices(history: torch.Tensor, fraction: float) -> torch.Tensor:
    """The SEIs, sorted, from `history` (C checkpoints, N samples, d): the top ⌊fraction·d⌋ indices
    by V_i = mean over samples of Var_t(e_i) · Σ_t |Δe_i| (variance with 1/C, as numpy's)."""
    history = history.double()
    variability = history.var(dim=0, unbiased=False) * history.diff(dim=0).abs().sum(dim=0)
    count = max(int(fraction * history.shape[-1]), 1)
    return variability.mean(dim=0).topk(count).indices.sort().values


@contextmanager
def dropped(model: torch.nn.Module, indices: torch.Tensor, target: str) -> Iterator[None]:
    """Coordinates `indices` of the penultimate block's output (resid), or the penultimate MLP's
    units with those numbers (mlp), set to 0 on every forward pass inside the context."""
    point = "resid_out" if target == "resid" else "mlp_key"

    def drop(activation: torch.Tensor, layer: int) -> torch.Tensor:
        keep = torch.ones(activation.shape[-1], dtype=activation.dtype, device=activation.device)
        keep[indices.to(activation.device)] = 0
        return activation * keep

    with intervene(model, point, [penultimate_layer(model)], drop):
        yield


class SensitivityDropout(EpochEndCallback):
    """SeND's schedule on a Trainer: after every epoch, embed the tracking samples; after every T-th,
    select the SEIs from the last C embeddings and drop them during the next T epochs.

    Its state (recent embeddings, the SEIs, the epoch the drop ends) is written into each
    checkpoint and read back when a run resumes, so a resumed run drops what the uninterrupted one
    would. Under torchrun every process selects from its own (identical) replica; the selections
    are compared across processes and a mismatch is an error."""

    def __init__(
        self, config: SendConfig, tracking: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 64
    ) -> None:
        self.config, self.tracking, self.pad_token_id, self.batch_size = config, tracking, pad_token_id, batch_size
        self.history: list[torch.Tensor] = []
        self.indices = torch.empty(0, dtype=torch.long)
        self.drop_until = 0
        self.selections: list[dict[str, Any]] = []
        self._mask = ExitStack()

    # -- checkpointed state --------------------------------------------------------------------

    def _state_path(self, args, state) -> Path:
        return Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            tensors = {"indices": self.indices, "drop_until": torch.tensor(self.drop_until)}
            tensors |= {f"history.{i}": h.contiguous() for i, h in enumerate(self.history)}
            save_file(tensors, str(self._state_path(args, state)))

    def on_train_begin(self, args, state, control, **kwargs):
        path = self._state_path(args, state)
        if state.global_step and path.is_file():
            tensors = load_file(str(path))
            self.indices, self.drop_until = tensors["indices"], int(tensors["drop_until"])
            self.history = [tensors[f"history.{i}"] for i in range(sum(k.startswith("history.") for k in tensors))]

    # -- the schedule ---------------------------------------------------------------------------

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if completed_epochs(state) < self.drop_until and len(self.indices):
            self._mask.enter_context(dropped(model, self.indices, self.config.target))

    def epoch_end(self, args, state, model) -> None:
        self._mask.close()
        epoch = completed_epochs(state)
        was_training = model.training
        model.eval()
        self.history = (self.history + [sentence_embeddings(model, self.tracking, self.pad_token_id, self.batch_size)])[
            -self.config.window :
        ]
        model.train(was_training)
        if epoch % self.config.drop_epochs == 0 and len(self.history) >= 2:
            self.indices = sensitive_indices(torch.stack(self.history), self.config.drop_fraction)
            self.drop_until = epoch + self.config.drop_epochs
            agree = _same_on_every_process(self.indices)
            self.selections.append({"epoch": epoch, "indices": self.indices.tolist(), "processes_agree": agree})
            state.log_history.append({"epoch": epoch, "step": state.global_step, "send_selected": len(self.indices)})


def _same_on_every_process(indices: torch.Tensor) -> bool:
    """Whether every torchrun process selected these same indices (trivially so in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    gathered = [torch.empty_like(indices) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, indices)
    if not all(torch.equal(g, indices) for g in gathered):
        raise RuntimeError("SeND processes selected different sensitive indices; their replicas have diverged")
    return True


def split_texts(
    texts: Sequence[str], track_fraction: float, test_fraction: float, seed: int
) -> tuple[list[str], list[str], list[str]]:
    """(train, tracking, test) by a seeded shuffle: SeND's α = 80% / 10% / 10% by default."""
    for name, value in (("--track-fraction", track_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            raise BadInputError(f"{name} must be in [0, 1), got {value}")
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    n_track, n_test = int(track_fraction * len(texts)), int(test_fraction * len(texts))
    tracking = [texts[i] for i in order[:n_track]]
    test = [texts[i] for i in order[n_track : n_track + n_test]]
    train = [texts[i] for i in order[n_track + n_test :]]
    if not train:
        raise BadInputError(
            f"the split leaves no training texts out of {len(texts)}; lower --track-fraction / --test-fraction"
        )
    return train, tracking, test


def check_tracking(tracking: Sequence[str], total: int, track_fraction: float) -> None:
    if not tracking:
        raise BadInputError(
            f"--track-fraction {track_fraction} of {total} texts leaves no tracking samples; "
            "SeND needs some: raise it or add data"
        )


def continued_training(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    tracking: Sequence[str],
    checkpoint_dir: Path,
    budget: TrainingBudget,
    run: Mapping[str, Any],
    *,
    config: SendConfig | None,
    max_length: int = 512,
    evaluate: Callable[[PreTrainedModel], dict[str, Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Trainer, dict[str, Any]]:
    """Next-token training on `texts` (`train sft`), with SeND's `SensitivityDropout` on the
    `tracking` texts when `config` is set (`train send`), and `evaluate(model)` logged after every
    epoch when given. Returns the trained Trainer and what the run records: the mean loss per
    epoch, the evaluations and SeND's selections."""
    callbacks: list[Any] = []
    sensitivity = None
    if config is not None:
        sensitivity = SensitivityDropout(config, encode_texts(tokenizer, tracking, max_length), tokenizer.pad_token_id)
        callbacks.append(sensitivity)
    if evaluate is not None:
        callbacks.append(EpochEvaluation(evaluate))
    trainer = build_text_trainer(
        model, tokenizer, texts, checkpoint_dir, budget, max_length=max_length, callbacks=callbacks, progress=progress
    )
    train(trainer, run)
    history = trainer.state.log_history
    return trainer, {
        "epoch_losses": epoch_losses(history),
        "evaluations": [e for e in history if "evaluation" in e],
        "selections": sensitivity.selections if sensitivity else None,
    }
