"""L3 losses: pure tensor functions of features/logits, labels and masks.

No loss calls a model, an attack or an optimizer; each computes in float32 (autocast off).

* :mod:`~afa.losses.views`: the multi-view layout and the anchor/positive/negative masks.
* :mod:`~afa.losses.contrastive`: the AFA loss (and the SupCon denominator).
* :mod:`~afa.losses.ntxent`: SimCLR's NT-Xent (ACL, DynACL) on the same machinery.
* :mod:`~afa.losses.distributed`: gathering the contrast set across ranks.
* :mod:`~afa.losses.trades`, :mod:`~afa.losses.mart`: the TRADES and MART outer losses.
"""

from afa.losses.contrastive import (
    AFALoss,
    AFAOutput,
    ContrastiveOutput,
    Denominator,
    afa_loss,
    contrastive_terms,
    per_row_terms,
    reduce_anchors,
)
from afa.losses.distributed import gather_with_grad, is_distributed, scale_grad, world_size
from afa.losses.mart import mart_loss, mart_terms
from afa.losses.ntxent import NTXentLoss, NTXentOutput, nt_xent, view_sample_ids
from afa.losses.trades import trades_loss, trades_terms
from afa.losses.views import AnchorSet, Views, anchor_mask, pair_masks

__all__ = [
    "AFALoss",
    "AFAOutput",
    "AnchorSet",
    "ContrastiveOutput",
    "Denominator",
    "NTXentLoss",
    "NTXentOutput",
    "Views",
    "afa_loss",
    "anchor_mask",
    "contrastive_terms",
    "gather_with_grad",
    "is_distributed",
    "mart_loss",
    "mart_terms",
    "nt_xent",
    "pair_masks",
    "per_row_terms",
    "reduce_anchors",
    "scale_grad",
    "trades_loss",
    "trades_terms",
    "view_sample_ids",
    "world_size",
]
