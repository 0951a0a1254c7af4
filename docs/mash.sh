#!/usr/bin/env bash
# MASH on the default world model, as docs/abstention.md reports it: the warm-start data from 70% of
# the world's one- and two-hop search questions (MASH's random split of direct and search traces,
# and the knowledge-boundary ablation), `llmkit train mash` on each, then the other 30% asked with
# the search tool beside the base model (its answerability buckets); and R-Tuning tuned on the same
# training questions and asked the same test questions (certainty mode), for the side-by-side.
# Writes OUT/ and prints the tables. Settings: WARM_EPOCHS, WARM_LR, STEPS, LR, LAM, BATCH.
set -euo pipefail
OUT=${1:-/tmp/mash}
WARM_EPOCHS=${WARM_EPOCHS:-10}
WARM_LR=${WARM_LR:-1e-4}
STEPS=${STEPS:-150}
LR=${LR:-1e-4}
LAM=${LAM:-0.2}
BATCH=${BATCH:-8}
mkdir -p "$OUT"
MODEL=$(python -c "from llmkit.world.cache import *; w, r = preset('default'); print(ensure_model(default_cache_dir(), w, r)[0])")
WORLD=$(python -c "from llmkit.world.cache import *; w, r = preset('default'); print(ensure_world(default_cache_dir(), w)[0])")

for assign in random boundary; do
    llmkit data mash --world "$WORLD" --assign "$assign" --top-k 1 --out "$OUT/data-$assign" --overwrite >/dev/null
    llmkit train mash -m "$MODEL" --data "$OUT/data-$assign" --corpus "$OUT/data-$assign/corpus.jsonl" \
        --out "$OUT/model-$assign" --overwrite --top-k 1 --warm-start-epochs "$WARM_EPOCHS" \
        --warm-start-lr "$WARM_LR" --max-steps "$STEPS" --lr "$LR" --lam "$LAM" --batch-size "$BATCH" >/dev/null
    llmkit eval abstention --mode search -m "$OUT/model-$assign" --data "$OUT/data-random/test.jsonl" \
        --corpus "$OUT/data-random/corpus.jsonl" --top-k 1 --pretrained "$MODEL" -o "$OUT/eval-$assign" \
        --overwrite --plot >/dev/null
    llmkit eval abstention --mode search --first-action answer -m "$OUT/model-$assign" \
        --data "$OUT/data-random/test.jsonl" --corpus "$OUT/data-random/corpus.jsonl" --top-k 1 \
        -o "$OUT/eval-$assign-direct" --overwrite >/dev/null
done

# R-Tuning on the same training questions, asked the same test questions.
llmkit data rtuning -m "$MODEL" --data "$OUT/data-random/questions.jsonl" --out "$OUT/data-rtuning" --overwrite >/dev/null
llmkit train rtuning -m "$MODEL" --data "$OUT/data-rtuning" --out "$OUT/model-rtuning" --overwrite \
    --epochs 10 --lr 1e-4 --batch-size 8 >/dev/null
llmkit eval abstention -m "$OUT/model-rtuning" --data "$OUT/data-random/test.jsonl" -o "$OUT/eval-rtuning" \
    --overwrite >/dev/null

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
groups = ("exposure 0", "exposure 1", "exposure 3", "exposure 10", "exposure 30")


def metrics(run):
    return json.loads((out / f"eval-{run}" / "results.json").read_text())["metrics"]


def percent(value):
    return "-" if value is None else f"{100 * value:.0f}%"


def number(value):
    return "-" if value is None else f"{value:.2f}"


print("| model | searched (declined): " + " | ".join(groups) + " | two-hop | F1 | accuracy | two-hop acc. |"
      " direct acc. on exposure ≥ 10 | forced direct acc. on exposure ≥ 10 |")
print("|---" * (len(groups) + 7) + "|")
base = metrics("random")["pretrained"]
for assign in ("random", "boundary"):
    m, forced = metrics(assign), metrics(f"{assign}-direct")
    known = [m["groups"][g] for g in ("exposure 10", "exposure 30")]
    direct = sum(g["parametric_accuracy"] * g["num_questions"] for g in known)
    answered = sum((1 - g["abstention_rate"]) * g["num_questions"] for g in known)
    forced_known = [forced["groups"][g] for g in ("exposure 10", "exposure 30")]
    forced_acc = sum(g["accuracy"] * g["num_questions"] for g in forced_known) / sum(g["num_questions"] for g in forced_known)
    two_hop = [g for name, g in m["groups"].items() if name.startswith("two-hop")]
    print(f"| MASH ({assign} warm start) | " + " | ".join(percent(m["groups"][g]["abstention_rate"]) for g in groups)
          + f" | {percent(m['hops']['2']['abstention_rate'])} | {number(m['abstention']['f1'])} | {percent(m['accuracy'])} |"
          f" {percent(m['hops']['2']['accuracy'])} | {percent(direct / answered) if answered else '-'} |"
          f" {percent(forced_acc)} |")
r = metrics("rtuning")
print("| R-Tuning (certainty) | " + " | ".join(percent(r["groups"][g]["refusal_rate"]) for g in groups)
      + f" | - | {number(r['abstention']['f1'])} | {percent(r['accuracy'])} | - | {percent(r['accuracy_answered'])} | - |")
print(f"\nbase model, no search: accuracy {percent(base['accuracy'])}; per group "
      + ", ".join(f"{g} {percent(v)}" for g, v in base["groups"].items()))
a = metrics("random")["pretrained"]["answerability"]
print(f"answerability (random warm start): Abs(0) {number(a['abs_0'])}, Abs(1) {number(a['abs_1'])}, "
      f"delta {number(a['delta'])}")
PY
