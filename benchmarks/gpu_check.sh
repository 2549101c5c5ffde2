#!/usr/bin/env bash
# GPU readiness check of afa: one script, about 8 minutes on one H200 (see benchmarks/gpu_check.md).
#
#   bash benchmarks/gpu_check.sh OUT TARBALL            # on a CUDA machine
#   bash benchmarks/gpu_check.sh --cpu-smoke OUT TARBALL   # dry run on the CPU, tiny sizes
#
# OUT: the folder the results go to (created): summary.md, summary.json, log.txt. Only these
#      three files, so that a copy-back limited to a few files brings everything.
# TARBALL: the CIFAR-10 JPEG copy, cifar10-jpeg-train.tar.gz (train/<class>/NNNN.jpg).
#
# Parts, in this order (each timed, each allowed to fail without stopping the others; the
# whole run keeps to GPU_CHECK_BUDGET_S, 480 s by default, and a part that would start with
# under 10 s left is recorded as skipped):
#   env        nvidia-smi, torch and CUDA versions
#   pytest-gpu the gpu-marked tests (python -m pytest -m gpu -q)
#   data       the tarball read once through afa's imagefolder dataset into its decoded
#              cache (benchmarks/gpu_check_data.py): 5,000 test images held out of train/
#              (stratified, afa's fixed seed), then the recipes' 1,000 validation images
#   bench-*    bench_training_step.py on CUDA, ResNet-18 and WRN-28-10, batch 128:
#              fp32, bf16, bf16 + channels_last (steps capped to fit)
#   train-*    2 epochs of pgd-at and of afa-trades, ResNet-18, bf16, data.name=imagefolder
#   bench-*-compile  bf16 + channels_last + torch.compile, standard and pgd-at only (last:
#              compilation time is the least predictable part)
# Environment: PYTHON (default .venv/bin/python if present, else python3), GPU_CHECK_WORK
# (run directories and per-part logs; default a fresh folder under /tmp),
# GPU_CHECK_BUDGET_S.
set -euo pipefail

smoke=0
args=()
for a in "$@"; do
    case "$a" in
        --cpu-smoke) smoke=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done
if [ "${#args[@]}" -ne 2 ]; then
    echo "usage: bash benchmarks/gpu_check.sh [--cpu-smoke] OUT TARBALL" >&2
    exit 2
fi
OUT=${args[0]}
TARBALL=${args[1]}
if [ ! -f "$TARBALL" ]; then
    echo "error: $TARBALL: file not found (expected cifar10-jpeg-train.tar.gz)" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TARBALL=$(cd "$(dirname "$TARBALL")" && pwd)/$(basename "$TARBALL")
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/afa-gpu-check.XXXXXX")}
mkdir -p "$WORK/logs" "$WORK/bench" "$WORK/runs"
BUDGET=${GPU_CHECK_BUDGET_S:-480}
LOG=$OUT/log.txt
PARTS=$WORK/parts.tsv
: > "$LOG"
: > "$PARTS"
START=$(date +%s.%N)
cd "$ROOT"

if [ "$smoke" -eq 1 ]; then
    # One thread: on a shared CPU several threads make these tiny steps far slower.
    export OMP_NUM_THREADS=1
    DEVICE=cpu
    MODE=cpu-smoke
else
    DEVICE=cuda
    MODE=gpu
fi
echo "gpu_check: mode $MODE, python $PYTHON, out $OUT, work $WORK, budget ${BUDGET}s" | tee -a "$LOG"

elapsed() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }
left() { "$PYTHON" -c "import sys; print(int(float(sys.argv[1]) - (float(sys.argv[3]) - float(sys.argv[2]))))" "$BUDGET" "$START" "$(date +%s.%N)"; }

# part NAME CAP_S COMMAND...: run COMMAND under a time limit of min(CAP_S, budget left),
# log it, and record name, status, exit code, wall seconds and the limit in parts.tsv.
part() {
    local name=$1 cap=$2
    shift 2
    local remaining limit t0 rc=0 status wall
    remaining=$(left)
    limit=$(( cap < remaining ? cap : remaining ))
    if [ "$limit" -lt 10 ]; then
        printf '%s\tskipped\t\t0\t%s\t%s\n' "$name" "$limit" "time budget spent" >> "$PARTS"
        echo "--- $name: skipped (${remaining}s of the budget left)" | tee -a "$LOG"
        return 0
    fi
    echo "--- $name (limit ${limit}s): $*" | tee -a "$LOG"
    t0=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1 || rc=$?
    wall=$(elapsed "$t0")
    cat "$WORK/logs/$name.log" >> "$LOG"
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$wall" "$limit" "$*" >> "$PARTS"
    echo "--- $name: $status (exit $rc, ${wall}s)" | tee -a "$LOG"
}

skip() {  # skip NAME REASON
    printf '%s\tskipped\t\t0\t0\t%s\n' "$1" "$2" >> "$PARTS"
    echo "--- $1: skipped ($2)" | tee -a "$LOG"
}

# --- env
part env 60 bash -c "nvidia-smi || echo 'nvidia-smi: not available'; \"$PYTHON\" -c \"import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')\""

# --- (a) the gpu-marked tests
if [ "$smoke" -eq 1 ]; then
    # the files that hold gpu-marked tests (on the CPU they skip); the full run collects all
    mapfile -t gpu_files < <(grep -rl --include='*.py' 'mark.gpu' tests | sort)
    part pytest-gpu 120 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider "${gpu_files[@]}"
else
    part pytest-gpu 150 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider
fi

# --- the data, once: decoded into imagefolder's cache, which the runs then read
CACHE=$WORK/cache
if [ "$smoke" -eq 1 ]; then
    DATA_ROOT=$WORK/slice  # a balanced 1,000-image slice of the tarball
    TEST_SIZE=100
    VAL_SIZE=50
    part data 120 "$PYTHON" benchmarks/gpu_check_data.py "$TARBALL" --cache-dir "$CACHE" \
        --test-size "$TEST_SIZE" --val-size "$VAL_SIZE" --limit 1000 --slice-dir "$DATA_ROOT" \
        --out "$WORK/data.json"
else
    DATA_ROOT=$TARBALL
    TEST_SIZE=5000
    VAL_SIZE=1000
    part data 180 "$PYTHON" benchmarks/gpu_check_data.py "$TARBALL" --cache-dir "$CACHE" \
        --test-size "$TEST_SIZE" --val-size "$VAL_SIZE" --out "$WORK/data.json"
fi

# --- (b) bench_training_step.py
bench() {  # bench NAME CAP [bench_training_step.py options...]
    local name=$1 cap=$2
    shift 2
    part "$name" "$cap" "$PYTHON" benchmarks/bench_training_step.py --device "$DEVICE" \
        --out "$WORK/bench/$name.json" "$@"
}
if [ "$smoke" -eq 1 ]; then
    tiny=(--model cnn --width 4 --data digits --batch-size 8 --attack-steps 1 --warmup 0
          --steps 1 --min-sample-time 0 --no-memory --threads 1 --methods standard,pgd-at)
    bench bench-cnn-fp32 60 "${tiny[@]}"
    bench bench-cnn-bf16 60 "${tiny[@]}" --precision bf16
    bench bench-cnn-bf16-cl 60 "${tiny[@]}" --precision bf16 --channels-last
else
    common=(--data cifar --batch-size 128 --warmup 1 --steps 3 --min-sample-time 0)
    r18=(--model resnet18 "${common[@]}"
         --methods standard,pgd-at,trades,mart,afa,afa-trades,ref-pgd-at,ref-trades)
    wrn=(--model wrn-28-10 "${common[@]}" --methods standard,pgd-at,trades,afa,afa-trades)
    bench bench-resnet18-fp32 60 "${r18[@]}"
    bench bench-resnet18-bf16 60 "${r18[@]}" --precision bf16
    bench bench-resnet18-bf16-cl 60 "${r18[@]}" --precision bf16 --channels-last
    bench bench-wrn-28-10-fp32 100 "${wrn[@]}"
    bench bench-wrn-28-10-bf16 60 "${wrn[@]}" --precision bf16
    bench bench-wrn-28-10-bf16-cl 60 "${wrn[@]}" --precision bf16 --channels-last
fi

# --- (c) a short real run: 2 epochs of pgd-at and of afa-trades on the JPEG copy
train() {  # train NAME CAP RECIPE [overrides...]
    local name=$1 cap=$2 recipe=$3
    shift 3
    if [ ! -f "$WORK/data.json" ]; then
        skip "$name" "the data part failed"
        return 0
    fi
    part "$name" "$cap" "$PYTHON" -m afa train "$recipe" data.name=imagefolder \
        "data.root=$DATA_ROOT" "data.cache_dir=$CACHE" "data.test_size=$TEST_SIZE" \
        "data.val_size=$VAL_SIZE" "out_dir=$WORK/runs" "name=$name" "device=$DEVICE" "$@"
}
if [ "$smoke" -eq 1 ]; then
    small=(train.epochs=1 train.batch_size=64 train.val_examples=50 threat.steps=1
           model.name=cnn model.options.width=4)
    train train-pgd-at 120 cifar10-pgd-at "${small[@]}"
    train train-afa-trades 120 cifar10-afa-trades "${small[@]}"
else
    real=(train.epochs=2 train.precision=bf16)
    train train-pgd-at 150 cifar10-pgd-at "${real[@]}"
    train train-afa-trades 200 cifar10-afa-trades "${real[@]}"
fi

# --- (b, last) torch.compile
if [ "$smoke" -eq 1 ]; then
    skip bench-compile "--cpu-smoke: torch.compile is not tried on the CPU"
else
    compiled=(--data cifar --batch-size 128 --warmup 2 --steps 3 --min-sample-time 0
              --precision bf16 --channels-last --compile --methods standard,pgd-at)
    bench bench-resnet18-bf16-cl-compile 150 --model resnet18 "${compiled[@]}"
    bench bench-wrn-28-10-bf16-cl-compile 150 --model wrn-28-10 "${compiled[@]}"
fi

# --- the summary (summary.json, summary.md); the parts table stays in log.txt if this fails
total=$(elapsed "$START")
echo "gpu_check: parts done in ${total}s" | tee -a "$LOG"
"$PYTHON" benchmarks/gpu_check_summary.py --work "$WORK" --out "$OUT" --mode "$MODE" \
    --total "$total" 2>&1 | tee -a "$LOG"
