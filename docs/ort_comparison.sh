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
from llmkit.world.cache import default_cache_dir, model_dir, preset, world_dir
cache = default_cache_dir()
print(world_dir(cache, preset("default")[0]), model_dir(cache, *preset("default")))
PY
)
read -r world model <<<"$paths"
targets=$(python - "$world" "$n" <<'PY'
import sys
from llmkit.data import read_records
from llmkit.evals.ort import form_demo_entities
entities = [e for e in form_demo_entities(read_records(f"{sys.argv[1]}/entities.jsonl")) if e["exposure"] >= 10]
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
