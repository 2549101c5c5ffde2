"""L2 models: the ``Classifier`` contract, input normalisation and the model registry.

Importing this package registers every architecture (``cnn``, ``resnet18``,
``preact_resnet18``, ``wrn``, ``wrn-28-10``, ``wrn-34-10``, ``wrn-70-16``, and DeepMind's
``dm-wrn`` / ``dm-preact-resnet`` that published RobustBench checkpoints load into, see
:mod:`afa.models.robustbench`).
"""

from afa.models import cnn, dm_wide_resnet, resnet, wide_resnet  # noqa: F401  (register them)
from afa.models.base import Classifier, Normalize
from afa.models.registry import MODELS, create_model, model_names, register_model

__all__ = ["MODELS", "Classifier", "Normalize", "create_model", "model_names", "register_model"]
