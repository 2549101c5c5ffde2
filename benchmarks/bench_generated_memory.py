"""Memory of the generated-data path: a multi-GB generated .npz is memory-mapped, not loaded.

Writes a synthetic generated file in the Wang et al. 2023 format (``image`` uint8 (N, 32, 32, 3),
``label``), uncompressed and streamed chunk by chunk (writing it never holds it in memory), then
iterates batches of a MixedLoader over it and prints the process's memory before and after:

* VmHWM / ru_maxrss: peak resident set, which counts mapped file pages the batches touched;
* RssAnon: memory the process allocated itself (what loading the file whole would inflate);
* RssFile: pages of the file currently mapped in; clean page cache the kernel can drop at will.

Run:  python benchmarks/bench_generated_memory.py --n 1000000 --batches 200 [--dir DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from afa.data import DatasetInfo, ImageSet, MixedLoader, load_generated  # noqa: E402

SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def write_generated_npz(path: Path, n: int, *, chunk: int = 8192, seed: int = 0) -> None:
    """Stream an uncompressed .npz with ``image`` (n, 32, 32, 3) uint8 and ``label`` int64."""
    rng = np.random.default_rng(seed)
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, *SHAPE)}
    row = int(np.prod(SHAPE))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("image.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, n, chunk):
                f.write(rng.bytes(min(chunk, n - start) * row))
        with zf.open("label.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, rng.integers(0, NUM_CLASSES, n, dtype=np.int64))


def memory() -> dict[str, float]:
    """MiB figures from /proc/self/status and getrusage."""
    out = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def show(stage: str, mem: dict[str, float]) -> None:
    cols = ("VmHWM", "ru_maxrss", "VmRSS", "RssAnon", "RssFile")
    print(f"{stage:<34}" + "".join(f"{mem.get(c, float('nan')):>11.1f}" for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="generated images")
    parser.add_argument("--batches", type=int, default=200, help="batches to iterate")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--fraction", type=float, default=0.7, help="generated share per batch")
    parser.add_argument("--n-real", type=int, default=50_000, help="in-memory real images")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(dir=args.dir, prefix="afa-bench-"))
    path = workdir / "generated.npz"
    try:
        print(
            f"{'stage (MiB)':<34}"
            + "".join(f"{c:>11}" for c in ("VmHWM", "ru_maxrss", "VmRSS", "RssAnon", "RssFile"))
        )
        show("start", memory())
        t0 = time.perf_counter()
        write_generated_npz(path, args.n)
        write_s = time.perf_counter() - t0
        show("after writing the file", memory())

        rng = np.random.default_rng(1)
        real = ImageSet(
            images=rng.integers(0, 256, (args.n_real, 3, 32, 32), dtype=np.uint8),
            labels=rng.integers(0, NUM_CLASSES, args.n_real, dtype=np.int64),
        )
        info = DatasetInfo(
            "bench",
            NUM_CLASSES,
            (3, 32, 32),
            (0.5,) * 3,
            (0.25,) * 3,
            tuple(map(str, range(NUM_CLASSES))),
            "crop-flip",
        )
        show("after the in-memory real set", memory())
        t0 = time.perf_counter()
        generated = load_generated([path], info)
        open_s = time.perf_counter() - t0
        show("after load_generated (mmap)", memory())

        loader = MixedLoader(real, generated, args.batch_size, args.fraction, seed=0)
        loader.set_epoch(0)
        anon_peak, served, t0 = 0.0, 0, time.perf_counter()
        for k, (x, _) in enumerate(loader):
            served += len(x)
            anon_peak = max(anon_peak, memory()["RssAnon"])
            if k + 1 == args.batches:
                break
            if k == 0:
                show("after 1 batch", memory())
        iter_s = time.perf_counter() - t0
        show(f"after {k + 1} batches", memory())

        size = path.stat().st_size
        print(f"\nfile: {path} {size / 2**30:.2f} GiB ({size:,} bytes), {args.n:,} images")
        print(f"written in {write_s:.1f} s; load_generated (mmap + label checks) {open_s:.2f} s")
        print(
            f"{k + 1} batches of {args.batch_size} ({loader.n_gen} generated + {loader.n_real} "
            f"real; {len(loader)} per epoch) in {iter_s:.2f} s: {served / iter_s:,.0f} images/s"
        )
        print(f"peak RssAnon while iterating: {anon_peak:.1f} MiB")
    finally:
        if args.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
