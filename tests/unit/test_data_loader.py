"""Batch loading: per-epoch order, rank shards, memory-mapped generated data, mixing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_files import write_cifar_like  # tests/cifar_files.py

from afa.data import (
    BatchLoader,
    DataConfig,
    ImageSet,
    MixedLoader,
    build_train_loader,
    load_generated,
    load_splits,
)
from afa.data.readers.npz import read_npz_array
from afa.errors import DataError


def indexed_set(n: int, shape=(3, 4, 4), offset: int = 0) -> ImageSet:
    """Images that carry their own index (pixels 0 and 1 = index mod 256, index // 256)."""
    images = np.zeros((n, *shape), np.uint8)
    idx = np.arange(offset, offset + n)
    images[:, 0, 0, 0] = idx % 256
    images[:, 0, 0, 1] = idx // 256
    return ImageSet(images=images, labels=idx.astype(np.int64))


def decode(x: torch.Tensor) -> np.ndarray:
    return x[:, 0, 0, 0].numpy().astype(np.int64) + 256 * x[:, 0, 0, 1].numpy().astype(np.int64)


def epoch_labels(loader) -> list[np.ndarray]:
    return [y.numpy() for _, y in loader]


# ---------------------------------------------------------------------------------------------
# read_npz_array


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.arange(12, dtype=np.int64),
        np.asfortranarray(np.arange(20, dtype=np.float32).reshape(4, 5)),
        np.zeros((0, 3), np.uint8),
    ],
)
def test_read_npz_array_memory_maps_stored_members(tmp_path, array):
    path = tmp_path / "a.npz"
    np.savez(path, first=np.ones(3), a=array)
    got = read_npz_array(path, "a", require_mmap=True)
    np.testing.assert_array_equal(got, array)
    assert got.dtype == array.dtype and got.shape == array.shape
    if array.size:
        assert isinstance(got, np.memmap) and not got.flags.writeable


def test_read_npz_array_compressed(tmp_path):
    path = tmp_path / "c.npz"
    np.savez_compressed(path, a=np.arange(5))
    np.testing.assert_array_equal(read_npz_array(path, "a"), np.arange(5))
    with pytest.raises(DataError, match=r"compressed.*np\.savez") as err:
        read_npz_array(path, "a", require_mmap=True)
    assert str(path) in str(err.value)


def test_read_npz_array_truncated_and_not_a_zip(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_npz_array(junk, "a")
    path = tmp_path / "t.npz"
    np.savez(path, a=np.zeros(1000, np.uint8))
    path.write_bytes(path.read_bytes()[:600])  # cuts the array and the zip directory
    with pytest.raises(DataError, match=str(path)):
        read_npz_array(path, "a")


# ---------------------------------------------------------------------------------------------
# BatchLoader


def test_batch_loader_serves_the_right_rows():
    data = indexed_set(50)
    loader = BatchLoader(data, 8, shuffle=True, drop_last=False, seed=0)
    assert len(loader) == 7
    seen = []
    for x, y in loader:
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[1:] == (3, 4, 4)
        np.testing.assert_array_equal(decode(x), y.numpy())  # rows and labels stay paired
        seen.append(y.numpy())
    seen = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(seen), np.arange(50))
    assert not np.array_equal(seen, np.arange(50))


def test_batch_loader_order_is_a_function_of_seed_and_epoch():
    data = indexed_set(40)
    a = BatchLoader(data, 5, shuffle=True, drop_last=True, seed=1)
    b = BatchLoader(data, 5, shuffle=True, drop_last=True, seed=1)
    state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    a.set_epoch(3)
    b.set_epoch(3)
    first = epoch_labels(a)
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(epoch_labels(b)))
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(epoch_labels(a)))
    a.set_epoch(4)
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch_labels(a)))
    c = BatchLoader(data, 5, shuffle=True, drop_last=True, seed=2)
    c.set_epoch(3)
    assert not np.array_equal(np.concatenate(first), np.concatenate(epoch_labels(c)))
    # The global RNGs are untouched.
    assert torch.equal(state[0], torch.random.get_rng_state())
    np.testing.assert_array_equal(state[1], np.random.get_state()[1])


def test_batch_loader_without_shuffle_keeps_dataset_order():
    loader = BatchLoader(indexed_set(10), 4, shuffle=False, drop_last=False, seed=0)
    assert [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_shards_are_disjoint_and_cover_the_epoch(world_size, drop_last):
    n, batch = 47, 4
    data = indexed_set(n)
    loaders = [
        BatchLoader(
            data, batch, shuffle=True, drop_last=drop_last, seed=5, rank=r, world_size=world_size
        )
        for r in range(world_size)
    ]
    for loader in loaders:
        loader.set_epoch(2)
    lengths = {len(loader) for loader in loaders}
    assert len(lengths) == 1  # every rank runs the same number of batches
    shards = [np.concatenate(epoch_labels(loader)) for loader in loaders]
    assert all(len(s) == len(shards[0]) for s in shards)
    served = np.concatenate(shards)
    per_rank = n // world_size if drop_last else math.ceil(n / world_size)
    assert lengths.pop() == (per_rank // batch if drop_last else math.ceil(per_rank / batch))
    if drop_last:
        assert len(np.unique(served)) == len(served)  # disjoint
    else:
        # Padded: everything is served, and only the padding repeats an index.
        assert set(served) == set(range(n))
        assert len(served) - len(np.unique(served)) == per_rank * world_size - n


def test_batch_loader_validates_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(indexed_set(4), 0, shuffle=False, drop_last=False, seed=0)
    with pytest.raises(ValueError, match="rank 2"):
        BatchLoader(indexed_set(4), 1, shuffle=False, drop_last=False, seed=0, rank=2, world_size=2)


# ---------------------------------------------------------------------------------------------
# generated data


def write_generated(path, n, offset=0, shape=(8, 8, 3), num_classes=10, compressed=False):
    """A generated npz (NHWC) whose images carry their global index; returns the NCHW truth."""
    nchw = indexed_set(n, (shape[2], shape[0], shape[1]), offset).images
    rng = np.random.default_rng(offset)
    nchw[:, 1:] = rng.integers(0, 256, size=nchw[:, 1:].shape, dtype=np.uint8)
    labels = np.arange(offset, offset + n) % num_classes
    save = np.savez_compressed if compressed else np.savez
    save(path, image=nchw.transpose(0, 2, 3, 1), label=labels)
    return nchw, labels


def info_for(shape=(3, 8, 8), num_classes=10):
    from afa.data import DatasetInfo

    return DatasetInfo(
        "toy",
        num_classes,
        shape,
        (0.5,) * 3,
        (0.25,) * 3,
        tuple(map(str, range(num_classes))),
        "crop-flip",
    )


def test_load_generated_is_memory_mapped_nchw(tmp_path):
    truth, labels = write_generated(tmp_path / "g.npz", 30)
    (g,) = load_generated([tmp_path / "g.npz"], info_for())
    assert g.images.shape == (30, 3, 8, 8)
    assert isinstance(g.images.base, np.memmap)
    np.testing.assert_array_equal(g.images, truth)
    np.testing.assert_array_equal(g.labels, labels)
    assert g.labels.dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "arrays", "match"),
    [
        ({"compressed": True}, None, r"compressed.*np\.savez"),
        (
            {},
            {"image": np.zeros((2, 8, 8, 3), np.float32), "label": np.zeros(2, int)},
            r"'image'.*uint8",
        ),
        (
            {},
            {"image": np.zeros((2, 3, 8, 8), np.uint8), "label": np.zeros(2, int)},
            r"'image'.*\(N, 8, 8, 3\)",
        ),
        (
            {},
            {"image": np.zeros((2, 8, 8, 3), np.uint8), "label": np.array([0, 10])},
            r"'label'.*label 10 is outside \[0, 10\)",
        ),
        (
            {},
            {"image": np.zeros((2, 8, 8, 3), np.uint8), "label": np.zeros(3, int)},
            "2 images but 3 labels",
        ),
        (
            {},
            {"images": np.zeros((2, 8, 8, 3), np.uint8), "label": np.zeros(2, int)},
            "no array 'image'",
        ),
    ],
)
def test_load_generated_errors_name_the_file(tmp_path, kwargs, arrays, match):
    path = tmp_path / "bad.npz"
    if arrays is None:
        write_generated(path, 4, **kwargs)
    else:
        np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as err:
        load_generated([path], info_for())
    assert str(path) in str(err.value)


def mixed_setup(tmp_path, n_real=40, sizes=(25, 35)):
    real = indexed_set(n_real, (3, 8, 8), offset=10_000)
    truth, offset = [], 0
    for i, n in enumerate(sizes):
        truth.append(write_generated(tmp_path / f"g{i}.npz", n, offset=offset))
        offset += n
    gen = load_generated([tmp_path / f"g{i}.npz" for i in range(len(sizes))], info_for())
    return real, gen, np.concatenate([t[0] for t in truth])


def test_mixed_loader_batches(tmp_path):
    real, gen, truth = mixed_setup(tmp_path)
    loader = MixedLoader(real, gen, 10, fraction=0.7, seed=0)
    assert (loader.n_real, loader.n_gen) == (3, 7)
    assert len(loader) == 40 // 3
    gen_seen = []
    for x, y in loader:
        assert x.shape == (10, 3, 8, 8) and x.dtype == torch.uint8 and y.shape == (10,)
        ids = decode(x)
        assert np.all(ids[:3] >= 10_000) and np.all(ids[3:] < 10_000)
        np.testing.assert_array_equal(y[:3].numpy(), ids[:3])  # real labels = their index
        np.testing.assert_array_equal(y[3:].numpy(), ids[3:] % 10)
        # The generated rows are exactly the files' images, transposed to NCHW.
        np.testing.assert_array_equal(x[3:].numpy(), truth[ids[3:]])
        gen_seen.append(ids[3:])
    gen_seen = np.concatenate(gen_seen)
    # 13 batches x 7 = 91 > 60 generated: chained permutations, each a full pass.
    assert len(gen_seen) == 91
    assert set(gen_seen[:60]) == set(range(60))


def test_mixed_loader_without_replacement_and_rank_shards(tmp_path):
    real, gen, _ = mixed_setup(tmp_path, n_real=40, sizes=(100, 150))
    loaders = [
        MixedLoader(real, gen, 8, fraction=0.5, seed=3, rank=r, world_size=2) for r in range(2)
    ]
    for loader in loaders:
        loader.set_epoch(1)
    assert [len(loader) for loader in loaders] == [5, 5]  # 20 real each, 4 per batch
    gen_ids, real_ids = [], []
    for loader in loaders:
        for x, _ in loader:
            ids = decode(x)
            real_ids.append(ids[:4])
            gen_ids.append(ids[4:])
    gen_ids, real_ids = np.concatenate(gen_ids), np.concatenate(real_ids)
    assert len(gen_ids) == 40 and len(np.unique(gen_ids)) == 40  # disjoint across ranks
    assert len(np.unique(real_ids)) == 40  # the real shards too
    assert gen_ids.max() >= 100  # both files are drawn from


def test_mixed_loader_order_is_a_function_of_seed_and_epoch(tmp_path):
    real, gen, _ = mixed_setup(tmp_path)

    def run(epoch, seed=0):
        loader = MixedLoader(real, gen, 10, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate([decode(x) for x, _ in loader])

    np.testing.assert_array_equal(run(2), run(2))
    assert not np.array_equal(run(2), run(3))
    assert not np.array_equal(run(2), run(2, seed=1))


def test_mixed_loader_validates_fraction(tmp_path):
    real, gen, _ = mixed_setup(tmp_path)
    with pytest.raises(ValueError, match="no real example"):
        MixedLoader(real, gen, 10, fraction=1.0, seed=0)
    with pytest.raises(ValueError, match="no real example"):
        MixedLoader(real, gen, 10, fraction=0.97, seed=0)
    with pytest.raises(ValueError, match="generated images are"):
        MixedLoader(indexed_set(10, (3, 4, 4)), gen, 10, seed=0)


def test_build_train_loader(tmp_path):
    write_cifar_like(tmp_path, "cifar10", n_train=64, n_test=10)
    cfg = DataConfig(name="cifar10", root=str(tmp_path), download=False, val_size=0)
    splits = load_splits(cfg)
    plain = build_train_loader(splits, cfg, batch_size=16, seed=0)
    assert isinstance(plain, BatchLoader) and len(plain) == 4
    gen_path = tmp_path / "gen.npz"
    write_generated(gen_path, 50, shape=(32, 32, 3))
    cfg = DataConfig(
        name="cifar10",
        root=str(tmp_path),
        download=False,
        val_size=0,
        generated=[str(gen_path)],
        generated_fraction=0.5,
    )
    mixed = build_train_loader(splits, cfg, batch_size=16, seed=0, rank=1, world_size=2)
    assert isinstance(mixed, MixedLoader)
    assert (mixed.n_real, mixed.n_gen, len(mixed)) == (8, 8, 4)
    x, y = next(iter(mixed))
    assert x.shape == (16, 3, 32, 32)


def _mapped_file_mib() -> float:
    """Resident pages of mapped files (RssFile, plus RssShmem when /tmp is a tmpfs)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    if "RssFile" not in fields:
        pytest.skip("no RssFile in /proc/self/status")
    return sum(int(fields.get(k, "0 kB").split()[0]) for k in ("RssFile", "RssShmem")) / 1024


def test_reading_a_memory_map_does_not_keep_its_pages(tmp_path):
    """Batches of a ~60 MB generated file leave the process's mapped pages where they were."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc")
    path = tmp_path / "big.npz"
    n = 20_000
    np.savez(path, image=np.ones((n, 32, 32, 3), np.uint8), label=np.arange(n) % 10)
    (gen,) = load_generated([path], info_for((3, 32, 32)))
    real = indexed_set(3_000, (3, 32, 32))
    loader = MixedLoader(real, [gen], 128, fraction=0.75, seed=0)
    next(iter(BatchLoader(real, 64, shuffle=True, drop_last=True, seed=0)))  # warm-up
    before = _mapped_file_mib()
    for _, (x, _) in zip(range(25), loader, strict=False):
        assert int(x[:, :, 0, 0].sum()) > 0
    # 2,400 random reads: without releasing the pages, most of the file would stay mapped.
    assert _mapped_file_mib() - before < 8
