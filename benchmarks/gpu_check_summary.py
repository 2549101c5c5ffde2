"""Gather what ``gpu_check.sh`` left in its work folder into ``summary.json`` and ``summary.md``.

Reads ``parts.tsv`` (one line per part: name, status, exit code, wall seconds, time limit,
command), the benchmark JSONs under ``bench/``, ``data.json`` and each run's
``metrics.jsonl`` under ``runs/``; a missing or broken file is noted, never fatal. Exits 1
when a part failed or timed out (after writing both files), else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from afa._io import atomic_write_text, read_jsonl, write_json  # noqa: E402


def read_parts(path: Path) -> list[dict[str, Any]]:
    parts = []
    if not path.is_file():
        return parts
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, status, rc, wall, limit, *rest = line.split("\t") + [""] * 6
        parts.append(
            {
                "name": name,
                "status": status,
                "exit_code": int(rc) if rc.strip() else None,
                "wall_s": float(wall) if wall.strip() else None,
                "limit_s": int(float(limit)) if limit.strip() else None,
                "command_or_reason": rest[0],
            }
        )
    return parts


def read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"{path.name}: not read ({exc})")
        return None


def gather(work: Path, mode: str, total: float | None) -> dict[str, Any]:
    notes: list[str] = []
    parts = read_parts(work / "parts.tsv")
    order = {p["name"]: i for i, p in enumerate(parts)}  # results in the order they ran

    def ran(path: Path) -> tuple[int, str]:
        return order.get(path.stem, len(order)), path.name

    bench = {}
    for f in sorted((work / "bench").glob("*.json"), key=ran):
        payload = read_json(f, notes)
        if payload is not None:
            bench[f.stem] = payload
    train = {}
    for run in sorted((p for p in (work / "runs").glob("*") if p.is_dir()), key=ran):
        try:
            train[run.name] = {"metrics": read_jsonl(run / "metrics.jsonl")}
        except Exception as exc:  # a half-written line of a killed run
            notes.append(f"{run.name}/metrics.jsonl: not read ({exc})")
    env_log = work / "logs" / "env.log"
    return {
        "check": "gpu_check",
        "mode": mode,
        "total_s": total,
        "parts": parts,
        "environment": env_log.read_text()[-4000:] if env_log.is_file() else None,
        "data": read_json(work / "data.json", notes) if (work / "data.json").is_file() else None,
        "bench": bench,
        "train": train,
        "notes": notes,
    }


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"# gpu_check ({summary['mode']})", ""]
    lines += [f"Total {_f(summary['total_s'], 4)} s.", ""]
    lines += ["| part | status | wall s | limit s |", "|---|---|---:|---:|"]
    for p in summary["parts"]:
        status = p["status"] + (f" (exit {p['exit_code']})" if p["status"] == "failed" else "")
        if p["status"] == "skipped":
            status += f": {p['command_or_reason']}"
        lines.append(f"| {p['name']} | {status} | {_f(p['wall_s'], 4)} | {_f(p['limit_s'])} |")
    if summary["data"]:
        d = summary["data"]
        lines += [
            "",
            f"Data ({d['dataset']}): {d['train']} train + {d['val']} val + {d['test']} test "
            f"images {d['image_shape']} (stratified test split, seed {d['test_seed']}) from "
            f"{Path(d['source']).name}, read in {_f(d['seconds'])} s.",
        ]
    for name, b in summary["bench"].items():
        env = b.get("environment", {})
        cfg = b.get("config", {})
        lines += [
            "",
            f"## {name}",
            "",
            f"{cfg.get('model')}, batch {cfg.get('batch_size')}, {cfg.get('precision')}"
            f"{', channels-last' if cfg.get('channels_last') else ''}"
            f"{', compiled' if cfg.get('compile') else ''}, PGD-{cfg.get('attack_steps')}, "
            f"{env.get('device')} {env.get('gpu', '')}, torch {env.get('torch')}",
            "",
            "| method | step ms | images/s | x standard | x pgd-at | peak MiB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m, r in b.get("methods", {}).items():
            peak = None if r.get("peak_bytes") is None else r["peak_bytes"] / 2**20
            lines.append(
                f"| {m} | {_f(1e3 * r['step_s'])} | {_f(r['images_per_s'])} | "
                f"{_f(r.get('vs_standard'))} | {_f(r.get('vs_pgd_at'))} | {_f(peak)} |"
            )
        cost = b.get("attack_cost")
        if cost:
            lines += ["", f"Attack cost (PGD AT step / (k+1) standard steps): {_f(cost['ratio'])}"]
        for key, c in (b.get("comparisons") or {}).items():
            lines.append(f"- {key}: {_f(c['ratio'])} (reference {_f(c['speedup'])}x slower)")
    for name, t in summary["train"].items():
        lines += ["", f"## {name}", ""]
        rows = [m for m in t["metrics"] if "epoch" in m]
        if not rows:
            lines.append("no epoch finished")
            continue
        keys = [k for k in rows[-1] if k.startswith(("train/loss", "val/")) and k != "val/time_s"]
        lines += [
            "| epoch | s | " + " | ".join(keys) + " |",
            "|---:|---:|" + "---:|" * len(keys),
        ]
        for m in rows:
            cells = " | ".join(_f(m.get(k)) for k in keys)
            lines.append(f"| {m.get('stage')} {m['epoch']} | {_f(m.get('time_s'))} | {cells} |")
    if summary["notes"]:
        lines += ["", "Notes:", *[f"- {n}" for n in summary["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", default="gpu")
    p.add_argument("--total", type=float, default=None)
    args = p.parse_args(argv)
    summary = gather(args.work, args.mode, args.total)
    write_json(args.out / "summary.json", summary)
    text = markdown(summary)
    atomic_write_text(args.out / "summary.md", text)
    print(text)
    bad = [q["name"] for q in summary["parts"] if q["status"] in ("failed", "timeout")]
    if bad:
        print(f"gpu_check: failed or timed out: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
