#!/usr/bin/env bash
# The CPU measurement of the adversarial contrastive methods at the budget that fits a few hours of two cores:
# CNN width 16, 10,000 of the 44,000 training images (stratified), batch 128, 10 adversarial
# epochs per row (pre-training rows: 7 + 3), PGD-5 training, APGD-CE + APGD-T on the first
# 1,000 of the 5,000 held-out test images (AutoAttack standard on the final rows, step 9), and
# a few rows at 30 epochs (step 11). Rows run in priority order, each cached and resumable
# (re-running this script continues where it stopped); about 5 hours on 2 cores in all.
# Run it in the background:
#   nohup bash benchmarks/cifar_cpu_table.sh > runs/cifar-cpu-table.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs/cifar-contrastive-10k}
COMMON=(--epochs 10 --stage2-epochs 3 --warmup 1 --batch-size 128 --model cnn --width 16
        --threads 2 --runs "$RUNS" --set data.train_size=10000)
bench() { "$PY" benchmarks/cifar_contrastive.py "${COMMON[@]}" "$@" || echo "step failed: $*"; }

# 1. the budget: clean SupCon + a clean probe, the chosen model and one twice as wide
bench --suite budget --variants "supcon cnn w16" "supcon cnn w32" \
    --out benchmarks/results/cifar-contrastive-budget-10k.json
# 2. references, the AFA baseline and all ingredients together (SLF / ALF / AFF)
ING=(--suite ingredients --out benchmarks/results/cifar-contrastive-ingredients-10k.json)
bench "${ING[@]}" --variants standard pgd-at trades "afa baseline *" "afa +all four *"
# 3. ACL and DynACL, sharing the rows above
ACL=(--suite acl --out benchmarks/results/cifar-contrastive-acl-10k.json)
bench "${ACL[@]}" --variants "acl *" "dynacl *"
# 4. afa-trades with and without the clean term and dual BN
bench "${ING[@]}" --variants "afa-trades" "afa-trades +clean term +dual BN"
# 5. each ingredient alone (SLF: the pre-trained features themselves)
bench "${ING[@]}" --variants "afa +clean term SLF" "afa +dual BN SLF" \
    "afa +contrastive aug SLF" "afa +warm-up SLF"
# 6. the acl table of what has been measured (every row cached: evaluation only if missing),
# and the clean term's ALF / AFF (its pre-training is the SLF row's)
bench "${ACL[@]}" --variants standard pgd-at trades "afa baseline *" "afa +all four *" \
    "afa-trades" "afa-trades +clean term +dual BN" "acl *" "dynacl *"
bench "${ING[@]}" --variants "afa +clean term ALF" "afa +clean term AFF"
# 7. a second seed of the best end-to-end rows and of AFA's best protocol
bench "${ING[@]}" --seeds 1 --variants pgd-at afa-trades "afa baseline ALF"
# 8. afa-trades with the clean term alone and dual BN alone
bench "${ING[@]}" --variants "afa-trades +clean term" "afa-trades +dual BN"
# 9. AutoAttack standard (+ sanity checks) on the final rows, into each run's eval-autoattack.json
bench "${ING[@]}" --final --seeds 0 1 --variants pgd-at afa-trades "afa baseline ALF"
bench "${ING[@]}" --final --variants trades "afa +clean term ALF"
# 10. afa-trades +dual BN (the best afa-trades row of step 8): a second seed
bench "${ING[@]}" --seeds 1 --variants "afa-trades +dual BN"
# 11. three times the budget (30 epochs: pre-training rows 27 + 3): does AFA's gap keep rising?
COMMON=(--epochs 30 --stage2-epochs 3 --warmup 1 --batch-size 128 --model cnn --width 16
        --threads 2 --runs "$RUNS" --set data.train_size=10000)
bench --suite budget --variants "supcon cnn w16" \
    --out benchmarks/results/cifar-contrastive-budget-10k-e30.json
ING30=(--suite ingredients --out benchmarks/results/cifar-contrastive-ingredients-10k-e30.json)
bench "${ING30[@]}" --variants "afa baseline SLF" "afa baseline ALF"
bench "${ING30[@]}" --variants "afa +clean term SLF" "afa +clean term ALF"
bench "${ING30[@]}" --variants pgd-at
