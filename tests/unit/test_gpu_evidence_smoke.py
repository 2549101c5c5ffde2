"""benchmarks/gpu_evidence.sh end to end in its ``--smoke`` mode, on a tarball made here in the
layout of the CIFAR-10 JPEG copy (``train/<class>/NNNN.jpg``, 10 classes x 30 JPEGs of 32x32):
the summary table's rows and columns and its values in range; and the epoch planner, the
deadline guard and the wheel slimming on their own.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from benchmark_modules import load_benchmark  # tests/benchmark_modules.py

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def load() -> ModuleType:
    return load_benchmark("gpu_evidence")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cifar10-jpeg-train.tar.gz`` holding ``train/<class>/NNNN.jpg``: each class a mean
    colour plus noise, as JPEG (quality 90), members in path order like the real copy."""
    from PIL import Image

    path = tmp_path_factory.mktemp("data") / "cifar10-jpeg-train.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for c in range(10):
            base = rng.integers(0, 256, size=3)
            for i in range(30):
                img = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=90)
                info = tarfile.TarInfo(f"train/class{c}/{i:04d}.jpg")
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    return path


def test_smoke_writes_one_table_of_the_three_methods(tarball: Path, tmp_path: Path) -> None:
    """The device run at the harness's tiny sizes: three rows, the same epochs, in range."""
    ge = load()
    out = tmp_path / "out"
    argv = ["--smoke", "--data", str(tarball), "--out", str(out), "--work", str(tmp_path / "w")]
    assert ge.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {
        "gpu-evidence.json",
        "gpu-evidence.md",
        "rows.json",
        "rows.md",
        "probe.json",
    }
    s = json.loads((out / "gpu-evidence.json").read_text())
    assert s["mode"] == "cpu-smoke" and s["skipped"] == [] and s["warnings"] == []
    assert [r["method"] for r in s["rows"]] == ["pgd-at", "trades", "afa-trades"]
    assert s["plan"]["epochs"] == 2 and {r["epochs"] for r in s["rows"]} == {2}
    # the harness's tiny carve of 300 images: 20% test, 10% of the rest validation
    assert (s["data"]["train"], s["data"]["val"], s["data"]["test"]) == (216, 24, 60)
    for r in s["rows"]:
        assert r["attack"] == "AutoAttack (apgd-ce)"  # the smoke's attack, via pyautoattack
        assert 0.0 <= r["robust_acc"] <= r["clean_acc"] <= 1.0
        lo, hi = r["robust_ci95"]
        assert 0.0 <= lo <= r["robust_acc"] <= hi <= 1.0
        assert r["n_eval"] == 16 and len(r["history"]) == 2
        assert r["epoch_s"] > 0 and r["predicted_epoch_s"] > 0 and r["eval_s"] > 0
        assert "train.precision=bf16" in r["command"] and "threat.steps=1" in r["command"]
    # the probe predicted each method's epoch; the harness's rows are the summary's
    assert set(s["probe"]["epoch_s"]) == {"pgd-at", "trades", "afa-trades"}
    rows = json.loads((out / "rows.json").read_text())["runs"]
    assert sorted(r["variant"] for r in rows) == ["afa-trades", "pgd-at", "trades"]
    assert {r["eval_file"] for r in rows} == {"eval-autoattack.json"}
    assert [c["pair"] for c in s["comparisons"]] == ["afa-trades - trades", "afa-trades - pgd-at"]
    for r in s["rows"]:  # per example, from eval.json: the paired comparisons' input
        assert len(r["robust_examples"]) == 16 and r["robust_examples"].count("1") == round(
            16 * r["robust_acc"]
        )
    for c in s["comparisons"]:  # a paired interval of each difference
        assert c["robust_paired_ci95_points"] >= 0 and c["clean_paired_ci95_points"] >= 0
    md = (out / "gpu-evidence.md").read_text()
    assert "(paired 95% ±" in md
    assert "| method | epochs | clean % | AutoAttack (apgd-ce) % |" in md
    table = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")]
    assert table[1:] == ["pgd-at", "trades", "afa-trades"] and "TINY SMOKE RUN" in md


STUB = """#!/usr/bin/env bash
# a python that has no pyautoattack: logs each call, "installs" with pip
echo "$* | PYTHONPATH=$PYTHONPATH" >> "$STUB_LOG"
case "$1 $2" in
    "-c import pyautoattack") exit 1 ;;
    "-m pip") exit 0 ;;
esac
exit 0
"""


def test_wrapper_installs_the_carried_wheel_then_runs_the_driver(
    tarball: Path, tmp_path: Path
) -> None:
    """Without pyautoattack the wrapper installs the wheel beside the tarball (offline, no
    dependencies) into the work folder, puts it on PYTHONPATH and starts the driver."""
    data = tmp_path / "gpu-data"
    data.mkdir()
    (data / "cifar10-jpeg-train.tar.gz").symlink_to(tarball)
    (data / "pyautoattack-0.2.0-py3-none-any.whl").write_bytes(b"")
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    log, out, work = tmp_path / "calls.log", tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": str(stub), "STUB_LOG": str(log), "GPU_EVIDENCE_WORK": str(work)}
    cmd = ["bash", str(BENCH / "gpu_evidence.sh"), str(out), str(data / tarball.name)]
    proc = subprocess.run([*cmd, "--budget-s", "300"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("-c import pyautoattack")
    assert calls[1].startswith("-m pip install -q --no-index --no-deps")
    assert f"--target {work}/site {data}/pyautoattack-0.2.0-py3-none-any.whl" in calls[1]
    driver, pythonpath = calls[2].split(" | PYTHONPATH=")
    assert driver.startswith(f"{BENCH}/gpu_evidence.py --data {data}/{tarball.name} --out {out}")
    assert driver.endswith("--budget-s 300") and f"--work {work} --started-at " in driver
    assert pythonpath.split(":")[:2] == [f"{work}/site", str(ROOT / "src")]
    assert "installed pyautoattack-0.2.0-py3-none-any.whl" in (out / "log.txt").read_text()
    # a missing tarball is a usage error before anything runs
    bad = subprocess.run([*cmd[:3], str(tmp_path / "none.tar.gz")], env=env, capture_output=True)
    assert bad.returncode == 2


def test_epochs_the_budget_fits_the_same_for_every_method() -> None:
    ge = load()
    epoch_s = {"trades": 20.0, "afa-trades": 40.0, "pgd-at": 15.0}  # 75 s an epoch of all
    kw = {"elapsed_s": 60.0, "eval_s": 75.0, "row_fixed_s": 15.0, "margin_s": 15.0}
    plan = ge.choose_epochs(epoch_s, budget_s=540.0, min_epochs=2, max_epochs=30, **kw)
    # 540 - 60 - 15 - 3 x 90 = 195 s: 2 epochs of 75 s
    assert plan.epochs == plan.fits == 2 and plan.available_s == pytest.approx(195.0)
    assert (
        ge.choose_epochs(epoch_s, budget_s=5000.0, min_epochs=2, max_epochs=30, **kw).epochs == 30
    )
    short = ge.choose_epochs(epoch_s, budget_s=300.0, min_epochs=2, max_epochs=30, **kw)
    assert short.epochs == 2 and short.fits < 2 and "may end past the budget" in short.rule
    # a row that would end past the deadline is skipped; the correction is what the rows
    # before it took over what they were predicted
    kw2 = {"row_fixed_s": 15.0, "eval_s": 75.0, "deadline_s": 580.0}
    assert ge.row_fits(80.0, correction=1.0, elapsed_s=300.0, **kw2) == (True, 170.0)
    assert ge.row_fits(80.0, correction=2.5, elapsed_s=300.0, **kw2)[0] is False


def test_probe_entry_passes_the_recipes_options() -> None:
    ge = load()
    assert ge.probe_entry("pgd-at", {"name": "pgd-at"}) == "pgd-at"
    entry = ge.probe_entry("afa-trades", {"name": "afa-trades", "beta": 6.0, "afa_weight": 2.0})
    assert entry == "afa-trades:afa_weight=2.0"


def test_slim_wheel_drops_the_examples_and_keeps_record_true(tmp_path: Path) -> None:
    ge = load()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/__init__.py", "X = 1\n")
        z.writestr("pkg/examples/model.pt", b"\0" * 10_000)
        z.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\nVersion: 1.0\n")
        z.writestr("pkg-1.0.dist-info/RECORD", "stale\n")
    ge.slim_wheel(wheel)
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        record = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
    assert "pkg/examples/model.pt" not in names and "pkg/__init__.py" in names
    assert [line.split(",")[0] for line in record] == [
        "pkg/__init__.py",
        "pkg-1.0.dist-info/METADATA",
        "pkg-1.0.dist-info/RECORD",
    ]
    sys.path.insert(0, str(wheel))  # a pure-Python wheel imports from the zip
    try:
        import pkg  # type: ignore[import-not-found]

        assert pkg.X == 1
    finally:
        sys.path.remove(str(wheel))
        sys.modules.pop("pkg", None)
