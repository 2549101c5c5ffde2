"""Why PGD-20 sits 15-21 points above AutoAttack on the quickstart's digits models.

Two explanations predict different things:

* **PGD is weak** at that radius (step size, steps, restarts): then stronger PGD
  (smaller steps, more steps, restarts) and APGD-CE, which adapts its step size, close most
  of the gap, and gradient-free Square finds little that the gradient attacks missed.
* **The models mask gradients**: then no gradient attack closes the gap, and Square, which
  uses no gradients, breaks points every gradient attack failed on.

For each quickstart model (digits recipes, cached under ``--runs``) this measures, on the
quickstart's test points: PGD-CE variants each run alone; PGD on the CW margin; and the
AutoAttack components in order (APGD-CE, APGD-T, FAB-T, Square), each only on the points
every earlier attack left, starting from the points PGD-20 left, so the table shows which
component breaks PGD's misses.

    python benchmarks/autoattack_gap.py --threads 1 --out benchmarks/results/autoattack-gap-digits.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (puts src/ on the path)
import torch

from afa.attacks import cross_entropy, cw_margin, perturb
from afa.data import load_splits, to_float
from afa.evaluation import EvalSettings, evaluate
from afa.recipes import resolve_recipe
from afa.runs import load_run_config, load_trained
from afa.training.plan import train_run

METHODS = ("pgd-at", "trades", "afa", "afa-trades")


def pgd_variants(eps: float) -> dict[str, dict]:
    """Stronger and weaker PGD-CE settings around the quickstart's (20 steps of eps/4)."""
    return {
        "PGD-20, step eps/4 (quickstart eval)": {"steps": 20, "step_size": eps / 4},
        "PGD-20, step eps/10": {"steps": 20, "step_size": eps / 10},
        "PGD-100, step eps/40": {"steps": 100, "step_size": eps / 40},
        "PGD-100, step eps/10": {"steps": 100, "step_size": eps / 10},
        "PGD-20, step eps/4, 10 restarts": {"steps": 20, "step_size": eps / 4, "restarts": 10},
    }


def standalone(model, x, y, threat, objective, seed: int) -> float:
    """Accuracy under one PGD run alone on every example (not the still-robust cascade)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    x_adv = perturb(model, x, y, threat, objective, generator=gen)
    with torch.no_grad():
        return float(((model(x_adv).argmax(1) == y) & clean).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/autoattack-gap")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--n", type=int, default=300, help="first N test images (the quickstart's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/autoattack-gap-digits.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows = {}
    for method in args.methods.split(","):
        cfg = load_run_config(
            resolve_recipe(f"digits-{method}"), [f"out_dir={args.runs}", f"name={method}"]
        )
        if not (cfg.run_dir / "best.pt").exists():
            train_run(cfg)
        model, cfg, _ = load_trained(cfg.run_dir)
        model.eval()
        test = load_splits(cfg.data).test
        x = to_float(torch.from_numpy(test.images[: args.n]), "cpu")
        y = torch.from_numpy(test.labels[: args.n])
        threat = cfg.threat.with_(bn_mode="eval")
        row: dict = {"n": len(y), "threat": threat.describe()}
        with torch.no_grad():
            row["clean"] = float((model(x).argmax(1) == y).float().mean())
        for name, change in pgd_variants(threat.eps).items():
            t0 = time.perf_counter()
            row[name] = standalone(model, x, y, threat.with_(**change), cross_entropy, 0)
            row[f"{name} time_s"] = time.perf_counter() - t0
        row["PGD-30 (CW margin), step eps/4"] = standalone(
            model, x, y, threat.with_(steps=30), cw_margin, 0
        )
        # The cascade: PGD-20 first, then each AutoAttack component on what is left.
        t0 = time.perf_counter()
        r = evaluate(
            model,
            x,
            y,
            threat,
            attacks=("pgd", "apgd-ce", "apgd-t", "fab-t", "square"),
            settings=EvalSettings({"pgd": {"steps": 20}}),
            sanity=True,
        )
        row["cascade"] = {c: r.acc(c) for c in r.columns}
        row["cascade_broken"] = {
            c: r.n_correct(prev) - r.n_correct(c)
            for prev, c in zip(r.columns[:-1], r.columns[1:], strict=True)
        }
        row["sanity"] = {k: {"passed": v.passed, "value": v.value} for k, v in r.sanity.items()}
        row["cascade time_s"] = time.perf_counter() - t0
        rows[method] = row
        print(method, {k: v for k, v in row.items() if "time" not in k})

    _common.write_json(
        Path(args.out), {"results": rows, "environment": _common.environment(torch.device("cpu"))}
    )
    lines = [
        "# PGD vs AutoAttack on the quickstart's digits models",
        "",
        f"`{' '.join(['python', *map(str, __import__('sys').argv)])}`; first {args.n} digits "
        "test images, accuracy in %, every PGD run alone on all points.",
        "",
    ]
    names = ["clean", *pgd_variants(0.2), "PGD-30 (CW margin), step eps/4"]
    lines += ["| method | " + " | ".join(names) + " | worst case (cascade) |"]
    lines += ["|---|" + "---:|" * (len(names) + 1)]
    for method, row in rows.items():
        worst = min(row["cascade"].values())
        lines.append(
            f"| {method} | "
            + " | ".join(f"{100 * row[k]:.1f}" for k in names)
            + f" | {100 * worst:.1f} |"
        )
    lines += [
        "",
        "Points broken by each attack of the cascade (each on what the previous left):",
        "",
    ]
    for method, row in rows.items():
        lines.append(
            f"- {method}: " + ", ".join(f"{k} {v}" for k, v in row["cascade_broken"].items())
        )
    Path(args.out).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
