#!/usr/bin/env bash
# R-Tuning on the default world model, as docs/abstention.md reports it: each variant's data built
# from half of the entities of every exposure (the model's own answers split them), the model tuned
# on it, then asked about the other half, in the trained phrasings (test) and in phrasings
# pretraining never used (test_heldout_template), beside the pretrained model (Pretrain-T); then
# R-Tuning tuned on three attributes and asked about the other two. Writes OUT/ and prints the
# tables. Settings: EPOCHS, LR, BATCH (the study's best; see docs/abstention.md).
set -euo pipefail
OUT=${1:-/tmp/abstention}
EPOCHS=${EPOCHS:-10}
LR=${LR:-1e-4}
BATCH=${BATCH:-8}
mkdir -p "$OUT"
MODEL=$(python -c "from llmkit.world.cache import *; w, r = preset('default'); print(ensure_model(default_cache_dir(), w, r)[0])")
WORLD=$(python -c "from llmkit.world.cache import *; w, r = preset('default'); print(ensure_world(default_cache_dir(), w)[0])")

tune() {  # NAME VARIANT [data rtuning options...]
    local name=$1 variant=$2
    shift 2
    llmkit data rtuning -m "$MODEL" --world "$WORLD" --variant "$variant" --out "$OUT/data-$name" --overwrite "$@" >/dev/null
    llmkit train rtuning -m "$MODEL" --data "$OUT/data-$name" --out "$OUT/model-$name" --overwrite \
        --epochs "$EPOCHS" --lr "$LR" --batch-size "$BATCH" >/dev/null
}

ask() {  # NAME MODE TEST [MODEL]
    llmkit eval abstention -m "${4:-$OUT/model-$1}" --data "$OUT/data-sure/$3.jsonl" --mode "$2" \
        -o "$OUT/eval-$1-$3" --overwrite --plot >/dev/null
}

# Every variant splits the entities alike (the same seed), so every model is asked the same tests.
for variant in sure refuse uncertainty vanilla; do
    mode=certainty
    [ "$variant" = refuse ] && mode=refusal
    tune "$variant" "$variant"
    ask "$variant" "$mode" test
    ask "$variant" "$mode" test_heldout_template
done
ask pretrained certainty test "$MODEL"
ask pretrained certainty test_heldout_template "$MODEL"
tune attributes sure --attributes birthplace,occupation,employer
llmkit eval abstention -m "$OUT/model-attributes" --data "$OUT/data-attributes/test_other_attributes.jsonl" \
    -o "$OUT/eval-attributes-test_other_attributes" --overwrite >/dev/null
llmkit eval abstention -m "$OUT/model-attributes" --data "$OUT/data-attributes/test.jsonl" \
    -o "$OUT/eval-attributes-test" --overwrite >/dev/null

python - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
groups = ("exposure 0", "exposure 1", "exposure 3", "exposure 10", "exposure 30")
names = {
    "pretrained": "pretrained (Pretrain-T)",
    "vanilla": "vanilla",
    "sure": "R-Tuning",
    "refuse": "R-Tuning-R",
    "uncertainty": "R-Tuning-U",
    "attributes": "R-Tuning",
}


def percent(value):
    return "-" if value is None else f"{100 * value:.0f}%"


def row(name, run):
    m = json.loads((out / f"eval-{run}" / "results.json").read_text())["metrics"]
    declined = " | ".join(percent(m["groups"][g]["refusal_rate"]) for g in groups)
    f1 = m["abstention"]["f1"]
    return (
        f"| {name} | {declined} | {percent(m['accuracy_answered'])} | {percent(m['answer_rate'])} | "
        f"{percent(m['accuracy'])} | {m['ap']:.3f} | {'-' if f1 is None else f'{f1:.2f}'} |"
    )


header = "| model | declined: " + " | ".join(groups) + " | acc. answered | answered | accuracy | AP | F1 |"
for test in ("test", "test_heldout_template"):
    print(f"\n{test}")
    print(header)
    print("|---" * (len(groups) + 6) + "|")
    for run in ("pretrained", "vanilla", "sure", "refuse", "uncertainty"):
        print(row(names[run], f"{run}-{test}"))

print("\nTuned on birthplace, occupation, employer (R-Tuning)")
print(header.replace("| model", "| asked about"))
print("|---" * (len(groups) + 6) + "|")
print(row("the tuned attributes", "attributes-test"))
print(row("birth year, spouse (held out)", "attributes-test_other_attributes"))
PY
