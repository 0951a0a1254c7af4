"""Pretrain every preset's world model by llmkit's own recipe and ship it in the package
(`llmkit/world/models/<preset>/`), with the record of what made it. Run it through
`make world-models` after any change to the world generator, a preset or the recipe:
`tests/test_world_cache.py` fails until the shipped models match them again.

    python scripts/ship_world_models.py [PRESET ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from llmkit.world.cache import PRESETS, SHIPPED_MODELS, ensure_world
from llmkit.world.pretrain import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for name in options.presets:
            world, recipe = PRESETS[name]
            world_dir, _ = ensure_world(Path(scratch), world)
            started = time.perf_counter()
            summary = pretrain(world_dir, SHIPPED_MODELS / name, recipe, overwrite=True)
            keys = ("recipe_id", "world_digest", "num_parameters", "final_loss", "cpu_capability")
            print(
                json.dumps(
                    {"preset": name, "seconds": round(time.perf_counter() - started), **{k: summary[k] for k in keys}}
                )
            )


if __name__ == "__main__":
    main()
