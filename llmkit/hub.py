"""Before a name that is no local path goes to the Hugging Face hub: make sure the hub can answer.

Asked for a name it cannot reach, the hub client retries for a minute and logs every retry, and
its final error never says that the name was also looked for as a local path. One probe first
turns that into one line at once: neither a local path nor a reachable hub id.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from llmkit.errors import BadInputError

PROBE_TIMEOUT_S = 5


def model_cached(name: str) -> bool:
    """Whether the hub cache holds a snapshot of model `name` (then it loads offline too)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def dataset_cached(name: str) -> bool:
    """Whether the hub cache or the datasets cache holds dataset `name`."""
    from datasets import config
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"datasets--{name.replace('/', '--')}").is_dir() or (
        Path(config.HF_DATASETS_CACHE) / name.replace("/", "___")
    ).is_dir()


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (1, ON, YES or TRUE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def check_hub_reachable(name: str, what: str, cached: bool = False) -> None:
    """Refuse `name` (a `what`: "model", "dataset") that is no local path when the hub cannot be
    asked for it: offline mode is on and it is not in the local cache, or the endpoint does not
    answer. Any HTTP answer, even an error status, counts as reachable."""
    not_local = f"{what} {name} is not a local path (nothing exists there)"
    if cached:
        return
    if hub_offline():
        raise BadInputError(f"{not_local}, and HF_HUB_OFFLINE is set, so it cannot come from the hub; check the path")
    endpoint = hub_endpoint()
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise BadInputError(
            f"{not_local}, and the hub ({endpoint}) cannot be reached ({reason}); check the path, or connect and retry"
        ) from None
