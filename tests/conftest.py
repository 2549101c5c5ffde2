"""Suite-wide settings: tests use tiny tensors, for which one intra-op thread is fastest
(on a shared 2-core machine, more threads oversubscribe and slow tiny ops tens of times)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Back to one thread after every test: a benchmark's ``--threads`` changes it."""
    yield
    torch.set_num_threads(1)
