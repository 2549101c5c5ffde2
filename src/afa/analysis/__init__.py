"""L7 analysis: feature alignment, feature geometry, local Lipschitzness, input separation.

The measurements of the AFA paper's claim (Park et al. 2024) that the robustness/accuracy
tradeoff comes from feature misalignment rather than from the input space, with the
definitions of docs/method.md, "Measuring alignment". Metrics are pure tensor functions;
:func:`analyze` composes them for a trained model and :func:`write_analysis` writes
``analysis.json`` and its figures into the run directory.
"""

from afa.analysis.alignment import (
    CentroidAlignment,
    centroid_alignment,
    class_centroids,
    knn_alignment,
    margin_vs_robustness,
    restatement,
    summarize,
)
from afa.analysis.analyze import FIGURES, analyze, write_analysis
from afa.analysis.geometry import cosine_geometry
from afa.analysis.lipschitz import lipschitz_ratio, local_lipschitz
from afa.analysis.measure import (
    AlignmentReport,
    InputAlignment,
    alignment_markdown,
    measure_alignment,
)
from afa.analysis.separation import input_separation, min_linf_to_other_label

__all__ = [
    "FIGURES",
    "AlignmentReport",
    "InputAlignment",
    "alignment_markdown",
    "measure_alignment",
    "CentroidAlignment",
    "analyze",
    "centroid_alignment",
    "class_centroids",
    "cosine_geometry",
    "input_separation",
    "knn_alignment",
    "lipschitz_ratio",
    "local_lipschitz",
    "margin_vs_robustness",
    "min_linf_to_other_label",
    "restatement",
    "summarize",
    "write_analysis",
]
