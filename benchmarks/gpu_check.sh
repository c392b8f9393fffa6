#!/usr/bin/env bash
# Every GPU measurement of the performance issues in one script, for one call of the device tool
# (about 9 minutes at most; each stage has its own time limit, and TOTAL caps the whole script, so a
# slow stage shortens or skips the later ones instead of running past the call's limit).
#
# Stages (STAGES, in this order; limit in seconds):
#   tta          200  time to accuracy: ODE-Net (dopri5 1e-3) on full Fashion-MNIST, data on the device,
#                     fast recipe (AdamW, one-cycle, label smoothing, clipping); the epoch and wall time
#                     at which test accuracy first reached 93% (target: within 180 s)
#   measuring     45  odenet's measured training step vs the same model stepped plainly, batch 128, equal
#                     NFE (target: overhead < 3%); act_mem_mb and NFE equal to the CPU's on one batch
#   throughput    70  odenet vs plain torchdiffeq training step (direct, adjoint, ResNet; with data
#                     loading too) and the loss trajectory of the first 50 steps, NFE within 5%
#   device_rk     30  device-side step control (k = 1, 4, 8) vs torchdiffeq's loop, no grad
#   cuda_graphs   40  GraphedAdaptiveSolver (k = 1, 4, 8) and GraphedFixedGridSolver (rk4, euler) vs
#                     torchdiffeq's solve of the same block: time, NFE, solution
#   memory        30  act_mem_mb / peak_mem_mb slopes (adjoint flat, direct per NFE, ResNet per block)
#   shared_gpu   110  aggregate images/s of 1, 2, 4, 8 concurrent train.py runs on one GPU
# Not run unless named in STAGES (already measured, see README): variants (--compile, channels-last,
# bf16), seminorm, overhead.
#
# Data: Fashion-MNIST is read from $DATA (a folder holding fashion-mnist/*.gz; default .gpu-data).
# The device machine has no network: before the device call, copy it into the working tree, e.g.
#   mkdir -p .gpu-data && cp -r /usr/share/datasets/fashion-mnist .gpu-data/
# Results: JSON per stage and gpu_check.log under $OUT (default ./bench-out).
#
# Dry run on a CPU (every stage end to end at tiny sizes, CUDA-only ones say "skipped: no CUDA"):
#   DRYRUN=1 DATA=/usr/share/datasets bash benchmarks/gpu_check.sh      (LIMIT=1 STEPS=1 does the same)
# A rerun of some stages:  STAGES="cuda_graphs shared_gpu" bash benchmarks/gpu_check.sh
# Other knobs (environment): PY, DEVICE, TOTAL (seconds for the whole script), BATCH, TTA_BATCH,
# TTA_EPOCHS, TTA_LR, TTA_WD, TTA_RECIPE (the fast-recipe flags), JOBS (shared_gpu's run counts),
# SCALE (stage limits × SCALE; 8 in a dry run).
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -n ${LIMIT:-} && ${STEPS:-} == 1 ]] && DRYRUN=1
DRYRUN=${DRYRUN:-}
OUT=${OUT:-./bench-out}
DATA=${DATA:-.gpu-data}
PY=${PY:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
STAGES=${STAGES:-"tta measuring throughput device_rk cuda_graphs memory shared_gpu"}
BATCH=${BATCH:-128}
TTA_BATCH=${TTA_BATCH:-256}
TTA_EPOCHS=${TTA_EPOCHS:-8}
TTA_LR=${TTA_LR:-3e-3}
TTA_WD=${TTA_WD:-1e-4}  # as configs/fashion-mnist-odenet-fast.yaml
TTA_RECIPE=${TTA_RECIPE:-"--optimizer adamw --schedule onecycle --warmup-epochs 1 --label-smoothing 0.1 --grad-clip 1.0"}
JOBS=${JOBS:-1,2,4,8}
if [[ -n $DRYRUN ]]; then  # tiny sizes on the CPU: is every stage wired up? (numbers meaningless)
    DEVICE=${DEVICE:-cpu}; TOTAL=${TOTAL:-1500}; BATCH=16; JOBS=1,2
    SCALE=${SCALE:-8}  # a shared 2-core CPU runs even tiny sizes far slower than the GPU the limits are for
    tiny_steps="--steps 2 --warmup 1"
else
    DEVICE=${DEVICE:-auto}; TOTAL=${TOTAL:-540}; SCALE=${SCALE:-1}
    tiny_steps=""
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

if [[ ! -d $DATA/fashion-mnist ]]; then
    say "no Fashion-MNIST in $DATA/fashion-mnist: set DATA to a folder holding fashion-mnist/*.gz (see the top of $0)"
    exit 2
fi

stage() {  # stage NAME SECONDS COMMAND...: run under the smaller of its limit and what TOTAL leaves
    local name=$1 limit=$(($2 * SCALE)); shift 2
    local left=$((TOTAL - SECONDS - 5))
    if ((left < 15)); then say "=== $name: skipped: out of time (TOTAL=${TOTAL}s) ==="; return; fi
    ((limit > left)) && limit=$left
    say "=== $name (limit ${limit}s) ==="
    local start=$SECONDS
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    say "=== $name: exit $rc$( ((rc == 124 || rc == 137)) && echo ' (time limit)') after $((SECONDS - start))s ==="
}
wanted() { [[ " $STAGES " == *" $1 "* ]]; }
common=(--device "$DEVICE" --data-dir "$DATA" --out "$OUT")

{ if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  else echo "no nvidia-smi"; fi
  "$PY" -c "import torch, torchdiffeq; print('torch', torch.__version__, 'torchdiffeq', torchdiffeq.__version__, \
'cuda', torch.cuda.is_available())"; date -u; } 2>&1 | tee -a "$LOG"
say "stages: $STAGES; device $DEVICE; TOTAL ${TOTAL}s${DRYRUN:+; DRY RUN (tiny sizes)}"

if wanted tta; then
    missing=$("$PY" train.py --help | "$PY" -c "import sys; h = sys.stdin.read(); \
print(' '.join(f for f in sys.argv[1:] if f.startswith('--') and f not in h))" $TTA_RECIPE)
    if [[ -n $missing ]]; then
        say "=== tta: skipped: train.py lacks $missing (set TTA_RECIPE to flags it has) ==="
    elif [[ -n $DRYRUN ]]; then
        stage tta 40 "$PY" benchmarks/time_to_accuracy.py --target 0.93 --limit 280 --out "$OUT" -- --backbone odenet \
            --dataset fashion-mnist --data-dir "$DATA" --device "$DEVICE" --epochs 2 --batch-size 32 \
            --limit-train-batches 2 --limit-test-batches 1 --no-progress --lr "$TTA_LR" --weight-decay "$TTA_WD" \
            $TTA_RECIPE
    else
        stage tta 200 "$PY" benchmarks/time_to_accuracy.py --target 0.93 --budget 180 --limit 190 --out "$OUT" -- \
            --backbone odenet --dataset fashion-mnist --data-dir "$DATA" --device "$DEVICE" --solver dopri5 \
            --tol 1e-3 --epochs "$TTA_EPOCHS" --batch-size "$TTA_BATCH" --lr "$TTA_LR" --weight-decay "$TTA_WD" \
            $TTA_RECIPE --data-on-device --no-progress
    fi
fi
wanted measuring && stage measuring 45 "$PY" benchmarks/measuring.py "${common[@]}" --batch-size "$BATCH" \
    --modes direct,adjoint ${tiny_steps:---steps 30 --warmup 3}
# --warmup 3 --steps 47: the loss trajectory covers the first 50 steps (warm-up included).
wanted throughput && stage throughput 70 "$PY" benchmarks/throughput.py "${common[@]}" --batch-size "$BATCH" \
    --modes direct,adjoint,resnet --variants default ${tiny_steps:---steps 47 --warmup 3} --end-to-end \
    --workers "$([[ -n $DRYRUN ]] && echo 0 || echo 4)"
wanted device_rk && stage device_rk 30 "$PY" benchmarks/device_rk.py "${common[@]}" --batch-size "$BATCH" \
    --check-every 1,4,8 --repeats "$([[ -n $DRYRUN ]] && echo 1 || echo 5)"
wanted cuda_graphs && stage cuda_graphs 40 "$PY" benchmarks/cuda_graphs.py "${common[@]}" --batch-size "$BATCH" \
    --check-every 1,4,8 --fixed-methods rk4,euler --repeats "$([[ -n $DRYRUN ]] && echo 1 || echo 5)"
wanted memory && stage memory 30 "$PY" benchmarks/memory.py "${common[@]}" --batch-size "$BATCH" \
    $([[ -n $DRYRUN ]] && echo --depths 2,4)
wanted shared_gpu && stage shared_gpu 110 "$PY" benchmarks/shared_gpu.py "${common[@]}" --batch-size "$BATCH" \
    --jobs "$JOBS" $([[ -n $DRYRUN ]] && echo --steps 3 --skip 1 --timeout 200 || echo --steps 60 --skip 5 --timeout 45)
# Baseline stages measured before (README, benchmarks/results/h200-run*); only when named in STAGES.
wanted variants && stage variants 120 "$PY" benchmarks/throughput.py "${common[@]}" --modes direct,adjoint \
    --variants compile,channels_last,bf16 ${tiny_steps:---steps 30} --out "$OUT/variants"
wanted seminorm && stage seminorm 35 "$PY" benchmarks/seminorm.py "${common[@]}" ${tiny_steps:+--steps 1} \
    --pretrain-steps "$([[ -n $DRYRUN ]] && echo 1 || echo 100)"
wanted overhead && stage overhead 25 "$PY" benchmarks/overhead.py "${common[@]}"
say "done after ${SECONDS}s"
