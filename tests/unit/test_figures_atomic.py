"""Figures are written atomically: a write that fails midway leaves the previous figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure

from afa.analysis import plots

ALIGNMENT = {
    "clean": {"acc_aligned": 0.9, "n_aligned": 9, "acc_misaligned": 0.5, "n_misaligned": 2},
    "adversarial": {"acc_aligned": 0.6, "n_aligned": 5, "acc_misaligned": 0.2, "n_misaligned": 6},
}


def test_a_failed_figure_write_leaves_the_previous_figure(tmp_path, monkeypatch):
    path = tmp_path / "analysis_aligned_accuracy.png"
    plots.plot_aligned_accuracy(ALIGNMENT, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG") and len(before) > 1000

    def killed_midway(self, fname, *args, **kwargs):
        """Writes the first bytes of a PNG where it was told to, then dies."""
        if isinstance(fname, (str, Path)):
            Path(fname).write_bytes(b"\x89PNG\r\n")
        else:
            fname.write(b"\x89PNG\r\n")
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", killed_midway)
    with pytest.raises(OSError, match="No space left"):
        plots.plot_aligned_accuracy(ALIGNMENT, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
