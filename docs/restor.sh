#!/usr/bin/env bash
# RESTOR's real-data recipe (docs/restor.md), on 2 CPU cores in about 9 minutes: a tiny model
# pretrained from scratch on RESTOR's facts.json (the 50 evaluated people) is the clean model;
# mix_a0 and mix_a3 (k = 0 and 3 unrelated true facts per document) corrupt it; GA, NPO, KL and the
# task vector unlearn each corruption; every model is asked every fact. Writes OUT/ and prints the
# table. RESTOR_DATA names the directory of facts.json, entities.json and the mix files.
set -euo pipefail
OUT=${1:-/tmp/restor}
DATA=${RESTOR_DATA:-../shared/data/restor}
STEPS=${STEPS:-600}
mkdir -p "$OUT"

llmkit world from-facts "$DATA/facts.json" --entities "$DATA/entities.json" --out "$OUT/world" --overwrite >/dev/null
llmkit world pretrain "$OUT/world" --out "$OUT/clean" --steps "$STEPS" --overwrite >/dev/null
for k in 0 3; do
    llmkit eval restor --model "$OUT/clean" --facts "$DATA/facts.json" --entities "$DATA/entities.json" \
        --corruption "$DATA/mix_a$k.json" --method ga --method npo --method kl --method task-vector \
        --documents-per-target 50 --corrupt-epochs 1 --corrupt-lr 1e-3 --corrupt-batch-size 16 --cache "$OUT/cache" \
        --output-path "$OUT/k$k" --overwrite --plot >/dev/null
done

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def pct(v): return "-" if v is None else f"{100 * v:.0f}%"
def num(v): return "-" if v is None else f"{v:.2f}"
print("| k | model | target acc | non-target acc | corrupted rate | ℓ correct | ℓ corrupted | ℓ random | recovery |")
print("|---|---|---|---|---|---|---|---|---|")
for k in (0, 3):
    metrics = json.loads((out / f"k{k}" / "results.json").read_text())["metrics"]["restor"]
    for model, m in metrics.items():
        lp = m["logprob"]
        print(f"| {k} | {model} | {pct(m['target']['accuracy'])} | {pct(m['nontarget']['accuracy'])} | "
              f"{pct(m['corrupted_rate'])} | {num(lp['correct'])} | {num(lp['corrupted'])} | {num(lp['random'])} | "
              f"{num(m.get('recovery'))} |")
PY
