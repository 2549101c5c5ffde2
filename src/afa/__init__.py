"""afa: Adversarial Feature Alignment and an honest adversarial-training toolkit.

Layers (each imports only from the ones before it):
    L0 errors, _registry, config  ->  L1 data  ->  L2 models  ->  L3 attacks, losses
    ->  L4 methods  ->  L5 training  ->  L6 evaluation, analysis  ->  L7 report, cli
"""

__version__ = "0.1.0"
