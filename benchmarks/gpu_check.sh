#!/usr/bin/env bash
# Every GPU check of the performance issue in one script, for one call of the device tool:
#   throughput (odenet vs plain torchdiffeq, step-only and with data loading, with variants),
#   memory slopes, seminorm, solver overhead, and a Fashion-MNIST ODE-Net training run.
# Results go under $OUT when set, else ./bench-out. Fashion-MNIST is read from $DATA
# (default .gpu-data, holding fashion-mnist/*.gz). Each stage has its own time limit, and a
# failing stage does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./bench-out}
DATA=${DATA:-.gpu-data}
EPOCHS=${EPOCHS:-20}
STEPS=${STEPS:-30}                                   # measured steps per throughput mode
VARIANTS=${VARIANTS:-default,compile,channels_last,bf16}
PY=${PY:-python3}                                    # the interpreter (this machine: .venv/bin/python)
LIMIT=${LIMIT:-}                                     # e.g. LIMIT=2 for a dry run on a CPU
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

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PY" -c "import torch, torchdiffeq; \
print('torch', torch.__version__, 'torchdiffeq', torchdiffeq.__version__)"; } 2>&1 | tee -a "$LOG"

stage throughput 170 "$PY" benchmarks/throughput.py --data-dir "$DATA" --modes direct,adjoint,resnet \
    --variants "$VARIANTS" --steps "$STEPS" --end-to-end --workers 4 --out "$OUT"
stage memory 40 "$PY" benchmarks/memory.py --data-dir "$DATA" --out "$OUT"
stage seminorm 40 "$PY" benchmarks/seminorm.py --data-dir "$DATA" --steps "${STEPS}" --pretrain-steps 100 --out "$OUT"
stage overhead 30 "$PY" benchmarks/overhead.py --data-dir "$DATA" --out "$OUT"

RUN=/tmp/gpu-runs
rm -rf "$RUN"
stage fashion-mnist-training 280 "$PY" train.py --backbone odenet --dataset fashion-mnist --data-dir "$DATA" \
    --tol 1e-3 --epochs "$EPOCHS" --milestones 10,15 --batch-size 128 --data-on-device --no-progress \
    --out-dir "$RUN" --run-name fmnist-odenet ${LIMIT:+--limit-train-batches $LIMIT --limit-test-batches $LIMIT}
cp "$RUN/fmnist-odenet/metrics.jsonl" "$OUT/fmnist_metrics.jsonl" 2>/dev/null
cp "$RUN/fmnist-odenet/summary.json" "$OUT/fmnist_summary.json" 2>/dev/null
"$PY" - "$RUN/fmnist-odenet/metrics.jsonl" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tests = [r for r in rows if r["split"] == "test"]
train = [r for r in rows if r["split"] == "train"]
print(f"fashion-mnist odenet: {len(tests)} epochs, test acc per epoch: " + " ".join(f"{r['acc']:.4f}" for r in tests))
print(f"best test acc {max(r['acc'] for r in tests):.4f}; mean train step {sum(r['time_step_ms'] for r in train) / len(train):.1f} ms")
PY
echo "done" | tee -a "$LOG"
