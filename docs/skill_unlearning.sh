#!/usr/bin/env bash
# The skill-unlearning tables of docs/skill_unlearning.md: on the default world model, KSD and
# Neuron Adjust (at three fractions) fitted with each skill as the forget skill (its training
# items; the other skills' training items as Neuron Adjust's retain set), every run scored by
# `llmkit eval skills` against the original on the test items of every skill and the fact QA.
# Usage: docs/skill_unlearning.sh OUT_DIR [KSD options...]   e.g. --alpha 1.0 --layer -1
set -euo pipefail
out=${1:?usage: docs/skill_unlearning.sh OUT_DIR [KSD options...]}
shift
ksd_options=("$@")
fractions=(0.005 0.015 0.03)
mkdir -p "$out"
paths=$(python - <<'PY'
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset
cache, (world, recipe) = default_cache_dir(), preset("default")
print(ensure_world(cache, world)[0], ensure_model(cache, world, recipe)[0])
PY
)
read -r world model <<<"$paths"
llmkit eval skills --model "$model" --world "$world" -o "$out/original" --overwrite >/dev/null
for skill in $(python -c "from llmkit.world.generator import SKILLS; print(*SKILLS)"); do
    dir="$out/$skill"
    llmkit data skill-set --world "$world" --skill "$skill" --out "$dir/data" --overwrite >/dev/null
    llmkit unlearn ksd --model "$model" --forget "$dir/data/forget.jsonl" --out "$dir/ksd" "${ksd_options[@]}" --overwrite >/dev/null
    runs=(ksd)
    for fraction in "${fractions[@]}"; do
        llmkit unlearn neuron-adjust --model "$model" --forget "$dir/data/forget.jsonl" --retain "$dir/data/retain.jsonl" \
            --fraction "$fraction" --out "$dir/na-$fraction" --overwrite >/dev/null
        runs+=("na-$fraction")
    done
    for run in "${runs[@]}"; do
        llmkit eval skills --model "$model" --world "$world" --intervention "$dir/$run" --baseline "$out/original" \
            -o "$dir/eval-$run" --overwrite >/dev/null
    done
    echo "done: $skill" >&2
done

# The tables: relative drop (1 - accuracy after / before) per forgotten skill (rows) and tested
# skill (columns), for KSD and each Neuron Adjust fraction; KSD's abstention rates.
python - "$out" "${fractions[@]}" <<'PY'
import json, sys
from pathlib import Path
out, fractions = Path(sys.argv[1]), sys.argv[2:]
original = json.loads((out / "original/results.json").read_text())["metrics"]
skills = list(original["accuracy"])
print("| original accuracy | " + " | ".join(skills) + " |\n|---|" + "---:|" * len(skills))
print("| | " + " | ".join(f"{100 * original['accuracy'][s]:.1f}%" for s in skills) + " |\n")
for run, title in [("ksd", "KSD"), *((f"na-{f}", f"Neuron Adjust {100 * float(f):g}%") for f in fractions)]:
    print(f"| {title}: relative drop, forget ↓ / tested → | " + " | ".join(skills) + " |\n|---|" + "---:|" * len(skills))
    for forget in skills:
        path = out / forget / f"eval-{run}/results.json"
        if not path.exists():
            continue
        drop = json.loads(path.read_text())["metrics"]["drop"]
        cells = [("-" if drop[s] is None else f"{100 * drop[s]:.0f}%") for s in skills]
        print(f"| {forget} | " + " | ".join(f"**{c}**" if s == forget else c for s, c in zip(skills, cells)) + " |")
    print()
print("| KSD abstention, forget ↓ / tested → | " + " | ".join(skills) + " |\n|---|" + "---:|" * len(skills))
for forget in skills:
    path = out / forget / "eval-ksd/results.json"
    if path.exists():
        rates = json.loads(path.read_text())["metrics"]["abstention"]
        print(f"| {forget} | " + " | ".join(f"{100 * rates[s]:.0f}%" for s in skills) + " |")
PY
