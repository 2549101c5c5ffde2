#!/usr/bin/env bash
# afa-trades with a cheaper AFA adversary, beside TRADES and the separate PGD-k adversary, at
# the CPU protocol of cifar_cpu_table.sh: CIFAR-10 (JPEG copy), 10,000 training images, CNN
# width 16, batch 128, 10 adversarial epochs of PGD-5 (step 2/255) at Linf 8/255, APGD-CE +
# APGD-T on the first 1,000 of the 5,000 held-out test images; the alignment table's other
# rows, the weight lambda of the AFA term, then second seeds. Rows are cached and resumable
# (re-running continues). The step cost of each adversary:
# benchmarks/results/afa-trades-cost-step-k*.json (bench_training_step.py; the commands are in
# docs/results.md, "afa-trades: the cost of the AFA adversary"). Run it in the background:
#   nohup bash benchmarks/afa_trades_cost.sh > runs/afa-trades-cost.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs/cifar-contrastive-10k}
BASE=(--epochs 10 --stage2-epochs 3 --warmup 1 --batch-size 128 --model cnn --width 16
      --threads 2 --runs "$RUNS" --set data.train_size=10000)
run() { "$PY" benchmarks/cifar_contrastive.py "${BASE[@]}" "$@" || echo "step failed: $*"; }
bench() { run --suite afa-trades-cost --out benchmarks/results/afa-trades-cost-10k.json "$@"; }
# the anchors tied to the TRADES adversary (the one random AFA step, the recipes' since this
# measurement, comes in step 4)
CHEAP=("afa-trades shared" "afa-trades AFA-1 from TRADES")
# 1. TRADES, the cheap adversaries and the separate PGD-k one, seed 0
bench --seeds 0 --variants trades "${CHEAP[@]}" "afa-trades separate"
# 2. the rest of the alignment table's rows (benchmarks/alignment_table.py measures their
# features; APGD-CE alone here, the acl suite's own table is cifar_cpu_table.sh's): PGD-AT,
# the AFA baseline under ALF, ACL and DynACL under ALF
run --suite acl --out "$RUNS/alignment-rows.json" --attacks apgd-ce \
    --variants pgd-at "afa baseline ALF" "acl ALF" "dynacl ALF"
# 3. the weight lambda of the AFA term with the separate adversary (LAMBDA_ROW: another row's
# name), seed 0
LAMBDA_ROW=${LAMBDA_ROW:-afa-trades separate}
bench --seeds 0 --variants "$LAMBDA_ROW lambda *"
# 4. the second seeds, then one random AFA step (two seeds), then the lambda rows' second seed
bench --seeds 1 --variants trades "afa-trades separate" "${CHEAP[@]}"
bench --seeds 0 1 --variants "afa-trades AFA-1 random"
bench --seeds 1 --variants "$LAMBDA_ROW lambda *"
# 5. the weight lambda with the one adversary that meets the cost target (at most 1.3x a TRADES
# step at the recipes' PGD-10) within noise of the separate one: one random AFA step, two seeds
bench --seeds 0 1 --variants "afa-trades AFA-1 random lambda *"
