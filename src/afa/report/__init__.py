"""L8 report: several runs side by side in one Markdown / self-contained HTML / JSON report.

:func:`compare` reads each run directory (``config.yaml``, ``metrics.jsonl``, ``eval.json``,
``analysis.json`` and its figures), tolerating any missing piece, and writes ``report.md``,
``report.html`` and ``report.json``.
"""

from afa.report.collect import RunSummary, load_run, sanity_messages
from afa.report.compare import compare

__all__ = ["RunSummary", "compare", "load_run", "sanity_messages"]
