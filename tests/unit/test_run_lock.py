"""The run directory's writer lock: one holder, refused second writers, stale locks taken over."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import pytest

from afa._lock import LOCK_NAME, RunLockedError, is_locked, read_holder, run_lock, writer_lock
from afa.errors import UserError

HOLDER = """
import sys, time
from afa._lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()  # hold until told (or killed)
"""


def _hold_in_child(run_dir) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "locked"
    return child


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    with run_lock(tmp_path / "run") as lock:
        assert lock.holder.pid == os.getpid() and lock.stale is None
        assert is_locked(tmp_path / "run")
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on "):
            with run_lock(tmp_path / "run"):
                pass
    # released: the file is emptied and the next writer gets it without a stale warning
    assert not is_locked(tmp_path / "run") and read_holder(tmp_path / "run") is None
    with run_lock(tmp_path / "run") as again:
        assert again.stale is None


def test_released_when_the_body_raises(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with run_lock(tmp_path):
            raise RuntimeError("boom")
    assert not is_locked(tmp_path)
    with run_lock(tmp_path):
        pass


def test_other_process_holds_then_dies(tmp_path, caplog):
    run = tmp_path / "run"
    child = _hold_in_child(run)
    try:
        with pytest.raises(RunLockedError) as info:
            with run_lock(run):
                pass
        assert f"pid {child.pid} on " in str(info.value) and "\n" not in str(info.value)
        assert read_holder(run).pid == child.pid and is_locked(run)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # kill -9 released the kernel lock but left the holder's record: a stale lock
    assert not is_locked(run) and read_holder(run).pid == child.pid
    with caplog.at_level(logging.WARNING, logger="afa"):
        with run_lock(run) as lock:
            assert lock.stale is not None and lock.stale.pid == child.pid
            assert read_holder(run).pid == os.getpid()
    assert f"taking over the lock left by pid {child.pid}" in caplog.text


def test_clean_exit_of_another_process_is_not_stale(tmp_path):
    child = _hold_in_child(tmp_path)
    child.communicate("\n")
    assert child.returncode == 0
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with run_lock(tmp_path) as lock:
        assert lock.stale is None


def test_writer_lock_removes_stale_temporaries_only(tmp_path, caplog):
    stale = tmp_path / ".last.pt.4242.0123abcd.tmp"
    stale.write_bytes(b"")  # what kill -9 inside a checkpoint write leaves
    keep = [tmp_path / "last.pt", tmp_path / "notes.tmp", tmp_path / ".hidden"]
    for p in keep:
        p.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="afa"):
        with writer_lock(tmp_path):
            assert not stale.exists() and all(p.exists() for p in keep)
            assert is_locked(tmp_path)
    assert "removed 1 temporary file(s)" in caplog.text and stale.name in caplog.text
    assert not is_locked(tmp_path)


def test_writer_lock_disabled_off_rank_0(tmp_path):
    stale = tmp_path / ".x.1.2.tmp"
    stale.write_bytes(b"")
    with writer_lock(tmp_path, enabled=False):
        assert not is_locked(tmp_path) and stale.exists()


def test_a_refused_body_removes_what_the_lock_created(tmp_path):
    run = tmp_path / "out" / "sub" / "run"
    with pytest.raises(RuntimeError, match="refused"):
        with run_lock(run):
            raise RuntimeError("refused")
    assert list(tmp_path.iterdir()) == []  # run, sub and out: all made by the lock


def test_a_refused_body_keeps_what_was_there(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path):
            raise RuntimeError("refused")
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "config.yaml"]
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(RuntimeError):  # a lock file it did not create stays too
        with run_lock(tmp_path):
            raise RuntimeError("refused")
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]


def test_a_lock_file_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(UserError, match=r"\.lock: is a directory; expected the run's lock file"):
        with run_lock(tmp_path):
            pass


def test_a_lock_on_a_file_removed_meanwhile_is_taken_again(tmp_path, monkeypatch):
    """A refused run unlinks its lock file while holding it; a writer that opened that file
    just before locks an orphan, sees it, and locks the file now at the path instead."""
    import fcntl

    real, removed = fcntl.flock, []

    def flock(fd, op):
        if op & fcntl.LOCK_EX and not removed:
            removed.append(1)
            (tmp_path / LOCK_NAME).unlink()  # the refused run, between our open and lock
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with run_lock(tmp_path) as lock:
        assert removed and lock.path.exists()
        assert os.path.samestat(os.stat(lock.path), os.stat(tmp_path / LOCK_NAME))
        assert is_locked(tmp_path)
