"""Datasets' readers: files (or a fixed generator) to uint8 arrays, one module per dataset.

Importing this package registers every dataset in ``DATASETS``: ``digits``, ``cifar10``,
``cifar100``, ``npz``, ``imagefolder``, ``tiny-imagenet``, ``cifar10-c``, ``cifar100-c`` and
``cifar10.1``. A new dataset is one file here, imported below. ``generated`` reads generated
training data (mixed in by the loader, not registered); ``download`` fetches and checks
archives for the readers.
"""

from __future__ import annotations

from afa.data.readers import (  # noqa: F401  (register the datasets)
    cifar,
    digits,
    folder,
    npz,
    shift,
    tiny_imagenet,
)
