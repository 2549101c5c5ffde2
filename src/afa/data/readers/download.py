"""Downloading a dataset file from its official address: checked, and moved into place atomically.

Shared by the datasets added after CIFAR (Tiny-ImageNet, CIFAR-10.1, CIFAR-10-C/100-C), and by
archive extraction that must not write outside its target folder.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from afa._io import atomic_open
from afa.errors import DataError

log = logging.getLogger(__name__)


def fetch(url: str, dest: Path, *, md5: str | None = None, hint: str = "") -> Path:
    """Download ``url`` to ``dest``; the file appears only once complete and checked.

    Args:
        url: the official address.
        dest: the target file (its folder is created).
        md5: the official checksum; ``None`` where the publisher gives none.
        hint: appended to the error message (e.g. where to put the file by hand).

    Raises:
        DataError: offline, refused, timed out, disk full, or a checksum mismatch; ``dest`` is
            then left as it was.
    """
    log.info("downloading %s to %s", url, dest)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with atomic_open(dest, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
            if md5 is not None and digest.hexdigest() != md5:
                raise DataError(
                    f"{url}: the downloaded file has md5 {digest.hexdigest()}, not the official "
                    f"{md5} (an interrupted or altered download); try again{hint}"
                )
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{dest.name}: downloading {url} failed ({exc}){hint}") from None
    return dest


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, md5: str, url: str) -> None:
    """A DataError naming ``path`` when its md5 is not the official one."""
    got = file_md5(path)
    if got != md5:
        raise DataError(
            f"{path}: md5 {got} does not match the official {md5}; the file is corrupted or "
            f"incomplete: delete it and download {url} again"
        )


def extract(archive: Path, into: Path) -> None:
    """Extract a ``.tar``/``.tar.gz``/``.zip`` into ``into``, refusing members that would land
    outside it (absolute paths, ``..``, links pointing out)."""
    into.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s into %s", archive, into)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = into.resolve()
                for name in zf.namelist():
                    if not (into / name).resolve().is_relative_to(root):
                        raise DataError(f"{archive}: member {name!r} would land outside {into}")
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(into, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{archive}: could not be extracted ({exc})") from None
