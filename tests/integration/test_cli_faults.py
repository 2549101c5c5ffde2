"""Faults of the machine and of costly input: one line each, exit status 2, nothing lost.

What the table of ``test_cli_errors.py`` cannot hold: a config built to exhaust memory (run
in a child process under a memory and a time limit), a disk that fills up during a run (the
previous checkpoint must stay loadable and the run resumable), a read-only run directory
found before the work starts, a refused run leaving nothing behind, overrides anywhere on
the line, and a torchrun job whose other rank dies.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from afa._lock import read_holder
from afa.cli.main import _parse, main
from afa.runs import load_checkpoint

TINY = ["train.epochs=1", "model.options={width: 4}", "eval.n_examples=24", "eval.attacks=[pgd]"]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not LOG_LINE.match(line)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_faults")
    assert main(["train", "digits-standard", f"out_dir={root}", "name=run", *TINY]) == 0
    return root / "run"


# --- a config that would cost the machine


def _alias_bomb(levels: int, width: int = 10) -> str:
    rows = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


#: The child imports what `afa train` imports, then may grow by this much address space.
MEMORY_BOUND = 512 * 2**20
TIME_BOUND_S = 60

_BOUNDED_TRAIN = textwrap.dedent(
    """
    import resource, sys
    import afa.training.plan  # torch and the trainer: their own cost, before the bound
    from afa.cli.main import main
    with open("/proc/self/status") as f:
        size = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
    limit = size + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.exit(main(["train", sys.argv[1]]))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_billion_laughs_is_refused_within_a_memory_and_time_bound(tmp_path):
    """Ten levels of ten aliases (10**10 strings once expanded; before, `afa train` grew past
    1.7 GB in 35 s copying it) end in one line, within 512 MiB and a minute."""
    bomb = tmp_path / "lol.yaml"
    bomb.write_text(_alias_bomb(10))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _BOUNDED_TRAIN, str(bomb), str(MEMORY_BOUND)],
        capture_output=True,
        text=True,
        timeout=TIME_BOUND_S,
        cwd=tmp_path,
    )
    assert time.monotonic() - start < TIME_BOUND_S
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_lines(proc.stderr) == [
        f"afa: error: {bomb}: line 5, column 5: more than 100000 values once aliases are "
        "expanded (aliases nested too deep?)"
    ]
    assert not (tmp_path / "runs").exists()


def test_the_bound_holds_for_overrides_and_large_files(tmp_path, capsys):
    """The same bounds hold for an override (a hundred thousand values without an alias)
    and for a file past the size limit (nothing is read beyond it)."""
    items = ", ".join(["[" + ", ".join(["1"] * 1000) + "]"] * 101)
    argv = ["train", "digits-standard", f"out_dir={tmp_path}", f"model.options={{x: [{items}]}}"]
    assert main(argv) == 2
    big = tmp_path / "big.yaml"
    big.write_text("data: {}\n" + "#" * (1 << 20))
    assert main(["train", str(big)]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        "afa: error: override model.options: more than 100000 values",
        f"afa: error: {big}: larger than 1024 KiB; expected a YAML config (a recipe is a few KiB)",
    ]
    assert list(tmp_path.iterdir()) == [big]


# --- a full disk


def test_disk_full_while_training_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    """The second epoch's checkpoint hits a full disk: one line naming last.pt, the first
    epoch's last.pt still loads, no temporary is left, the lock is free, and the run
    resumes to the end once there is room."""
    argv = ["train", "digits-standard", f"out_dir={tmp_path}", "name=r", *TINY, "train.epochs=2"]
    real_save, calls = torch.save, []

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise ENOSPC

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    assert main(argv) == 2
    run = tmp_path / "r"
    assert _error_lines(capsys.readouterr().err) == [
        f"afa: error: cannot write {run / 'last.pt'}: No space left on device"
    ]
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["global_epoch"], ckpt["global_step"]) == (1, 9)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert read_holder(run) is None

    monkeypatch.setattr(torch, "save", real_save)
    assert main([*argv, "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["global_epoch"] == 2


@pytest.mark.parametrize(
    ("command", "record"),
    [
        (["eval", "{run}", "--n", "8", "--attacks", "pgd", "--no-sanity"], "eval.json"),
        (["analyze", "{run}", "--n-test", "16", "--k", "3", "--no-figures"], "analysis.json"),
    ],
    ids=["eval", "analyze"],
)
def test_disk_full_writing_the_record(run, command, record, monkeypatch, capsys):
    before = (run / record).read_bytes() if (run / record).exists() else None

    def fsync_on_a_full_disk(fd):
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", fsync_on_a_full_disk)
    assert main([a.replace("{run}", str(run)) for a in command]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"afa: error: cannot write {run / record}: No space left on device"
    ]
    after = (run / record).read_bytes() if (run / record).exists() else None
    assert after == before  # the previous record stands, whole
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_while_taking_the_lock(tmp_path, monkeypatch, capsys):
    def pwrite_on_a_full_disk(fd, data, offset):
        raise ENOSPC

    monkeypatch.setattr(os, "pwrite", pwrite_on_a_full_disk)
    argv = ["train", "digits-standard", f"out_dir={tmp_path}/runs", "name=r", *TINY]
    assert main(argv) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"afa: error: cannot write {tmp_path}/runs/r/.lock: No space left on device"
    ]
    assert not (tmp_path / "runs").exists()  # the directories it made are gone again


# --- a read-only run directory, found before the work


@pytest.mark.parametrize(
    ("command", "record"), [("eval", "eval.json"), ("analyze", "analysis.json")]
)
def test_read_only_run_directory_is_refused_before_the_work(
    run, command, record, monkeypatch, capsys
):
    """Before, `afa eval` attacked every example, then failed writing eval.json."""
    real = tempfile.TemporaryFile

    def read_only_run(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == run.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)

    def work(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_run)
    monkeypatch.setattr("afa.evaluation.runs.evaluate_run", work)
    monkeypatch.setattr("afa.analysis.runs.analyze_run", work)
    assert main([command, str(run / "best.pt")]) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"afa: error: {run}: cannot write {record} there (Read-only file system); expected "
        "a writable run directory (copy the run to a writable place to evaluate it)"
    ]


# --- a refused run leaves nothing


@pytest.mark.parametrize(
    "extra",
    [["--resume"], ["data.name=npz", "data.path=missing.npz"], ["train.optimizer.momentum=1"]],
    ids=["resume-nothing", "missing-data", "bad-value"],
)
def test_a_refused_run_leaves_nothing_behind(tmp_path, extra, capsys):
    out = tmp_path / "a" / "b"
    assert main(["train", "digits-standard", f"out_dir={out}", "name=r", *TINY, *extra]) == 2
    assert len(_error_lines(capsys.readouterr().err)) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_refused_resume_keeps_what_was_there(run, capsys):
    argv = ["train", "digits-standard", f"out_dir={run.parent}", "name=run", *TINY]
    before = sorted(p.name for p in run.iterdir())
    assert main([*argv, "train.seed=7", "--resume"]) == 2
    assert "train.seed" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before


# --- a batch larger than the training set


def test_a_batch_larger_than_the_training_set_trains_on_all_of_it(tmp_path, caplog):
    argv = ["train", "digits-standard", f"out_dir={tmp_path}", "name=r", *TINY]
    assert main([*argv, "train.batch_size=5000"]) == 0
    assert (
        "train.batch_size=5000 is larger than the 1213 training examples: training on "
        "batches of 1213 (one step per epoch)" in caplog.text
    )
    ckpt = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ckpt["global_step"] == 1 and ckpt["config"]["train"]["batch_size"] == 5000


# --- overrides anywhere on the line


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["train", "R", "--resume", "train.epochs=1"], ["train.epochs=1"]),
        (["train", "R", "a=1", "--resume", "b=2", "a=3"], ["a=1", "b=2", "a=3"]),
        (["train", "--resume", "R", "a=1"], ["a=1"]),
        (["finetune", "RUN", "--protocols", "slf", "classifier.epochs=1"], ["classifier.epochs=1"]),
        (["finetune", "RUN", "x=1", "--n", "8", "y=2", "--no-sanity"], ["x=1", "y=2"]),
    ],
)
def test_overrides_are_taken_anywhere_on_the_line(argv, overrides):
    assert _parse(argv).overrides == overrides


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["train", "R", "--resume", "epochs"], "afa train: error: unrecognized arguments: epochs"),
        (
            ["eval", "RUN", "--n", "8", "eps=0.1"],
            "afa eval: error: unrecognized arguments: eps=0.1",
        ),
        (["finetune", "RUN", "--protocols", "slf", "--fast"], "afa finetune: error: unrecognized"),
    ],
)
def test_what_is_not_an_override_is_still_refused(argv, line, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(line)


# --- a torchrun job whose other rank dies

_DYING_RANK = "import os, torch.distributed as d; d.init_process_group('gloo'); os._exit(1)"


@pytest.mark.dist
def test_the_surviving_rank_says_a_peer_died_in_one_line(tmp_path):
    """Rank 1 dies once the job has formed; rank 0 (`afa train`) fails in its next
    collective. Before, it printed gloo's traceback (``pair.cc: Connection reset by peer``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING_RANK], env={**env, "RANK": "1", "LOCAL_RANK": "1"}
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "afa", "train", "digits-standard", f"out_dir={tmp_path}",
             "name=r", "device=cpu", *TINY],
            env={**env, "RANK": "0", "LOCAL_RANK": "0"},
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    finally:
        dying.wait(timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_lines(proc.stderr) == [
        "afa: error: rank 0 of 2: another rank of this job stopped (killed or crashed), so "
        "this one stops too; that rank's output says why (resume with `afa train ... --resume`)"
    ]
    assert not (tmp_path / "r").exists()


def test_only_a_lost_peer_is_translated():
    from afa.training.distributed import DistContext, PeerRankLost, stop_if_peer_lost

    gloo = (
        "[third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:387: "
        "Connection reset by peer. This is typically caused by a remote worker hanging"
    )
    with pytest.raises(PeerRankLost, match=r"^rank 1 of 2: another rank of this job stopped"):
        with stop_if_peer_lost(DistContext(rank=1, world_size=2)):
            raise RuntimeError(gloo)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # any other error: as it was
        with stop_if_peer_lost(DistContext(rank=1, world_size=2)):
            raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="Connection reset"):  # one process has no peers
        with stop_if_peer_lost(DistContext()):
            raise RuntimeError(gloo)
