"""One writer per run directory, nothing left behind, divergence stopped with one line.

Divergence in a later epoch uses ``fit`` with a stand-in method whose loss turns NaN at a
chosen step (the tiny model of ``test_resume.py``); divergence in the first epoch, the
lock and the stale temporaries are met where the user meets them, through ``afa train``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

# pytest puts this directory on sys.path (rootdir-relative, no __init__.py)
from test_resume import BATCH, INFO, THREAT, TinyNet, toy_data

import afa.training.plan as plan
from afa._lock import RunLockedError, is_locked, read_holder
from afa.attacks import ThreatModel
from afa.cli.main import main
from afa.data import BatchLoader, make_augment
from afa.errors import TrainingDiverged
from afa.methods.base import Batch, Method, StepOutput
from afa.training import (
    DistContext,
    LoopOptions,
    OptimConfig,
    RunSpec,
    ScheduleConfig,
    Stage,
    fit,
    load_checkpoint,
)

TINY = ["train.epochs=1", "model.options={width: 4}", "eval.n_examples=24", "eval.attacks=[pgd]"]


class NaNAtStep(Method):
    """Clean CE whose ``ce`` term (and so the loss) is NaN from global step ``bad_step`` on."""

    name = "nan-at-step"

    def __init__(self, model, bad_step: int) -> None:
        super().__init__(model, ThreatModel())
        self.bad_step, self.calls = bad_step, 0

    def forward(self, batch: Batch) -> StepOutput:
        self.calls += 1
        ce = F.cross_entropy(self.model(batch.view()), batch.y)
        if self.calls >= self.bad_step:
            ce = ce * float("nan")
        return StepOutput(ce, {"ce": ce.detach(), "finite": torch.ones(())})


def _fit(run_dir: Path, bad_step: int, epochs: int = 3):
    torch.manual_seed(0)
    model = TinyNet()
    stage = Stage(
        "train", NaNAtStep(model, bad_step), epochs, OptimConfig(lr=0.05), ScheduleConfig()
    )
    return fit(
        [stage],
        BatchLoader(toy_data(), BATCH, shuffle=True, drop_last=True, seed=0),  # 4 steps/epoch
        RunSpec(run_dir, {"model": {"name": "tiny"}}),
        options=LoopOptions(val_batch_size=BATCH, log_every=2, seed=0),
        val=None,
        threat=THREAT,
        augment=make_augment(INFO, padding=1),
        device=torch.device("cpu"),
    )


def test_divergence_in_a_later_epoch_keeps_the_last_finite_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        _fit(run_dir, bad_step=7)  # step 7 = epoch 2, step 3 of 4
    message = str(info.value)
    assert "\n" not in message
    assert "not finite at step 7 (stage 'train', epoch 2; non-finite terms: ce)" in message
    assert f"{run_dir / 'last.pt'} (global epoch 1) is kept" in message
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["global_epoch"] == 1 and ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert load_checkpoint(run_dir / "best.pt")["global_epoch"] == 1
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the diverged epoch is not recorded as trained


def test_divergence_in_the_first_epoch_says_no_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"at step 2 .*no checkpoint exists yet"):
        _fit(tmp_path / "run", bad_step=2)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_divergence_exit_2_without_traceback(tmp_path, capsys):
    argv = ["train", "digits-standard", f"out_dir={tmp_path}", "name=r", *TINY]
    assert main([*argv, "train.optimizer.lr=1e30"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [e for e in err.splitlines() if e.startswith("afa: error:")]
    assert "training diverged" in line and "no checkpoint exists yet" in line
    assert not (tmp_path / "r" / "last.pt").exists()
    # nothing of the diverged run blocks a corrected one in the same directory
    assert main([*argv, "train.optimizer.lr=0.05"]) == 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability")
    assert main(["train", "digits-standard", f"out_dir={root}", "name=run", *TINY]) == 0
    return root / "run"


def _train_argv(run_dir: Path, *extra: str) -> list[str]:
    return ["train", "digits-standard", f"out_dir={run_dir.parent}", f"name={run_dir.name}",
            *TINY, *extra]  # fmt: skip


def test_refused_train_keeps_the_runs_config(finished, capsys):
    before = (finished / "config.yaml").read_bytes()
    assert main(_train_argv(finished, "train.seed=5")) == 2  # would overwrite last.pt
    assert main(_train_argv(finished, "train.seed=5", "--resume")) == 2  # train.seed differs
    assert "train.seed" in capsys.readouterr().err
    assert (finished / "config.yaml").read_bytes() == before


def test_second_writer_refused_while_a_run_trains(tmp_path, capsys):
    """A real `afa train` in another process; a second train and a --resume are refused."""
    run_dir = tmp_path / "busy"
    child = subprocess.Popen(
        [sys.executable, "-m", "afa", "--threads", "1",
         *_train_argv(run_dir, "train.epochs=1000")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # wait for its first checkpoint: without the lock, both attempts below would then
        # fail at once for another reason (last.pt exists; train.seed differs) instead of
        # training for 1000 epochs
        while not (is_locked(run_dir) and (run_dir / "last.pt").exists()):
            assert child.poll() is None and time.monotonic() < deadline, "child never locked"
            time.sleep(0.2)
        assert read_holder(run_dir).pid == child.pid
        for extra in ([], ["--resume"]):
            assert main(_train_argv(run_dir, "train.epochs=1000", "train.seed=1", *extra)) == 2
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert err.startswith(f"afa: error: {run_dir}: another afa process is writing")
            assert f"pid {child.pid} on " in err
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not is_locked(run_dir)  # kill -9 released it


HOLD_AND_TEAR = """
import sys
from pathlib import Path
from afa._lock import run_lock
run = Path(sys.argv[1])
with run_lock(run):
    # what a kill -9 inside save_checkpoint leaves: a 0-byte hidden temporary
    (run / f".last.pt.{__import__('os').getpid()}.0badc0de.tmp").write_bytes(b"")
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_killed_writer_leaves_nothing_behind(finished, capsys, caplog):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_TEAR, str(finished)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "locked"
    child.send_signal(signal.SIGKILL)
    child.wait()
    temporaries = list(finished.glob(".*.tmp"))
    assert len(temporaries) == 1
    # the temporary is never taken for a checkpoint
    assert main(["eval", str(finished), "--which", "last", "--n", "8", "--attacks", "pgd"]) == 0
    with caplog.at_level(logging.WARNING, logger="afa"):
        assert main(_train_argv(finished, "--resume")) == 0  # finished: resuming is a no-op
    assert f"taking over the lock left by pid {child.pid}" in caplog.text
    assert "removed 1 temporary file(s)" in caplog.text and temporaries[0].name in caplog.text
    assert not temporaries[0].exists() and read_holder(finished) is None


def test_resume_with_only_a_temporary_is_no_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / ".last.pt.1234.abcdef01.tmp").write_bytes(b"")
    assert main(_train_argv(run_dir, "--resume")) == 2
    assert "last.pt: cannot resume, no checkpoint there" in capsys.readouterr().err
    assert not list(run_dir.glob(".*.tmp"))


HOLDER = """
import sys
from afa._lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``'s lock until it reads a line on stdin."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = holder.stdout.readline().strip()
    if line != "locked":
        holder.kill()
        pytest.fail(f"the lock holder did not take the lock: {line!r}")
    return holder


@pytest.mark.dist
def test_torchrun_rank_0_holds_the_lock(tmp_path):
    run_dir = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "afa", "--threads", "1", *_train_argv(run_dir)]  # fmt: skip
    holder = _hold_lock(run_dir)
    try:
        refused = subprocess.run(torchrun, capture_output=True, text=True, timeout=300)
    finally:
        holder.communicate("\n")
    assert refused.returncode != 0
    # rank 0's line; rank 1's too unless torchrun stopped it first (the mp test below
    # checks that every rank is told)
    lines = [e for e in refused.stderr.splitlines() if e.startswith("afa: error:")]
    assert 1 <= len(lines) <= 2, refused.stderr
    assert all(f"pid {holder.pid} on " in e for e in lines)
    assert not (run_dir / "config.yaml").exists()

    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_dir / "last.pt").is_file() and read_holder(run_dir) is None


def _lock_worker(rank: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    ctx = DistContext.from_env("cpu")
    try:
        try:
            with plan._run_dir_writer(Path(run_dir), ctx):
                message = "entered"
        except RunLockedError as exc:
            message = str(exc)
        Path(out, f"rank{rank}.txt").write_text(message)
    finally:
        ctx.cleanup()


@pytest.mark.dist
def test_every_rank_is_told_when_rank_0_is_refused(tmp_path):
    run_dir = tmp_path / "ddp"
    holder = _hold_lock(run_dir)
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        workers = mp.start_processes(
            _lock_worker, args=(port, str(run_dir), str(tmp_path)), nprocs=2, join=False,
            start_method="spawn",
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not workers.join(timeout=5):
            assert time.monotonic() < deadline, "a rank is still waiting"
    finally:
        holder.communicate("\n")
    for rank in (0, 1):  # rank 1 never touched the lock, yet knows why rank 0 stopped
        assert f"pid {holder.pid} on " in (tmp_path / f"rank{rank}.txt").read_text()
