"""Image transforms: batched on-device augmentation (``augment``, ``contrastive_augment``)
and the common corruptions of Hendrycks & Dietterich, generated for any test set
(``corruptions``).

Nothing is imported here: ``afa.data.base`` reads ``contrastive_augment``'s options, which
must not pull in ``augment`` (it reads ``afa.data.base``).
"""
