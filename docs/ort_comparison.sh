#!/usr/bin/env bash
# The ORT comparison table of docs/unlearning.md: ROCR and every gradient baseline on the
# default world model, each gradient method trained on the QA form of one target's facts only
# (5 records, batch 5, 20 steps, lr 3e-5, seed 0: the same budget for all), every run scored by
# `llmkit eval ort` against the original. Usage: docs/ort_comparison.sh OUT_DIR [N_TARGETS]
set -euo pipefail
out=${1:?usage: docs/ort_comparison.sh OUT_DIR [N_TARGETS]}
n=${2:-5}
mkdir -p "$out"
paths=$(python - <<'PY'
from llmkit.world.cache import default_cache_dir, ensure_model, ensure_world, preset
cache, (world, recipe) = default_cache_dir(), preset("default")
print(ensure_world(cache, world)[0], ensure_model(cache, world, recipe)[0])
PY
)
read -r world model <<<"$paths"
targets=$(python - "$world" "$n" <<'PY'
import sys
from llmkit.data import read_records
from llmkit.evals.ort import biography_only_entities
entities = [e for e in biography_only_entities(read_records(f"{sys.argv[1]}/entities.jsonl")) if e["exposure"] >= 10]
print("\n".join(e["name"] for e in entities[: int(sys.argv[2])]))
PY
)
budget=(--max-steps 20 --batch-size 5 --lr 3e-5 --seed 0)
while IFS= read -r target; do
    slug=${target// /_}
    dir="$out/$slug"
    mkdir -p "$dir"
    llmkit data forget-set --world "$world" --target "$target" --form qa --out "$dir/data" --overwrite >/dev/null
    llmkit eval ort --model "$model" --probes "$world" --targets "$target" -o "$dir/ort-original" --overwrite >/dev/null
    redirect=$(python -c "
import sys
from llmkit.data import read_records
from llmkit.evals.ort import redirect_entity
entities = read_records('$world/entities.jsonl')
print(redirect_entity(entities, next(e for e in entities if e['name'] == sys.argv[1]))['name'])" "$target")
    llmkit unlearn rocr --model "$model" --target "$target" --redirect "$redirect" --out "$dir/rocr" --overwrite >/dev/null
    for method in ga graddiff npo simnpo kl rt dpo task-vector; do
        retain=()
        case $method in graddiff|kl|npo|simnpo|dpo) retain=(--retain "$dir/data/retain.jsonl") ;; esac
        llmkit unlearn "$method" --model "$model" --forget "$dir/data/forget.jsonl" "${retain[@]}" --out "$dir/$method" \
            "${budget[@]}" --overwrite >/dev/null
    done
    for method in rocr ga graddiff npo simnpo kl rt dpo task-vector; do
        llmkit eval ort --model "$dir/$method" --probes "$world" --targets "$target" --baseline "$dir/ort-original" \
            -o "$dir/ort-$method" --overwrite >/dev/null
        rm -rf "${dir:?}/$method"  # the model itself is not needed once scored
    done
    echo "done: $target" >&2
done <<<"$targets"

# The tables: mean over targets of each form's forget and neighbour probability, the relative
# drops against the original, and the form gap (largest minus smallest forget drop).
python - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
forms = ("qa", "cloze", "mc", "tf", "char")
methods = ("original", "rocr", "ga", "graddiff", "npo", "simnpo", "kl", "rt", "dpo", "task-vector")
runs = {m: [json.loads(p.read_text())["metrics"] for p in sorted(Path(sys.argv[1]).glob(f"*/ort-{m}/results.json"))] for m in methods}
mean = lambda xs: statistics.mean(xs) if xs else float("nan")
print(f"targets: {len(runs['original'])}\n")
for title, key in (("forget probability", "forget"), ("neighbour probability", "neighbor")):
    print(f"| {title} | " + " | ".join(forms) + " |\n|---|" + "---:|" * len(forms))
    for m in methods:
        print(f"| {m} | " + " | ".join(f"{mean([r[key][f]['prob'] for r in runs[m]]):.3f}" for f in forms) + " |")
    print()
print("| relative drop vs original | " + " | ".join(f"forget {f}" for f in forms) + " | neighbour (mean of forms) | form gap |\n|---|" + "---:|" * (len(forms) + 2))
for m in methods[1:]:
    forget = [f"{100 * mean([r['drop']['forget'][f] for r in runs[m]]):.0f}%" for f in forms]
    neighbour = mean([mean([r["drop"]["neighbor"][f] for f in forms]) for r in runs[m]])
    print(f"| {m} | " + " | ".join(forget) + f" | {100 * neighbour:.1f}% | {100 * mean([r['form_gap'] for r in runs[m]]):.0f}% |")
PY
