#!/usr/bin/env bash
# GPU evidence of afa: PGD-AT, TRADES and afa-trades on CIFAR-10 at the same epochs, AutoAttack
# on 1,000 held-out images; about 9 minutes of one H100 or H200 (benchmarks/gpu_evidence.md).
#
#   bash benchmarks/gpu_evidence.sh OUT TARBALL [gpu_evidence.py options]     # CUDA machine
#   bash benchmarks/gpu_evidence.sh --smoke OUT TARBALL [options]   # CPU dry run, tiny sizes
#   bash benchmarks/gpu_evidence.sh --prepare DEST [TARBALL]        # here, before the device
#
# OUT: the results folder (created): gpu-evidence.md and .json (the table), rows.json and
#      rows.md (cifar_contrastive.py's rows), probe.json, log.txt (everything printed).
# TARBALL: cifar10-jpeg-train.tar.gz (train/<class>/NNNN.jpg). When pyautoattack cannot be
#      imported, the pyautoattack-*.whl beside TARBALL is installed (pip --no-deps) into
#      the work folder first: the GPU image has no pyautoattack.
# --prepare DEST: copies TARBALL (default /work/shared/data/cifar10-jpeg-train.tar.gz) into
#      DEST, downloads the pyautoattack wheel of the version installed here into it, and
#      drops the wheel's 42 MB of example models (all that travels must fit 64 MiB).
# Environment: PYTHON (default .venv/bin/python when present, else python3),
#      GPU_EVIDENCE_WORK (runs, decoded-image cache, installed wheel; default a fresh
#      folder under /tmp).
set -uo pipefail
START=$(date +%s.%N)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

case "${1:-}" in
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    --prepare)
        DEST=${2:?usage: bash benchmarks/gpu_evidence.sh --prepare DEST [TARBALL]}
        SRC_TAR=${3:-/work/shared/data/cifar10-jpeg-train.tar.gz}
        mkdir -p "$DEST" || exit 2
        cp -f "$SRC_TAR" "$DEST/cifar10-jpeg-train.tar.gz" && chmod u+w "$DEST/cifar10-jpeg-train.tar.gz" || exit 2
        VERSION=$("$PYTHON" -c "import importlib.metadata as m; print(m.version('pyautoattack'))") || exit 2
        if ! ls "$DEST"/pyautoattack-"$VERSION"-*.whl > /dev/null 2>&1; then
            "$PYTHON" -m pip download --no-deps --only-binary=:all: -d "$DEST" "pyautoattack==$VERSION" || exit 2
        fi
        "$PYTHON" "$ROOT/benchmarks/gpu_evidence.py" slim-wheel "$DEST"/pyautoattack-"$VERSION"-*.whl || exit 2
        du -sh "$DEST"
        exit 0 ;;
esac

smoke=()
if [ "${1:-}" = "--smoke" ]; then
    smoke=(--smoke)
    export OMP_NUM_THREADS=1
    shift
fi
if [ "$#" -lt 2 ]; then
    echo "usage: bash benchmarks/gpu_evidence.sh [--smoke] OUT TARBALL [options]" >&2
    exit 2
fi
OUT=$1
TARBALL=$2
shift 2
if [ ! -f "$TARBALL" ]; then
    echo "error: $TARBALL: file not found (expected cifar10-jpeg-train.tar.gz)" >&2
    exit 2
fi
mkdir -p "$OUT"
WORK=${GPU_EVIDENCE_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/afa-gpu-evidence.XXXXXX")}
mkdir -p "$WORK"
{
    echo "gpu_evidence: python $PYTHON, out $OUT, work $WORK"
    if ! "$PYTHON" -c "import pyautoattack" 2> /dev/null; then
        wheel=$(ls "$(dirname "$TARBALL")"/pyautoattack-*.whl 2> /dev/null | head -n 1)
        if [ -z "$wheel" ]; then
            echo "error: pyautoattack is not installed and no pyautoattack-*.whl is beside $TARBALL"
            exit 2
        fi
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$WORK/site" "$wheel" || exit 2
        export PYTHONPATH="$WORK/site:$PYTHONPATH"
        echo "gpu_evidence: installed $(basename "$wheel") into $WORK/site"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2> /dev/null || true
    "$PYTHON" "$ROOT/benchmarks/gpu_evidence.py" "${smoke[@]}" --data "$TARBALL" --out "$OUT" \
        --work "$WORK" --started-at "$START" "$@"
} 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
