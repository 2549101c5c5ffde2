"""The data step of ``gpu_check.sh``: read a class-per-folder tarball through afa's ``imagefolder``.

Decodes the tarball once into ``imagefolder``'s memory-mapped cache (``--cache-dir``), so
that the training runs after it start from the cache, and writes what was read as JSON:
train / validation / test sizes, classes, image shape and the seconds it took. The splits
are those the runs then use: ``--test-size`` images held out of ``train/`` as the test set
(stratified, afa's fixed seed), then ``--val-size`` held out of the rest for validation.

``--limit N`` first copies a balanced slice (the first ``ceil(N / classes)`` images of each
class, in path order) into ``--slice-dir`` and reads that folder instead: the 1,000-image
dry run of ``gpu_check.sh --cpu-smoke``.

    python benchmarks/gpu_check_data.py cifar10-jpeg-train.tar.gz --cache-dir /tmp/cache \\
        --test-size 5000 --val-size 1000 --out data.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from afa._io import write_json  # noqa: E402
from afa.data import load_splits  # noqa: E402
from afa.data.base import DataConfig  # noqa: E402
from afa.data.readers.folder import FileTree, class_files  # noqa: E402
from afa.data.readers.npz import CARVED_TEST_SEED  # noqa: E402
from afa.errors import UserError  # noqa: E402


def write_slice(source: Path, dest: Path, limit: int) -> Path:
    """Copy the first ``ceil(limit / classes)`` images of each class of ``source`` to ``dest``.

    ``source`` is a folder or archive holding ``train/<class>/<image>`` (possibly inside one
    top-level folder); ``dest/train/<class>/<image>`` is written. Returns ``dest``.
    """
    tree = FileTree(source)
    top = tree.find_prefix("train")
    classes = class_files(tree, top + "train")
    per_class = math.ceil(limit / len(classes))
    names = [n for files in classes.values() for n in files[:per_class]]
    for name, data in tree.read(names):
        target = dest / name[len(top) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def prepare(
    root: Path,
    cache_dir: Path,
    *,
    test_size: int,
    val_size: int,
    limit: int | None = None,
    slice_dir: Path | None = None,
) -> dict[str, Any]:
    """Decode ``root`` (or a slice of it) into the cache; what was read, as a dict."""
    t0 = time.perf_counter()
    if limit is not None:
        if slice_dir is None:
            raise ValueError("limit needs slice_dir")
        root = write_slice(root, slice_dir, limit)
    cfg = DataConfig(
        name="imagefolder",
        root=str(root),
        cache_dir=str(cache_dir),
        test_size=test_size,
        val_size=val_size,
    )
    splits = load_splits(cfg)
    return {
        "source": str(root),
        "dataset": "imagefolder",
        "classes": list(splits.info.class_names),
        "image_shape": list(splits.info.image_shape),
        "train": len(splits.train.labels),
        "val": len(splits.val.labels),
        "test": len(splits.test.labels),
        "test_seed": CARVED_TEST_SEED,
        "limit": limit,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="folder, .tar(.gz) or .zip with train/<class>/*")
    p.add_argument("--cache-dir", type=Path, required=True, help="imagefolder's data.cache_dir")
    p.add_argument("--test-size", type=int, default=5000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--limit", type=int, default=None, help="read a balanced slice of N images")
    p.add_argument("--slice-dir", type=Path, default=None, help="where the slice is written")
    p.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = p.parse_args(argv)
    try:
        summary = prepare(
            args.root,
            args.cache_dir,
            test_size=args.test_size,
            val_size=args.val_size,
            limit=args.limit,
            slice_dir=args.slice_dir,
        )
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
    print(
        f"{summary['source']}: {summary['train']} train + {summary['val']} val + "
        f"{summary['test']} test images {summary['image_shape']}, "
        f"{len(summary['classes'])} classes, {summary['seconds']:.1f} s"
    )
    if args.out is not None:
        write_json(args.out, summary)
    return summary


if __name__ == "__main__":
    main()
