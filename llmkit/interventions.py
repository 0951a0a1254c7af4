"""Intervention artifacts: what a training-free method fits, saved so that it can be applied at
inference (`--intervention PATH` on `llmkit generate` and every `llmkit eval`).

An artifact is a directory of two files:

- `intervention.json`: the format tag, the method, the fingerprint and dtype of the model it was
  fitted on, the method's parameters, and a record of the fit (data sizes, timings);
- `intervention.safetensors`: its tensors (statistics, neuron indices, a hypercube).

The fingerprint ties an artifact to one model: neuron statistics mean nothing on another model's
neurons, so applying an artifact to a different model is an error, not a silent mismatch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from llmkit.errors import BadInputError
from llmkit.results import check_output_path, staged_directory

FORMAT = "llmkit-intervention/1"
METADATA_FILE = "intervention.json"
TENSORS_FILE = "intervention.safetensors"


@dataclass
class Artifact:
    method: str
    fingerprint: str
    """`models.model_fingerprint` of the model the artifact was fitted on."""
    dtype: str
    params: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)

    def check_model(self, fingerprint: str, source: str | Path) -> None:
        """Refuse a model other than the one the artifact was fitted on."""
        if fingerprint != self.fingerprint:
            raise BadInputError(
                f"{source} was fitted on another model (fingerprint {self.fingerprint}, dtype {self.dtype}), "
                f"not this one ({fingerprint}); fit it again on this model, with the same --dtype"
            )


def write_artifact(path: str | Path, artifact: Artifact, *, overwrite: bool = False) -> Path:
    """Write the artifact directory whole, or not at all."""
    check_output_path(path, overwrite)
    metadata = {
        "format": FORMAT,
        "method": artifact.method,
        "fingerprint": artifact.fingerprint,
        "dtype": artifact.dtype,
        "params": artifact.params,
        "record": artifact.record,
    }
    tensors = {name: t.detach().cpu().contiguous() for name, t in artifact.tensors.items()}
    with staged_directory(path, overwrite=overwrite) as staging:
        safetensors.torch.save_file(tensors, str(staging / TENSORS_FILE))
        (staging / METADATA_FILE).write_text(
            json.dumps(metadata, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return Path(path)


def read_artifact(path: str | Path) -> Artifact:
    """An artifact directory `write_artifact` wrote; anything else is bad input."""
    path = Path(path).expanduser()
    not_artifact = (
        f"{path} is not an llmkit intervention artifact (a directory with {METADATA_FILE} and {TENSORS_FILE}, "
        "written by `llmkit unlearn neuron-adjust` or `llmkit unlearn ksd`)"
    )
    if not (path / METADATA_FILE).is_file() or not (path / TENSORS_FILE).is_file():
        raise BadInputError(not_artifact)
    try:
        metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadInputError(f"{not_artifact}: {METADATA_FILE} is not JSON") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise BadInputError(f"{not_artifact}: {METADATA_FILE} has no format {FORMAT!r}")
    missing = [key for key in ("method", "fingerprint", "dtype", "params") if key not in metadata]
    if missing or not isinstance(metadata["params"], dict):
        raise BadInputError(
            f"{path / METADATA_FILE} is damaged (no {', '.join(missing) or 'params object'}); fit the artifact again"
        )
    try:
        tensors = safetensors.torch.load_file(str(path / TENSORS_FILE))
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise BadInputError(f"{path / TENSORS_FILE} is damaged ({err}); fit the artifact again") from None
    return Artifact(
        method=metadata["method"],
        fingerprint=metadata["fingerprint"],
        dtype=metadata["dtype"],
        params=metadata["params"],
        tensors=tensors,
        record=metadata.get("record", {}),
    )
