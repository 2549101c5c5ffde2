"""Suite-wide settings: tests use tiny tensors, for which one intra-op thread is fastest
(on a shared 2-core machine, more threads oversubscribe and slow tiny ops tens of times)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
