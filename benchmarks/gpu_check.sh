#!/usr/bin/env bash
# Every GPU check of the performance issue in one script, for one call of the device tool:
#   a Fashion-MNIST ODE-Net training run (accuracy and wall time), throughput against a plain
#   torchdiffeq implementation (step only, with data loading, and variants), memory slopes,
#   seminorm, solver overhead.
# Results go under $OUT when set, else ./bench-out; Fashion-MNIST is read from $DATA (default
# .gpu-data, holding fashion-mnist/*.gz). Each stage has its own time limit and a failing stage
# does not stop the others. Knobs (environment): STAGES, EPOCHS, BATCH, LR, MILESTONES,
# TRAIN_LIMIT, STEPS, VARIANTS, LIMIT (e.g. LIMIT=1 STEPS=1 for a dry run on a CPU), PY.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./bench-out}
DATA=${DATA:-.gpu-data}
PY=${PY:-python3}
STAGES=${STAGES:-"training throughput variants memory seminorm overhead"}
EPOCHS=${EPOCHS:-20}
BATCH=${BATCH:-128}
LR=${LR:-0.1}
MILESTONES=${MILESTONES:-10,15}
TRAIN_LIMIT=${TRAIN_LIMIT:-270}
STEPS=${STEPS:-30}
VARIANTS=${VARIANTS:-compile,channels_last,bf16}
LIMIT=${LIMIT:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_check.log"

stage() {  # stage NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s) ===" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s ===" | tee -a "$LOG"
}
wanted() { [[ " $STAGES " == *" $1 "* ]]; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PY" -c "import torch, torchdiffeq; \
print('torch', torch.__version__, 'torchdiffeq', torchdiffeq.__version__)"; } 2>&1 | tee -a "$LOG"

if wanted training; then
    RUN=/tmp/gpu-runs
    rm -rf "$RUN"
    stage fashion-mnist-training "$TRAIN_LIMIT" "$PY" train.py --backbone odenet --dataset fashion-mnist \
        --data-dir "$DATA" --tol 1e-3 --epochs "$EPOCHS" --milestones "$MILESTONES" --lr "$LR" --weight-decay 5e-4 \
        --batch-size "$BATCH" --data-on-device --no-progress --out-dir "$RUN" --run-name fmnist-odenet \
        ${LIMIT:+--limit-train-batches $LIMIT --limit-test-batches $LIMIT}
    cp "$RUN/fmnist-odenet/metrics.jsonl" "$OUT/fmnist_metrics.jsonl" 2>/dev/null
    cp "$RUN/fmnist-odenet/summary.json" "$OUT/fmnist_summary.json" 2>/dev/null
    "$PY" - "$RUN/fmnist-odenet/metrics.jsonl" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tests = [r for r in rows if r["split"] == "test"]
train = [r for r in rows if r["split"] == "train"]
print(f"fashion-mnist odenet: {len(tests)} epochs, test acc per epoch: " + " ".join(f"{r['acc']:.4f}" for r in tests))
print(f"best test acc {max(r['acc'] for r in tests):.4f}; mean train step {sum(r['time_step_ms'] for r in train) / len(train):.1f} ms")
try:
    summary = json.load(open(sys.argv[1].replace("metrics.jsonl", "summary.json")))
    print(f"wall time {summary['wall_time_s']:.1f} s for {summary['epochs_completed']} epochs")
except FileNotFoundError:
    print("no summary.json: the run did not finish within its time limit")
PY
fi
wanted throughput && stage throughput 90 "$PY" benchmarks/throughput.py --data-dir "$DATA" \
    --modes direct,adjoint,resnet --variants default --steps "$STEPS" --end-to-end --workers 4 --out "$OUT"
if wanted variants; then
    mkdir -p "$OUT/variants"
    stage throughput-variants 120 "$PY" benchmarks/throughput.py --data-dir "$DATA" --modes direct,adjoint \
        --variants "$VARIANTS" --steps "$STEPS" --out "$OUT/variants"
fi
wanted memory && stage memory 30 "$PY" benchmarks/memory.py --data-dir "$DATA" --out "$OUT"
wanted seminorm && stage seminorm 35 "$PY" benchmarks/seminorm.py --data-dir "$DATA" --steps "$STEPS" \
    --pretrain-steps 100 --out "$OUT"
wanted overhead && stage overhead 25 "$PY" benchmarks/overhead.py --data-dir "$DATA" --out "$OUT"
echo "done" | tee -a "$LOG"
