#!/usr/bin/env bash
# The CIFAR-10 table on all 44,000 training images (the JPEG copy's 50,000 less the 5,000 test
# and 1,000 validation images held out, as in every table of benchmarks/cifar_contrastive.py):
# standard, PGD-AT, TRADES, afa-trades, AFA under its best protocol at 10,000 images (the
# baseline under ALF), then a second seed of PGD-AT, TRADES and afa-trades. Evaluation: clean
# accuracy, AutoAttack (standard) and the sanity checks on the first 2,000 of the 5,000
# held-out test images (class by class in turn), into each run's eval-autoattack.json; the
# table in benchmarks/results/cifar-contrastive-ingredients-44k.{json,md}; the alignment
# measurement of every row in benchmarks/results/alignment-cifar10-44k.{json,md}.
#
# Budget: CNN width 16, 30 adversarial epochs per row (AFA: 27 pre-training + 3 ALF epochs),
# PGD-5 of step 2/255 at Linf 8/255, batch 128, each recipe's optimiser and schedule, 2 threads.
# Chosen from the harness's --dry-run of these rows (the same calls with DRY_RUN=1):
#   EPOCH_S figures alone:      CNN w16, 30 epochs: 5.4 h; CNN w32, 30 epochs: 19.8 h;
#                               CNN w32, 15 epochs: 11.4 h; CNN w32, 10 epochs: 8.6 h
#   x 2.1 (measured / estimated on the 10,000-image runs of cifar_cpu_table.sh, 2 threads:
#   1.7-2.7 for training, 1.7-2.2 for AutoAttack): CNN w16, 30 epochs: 11.3 h
#   from those runs' own epoch times x 4.4 (44,000 / 10,000 images) and AutoAttack times x 2
#   (2,000 / 1,000 images): CNN w16, 30 epochs: about 10.6 h; per row: standard 0.2,
#   PGD-AT 1.3, afa-trades 2.1, TRADES 1.1, AFA ALF 1.3 h (the first seed's five rows about
#   6.0 h, the second seeds about 4.6 h). The standard row's AutoAttack is cheaper than the
#   dry run says: nothing survives APGD-CE. With the afa-trades recipe's one random AFA step
#   (its separate PGD-5 adversary before) the dry run gives afa-trades 1.7 h a row instead of
#   2.5 and the table about 9.6 h (x 2.1).
# so width 16 for 30 epochs: more data and epochs, not width (width 32 fits 10 epochs). The
# 10,000-image table's 30-epoch rows (cifar-contrastive-ingredients-10k-e30.md) are its
# counterpart with a quarter of the images.
#
# Rows run in priority order; each is cached and resumable: a row whose last.pt exists resumes
# from it (at most the epoch in progress is lost), a row whose eval-autoattack.json exists is
# not run again, so re-running this script after a stop continues where it stopped. The
# afa-trades rows take the recipe's defaults (cifar10-afa-trades.yaml), so they follow the
# recipe: if its defaults change after a row started, that row's last.pt no longer matches
# (the harness lists it under "failed" and goes on); delete its run directory
# ($RUNS/adversarial/afa-trades-cnnw16-e30-s*) to train it again with the new defaults.
#
#   nohup bash benchmarks/cifar_full_table.sh > runs/cifar-full-table.log 2>&1 &
#   DRY_RUN=1 bash benchmarks/cifar_full_table.sh     # commands and estimates, nothing trained
# Environment: PYTHON (.venv/bin/python), RUNS (runs/cifar-contrastive-44k), THREADS (2),
# COST_SCALE (2.1, for DRY_RUN's estimates).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs/cifar-contrastive-44k}
DRY=()
if [ -n "${DRY_RUN:-}" ]; then DRY=(--dry-run --cost-scale "${COST_SCALE:-2.1}"); fi
COMMON=(--suite ingredients --epochs 30 --stage2-epochs 3 --warmup 1 --batch-size 128
        --model cnn --width 16 --threads "${THREADS:-2}" --runs "$RUNS"
        --final --n 2000 --out benchmarks/results/cifar-contrastive-ingredients-44k.json)
row() { "$PY" benchmarks/cifar_contrastive.py "${COMMON[@]}" "${DRY[@]}" "$@" || echo "step failed: $*"; }

# 1. seed 0: the clean reference, then the adversarial rows, afa-trades before TRADES
row --seeds 0 --variants standard
row --seeds 0 --variants pgd-at
row --seeds 0 --variants afa-trades
row --seeds 0 --variants trades
row --seeds 0 --variants "afa baseline ALF"
# 2. seed 1: afa-trades against TRADES first, then PGD-AT
row --seeds 1 --variants trades
row --seeds 1 --variants afa-trades
row --seeds 1 --variants pgd-at
# 3. the alignment measurement of every finished row (alignment_table.py: AFA loss over chance,
# cos_gap, separation, aligned fractions clean / under PGD-10 (CE) / under the AFA adversary,
# linear probe, collapse verdict) on the first 1,000 held-out test images
if [ -z "${DRY_RUN:-}" ]; then
    "$PY" benchmarks/alignment_table.py --threads "${THREADS:-2}" --runs "$RUNS/adversarial/*" \
        --n 1000 --out benchmarks/results/alignment-cifar10-44k.json || echo "step failed: alignment"
fi
