#!/usr/bin/env bash
# SeND vs plain continued training (sft) on the default world model, same data, seed and epochs:
# the world's knowledge-forming pretraining text (biographies and question sheets; the skill items
# left out to keep it within minutes on 2 cores), 6 epochs at SeND's lr 1e-4,
# so that SeND selects after epoch 3 (C = T = 3) and drops during epochs 4-6. After every epoch:
# greedy accuracy and EES of 10 sampled answers on 20 QA probes per exposure (0, 1, 3, 10, 30).
# Both drop targets. Writes OUT/{sft,send-resid,send-mlp}
# and prints the summary table of docs/hallucination.md.
set -euo pipefail
OUT=${1:-/tmp/send_world}
EPOCHS=${EPOCHS:-6}
mkdir -p "$OUT"
MODEL=$(python -c "from llmkit.world.cache import *; w, r = preset('default'); print(ensure_model(default_cache_dir(), w, r)[0])")
WORLD=$(python -c "from llmkit.world.cache import *; w, r = preset('default'); print(ensure_world(default_cache_dir(), w)[0])")
python - "$WORLD" "$OUT" <<'PY'
import json, sys
world, out = sys.argv[1], sys.argv[2]
docs = [json.loads(line) for line in open(f"{world}/pretraining.jsonl")]
with open(f"{out}/knowledge.jsonl", "w") as f:
    for d in docs:
        if d["kind"] in ("biography", "questions"):
            f.write(json.dumps({"text": d["text"]}) + "\n")
probes = [json.loads(line) for line in open(f"{world}/probes.jsonl")]
seen = {}
with open(f"{out}/probes.jsonl", "w") as f:
    for p in probes:
        if p["form"] == "qa" and p["template"] == "trained" and seen.get(p["exposure"], 0) < 20:
            seen[p["exposure"]] = seen.get(p["exposure"], 0) + 1
            f.write(json.dumps({"prompt": p["prompt"], "answer": p["answer"], "group": f"exposure {p['exposure']}"}) + "\n")
PY
common=(--model "$MODEL" --data "$OUT/knowledge.jsonl" --eval-prompts "$OUT/probes.jsonl" --eval-limit 0
        --epochs "$EPOCHS" --batch-size 16 --seed 0 --overwrite --json)
llmkit train sft "${common[@]}" --out "$OUT/sft" > "$OUT/sft.json"
llmkit train send "${common[@]}" --drop-target resid --out "$OUT/send-resid" > "$OUT/send-resid.json"
llmkit train send "${common[@]}" --drop-target mlp --out "$OUT/send-mlp" > "$OUT/send-mlp.json"
python - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
print("| run | epoch | " + " | ".join(f"acc exp {e}" for e in (0, 1, 3, 10, 30)) + " | EES | loss |")
print("|---|---|" + "---|" * 7)
for run in ("sft", "send-resid", "send-mlp"):
    record = json.load(open(f"{out}/{run}.json"))
    for entry, loss in zip(record["evaluations"], record["epoch_losses"]):
        groups = entry["evaluation"]["groups"]
        accs = " | ".join(f"{groups[f'exposure {e}']['accuracy']:.0%}" for e in (0, 1, 3, 10, 30))
        print(f"| {run} | {entry['epoch']} | {accs} | {entry['evaluation']['eigenscore']['mean']:.3f} | {loss:.4f} |")
print()
print("| run | final acc exp 1 | final acc exp 3 | mean EES epochs 4-6 | oscillation exp 1 | oscillation exp 3 | selections |")
print("|---|---|---|---|---|---|---|")
for run in ("sft", "send-resid", "send-mlp"):
    record = json.load(open(f"{out}/{run}.json"))
    evals = record["evaluations"]
    acc = {e: [x["evaluation"]["groups"][f"exposure {e}"]["accuracy"] for x in evals] for e in (1, 3)}
    swing = {e: statistics.mean(abs(b - a) for a, b in zip(acc[e], acc[e][1:])) for e in (1, 3)}
    ees = statistics.mean(x["evaluation"]["eigenscore"]["mean"] for x in evals[3:])
    picks = ", ".join(f"epoch {s['epoch']}" for s in record["selections"] or []) or "-"
    print(f"| {run} | {acc[1][-1]:.0%} | {acc[3][-1]:.0%} | {ees:.3f} | {swing[1]:.1%} | {swing[3]:.1%} | {picks} |")
PY
