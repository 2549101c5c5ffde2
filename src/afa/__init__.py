"""afa: Adversarial Feature Alignment and an honest adversarial-training toolkit.

Layers (each imports only from the ones before it):
    L0 errors, _registry, config  ->  L1 data  ->  L2 models  ->  L3 attacks, losses
    ->  L4 methods  ->  L5 runs  ->  L6 training  ->  L7 evaluation, analysis
    ->  L8 report, quickstart, finetune  ->  L9 cli (docs/architecture.md)
"""

__version__ = "0.1.0"
