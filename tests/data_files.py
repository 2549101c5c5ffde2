"""Data files no library writes cheaply, crafted byte by byte in their real formats: archives
whose members inflate to gigabytes (zip, tar.gz, a tar pax header), PNGs of any size and bit
depth. A 1 GiB member of zeros costs about 1 MB and well under a second to write here: the
deflate block of 16 MiB of zeros after a full flush depends on nothing before it, so it is
compressed once and repeated.

Imported by tests in ``tests/unit`` and ``tests/integration`` (pytest puts this folder, the
one holding the suite's ``conftest.py``, on ``sys.path``).
"""

from __future__ import annotations

import gzip
import struct
import tarfile
import zlib
from pathlib import Path

CHUNK = 1 << 24  # 16 MiB
GiB = 1 << 30


def deflated_zeros(size: int) -> bytes:
    """A raw deflate stream (final block included) of ``size`` zero bytes."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(bytes(CHUNK)) + co.flush(zlib.Z_FULL_FLUSH) if size >= CHUNK else b""
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * (size // CHUNK) + tail.compress(bytes(size % CHUNK)) + tail.flush()


def crc32_of_zeros(size: int) -> int:
    crc, zeros = 0, bytes(min(size, CHUNK))
    for start in range(0, size, CHUNK):
        crc = zlib.crc32(zeros[: min(CHUNK, size - start)], crc)
    return crc


def write_zip(
    path: Path,
    members: dict[str, bytes] | None = None,
    *,
    zeros: dict[str, int] | None = None,
    declared: dict[str, int] | None = None,
) -> Path:
    """A deflated zip of ``members`` and of ``zeros`` (name -> that many zero bytes), in that
    order; ``declared`` (name -> size) makes the directory claim another uncompressed size."""
    entries = []  # (name, compressed, crc, size)
    for name, data in (members or {}).items():
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        entries.append((name, co.compress(data) + co.flush(), zlib.crc32(data), len(data)))
    for name, size in (zeros or {}).items():
        entries.append((name, deflated_zeros(size), crc32_of_zeros(size), size))
    local, central = bytearray(), bytearray()
    for name, comp, crc, size in entries:
        raw = name.encode()
        size = (declared or {}).get(name, size)
        head = (20, 0, 8, 0, 0x21, crc, len(comp), size, len(raw))  # deflate, 1980-01-01
        central += struct.pack("<IH5H3I5H2I", 0x02014B50, 20, *head, 0, 0, 0, 0, 0, len(local))
        central += raw
        local += struct.pack("<I5H3I2H", 0x04034B50, *head, 0) + raw + comp
    n = len(entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def _tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, 0
    return info.tobuf(tarfile.USTAR_FORMAT)


def write_tar_gz(
    path: Path,
    members: dict[str, bytes] | None = None,
    *,
    zeros: dict[str, int] | None = None,
    pax_header: int | None = None,
) -> Path:
    """A .tar.gz of ``members``, then ``zeros`` (name -> that many zero bytes, a multiple of
    16 MiB); ``pax_header`` puts first a pax extended header of that many zero bytes. Written as
    concatenated gzip members (gzip readers read them as one stream)."""
    parts = []
    if pax_header is not None:
        parts.append(gzip.compress(_tar_header("PaxHeaders/0", pax_header, tarfile.XHDTYPE)))
        parts.append(_gzip_zeros(pax_header))
    plain = b""
    for name, data in (members or {}).items():
        plain += _tar_header(name, len(data)) + data + bytes(-len(data) % 512)
    parts.append(gzip.compress(plain, mtime=0))
    for name, size in (zeros or {}).items():
        assert size % CHUNK == 0
        parts.append(gzip.compress(_tar_header(name, size), mtime=0))
        parts.append(_gzip_zeros(size))
    parts.append(gzip.compress(bytes(1024), mtime=0))  # the end-of-archive blocks
    path.write_bytes(b"".join(parts))
    return path


def _gzip_zeros(size: int) -> bytes:
    assert size % CHUNK == 0
    return gzip.compress(bytes(CHUNK), compresslevel=9, mtime=0) * (size // CHUNK)


def png_bytes(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    color_type: int = 0,
    rows: bytes | None = None,
) -> bytes:
    """A PNG (``color_type`` 0 gray, 2 RGB, 3 palette, 4 gray-alpha, 6 RGBA) of raw scanlines
    ``rows`` (each led by its filter byte), or all zero when None: a 20000x20000 image costs
    about 60 KB here, where Pillow would build it in memory first."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    stride = 1 + (width * channels * bit_depth + 7) // 8
    if rows is None:
        size = height * stride
        adler = ((size % 65521) << 16) | 1  # of `size` zero bytes
        idat = b"\x78\xda" + deflated_zeros(size) + struct.pack(">I", adler)
    else:
        assert len(rows) == height * stride
        idat = zlib.compress(rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    plte = chunk(b"PLTE", bytes(3)) if color_type == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + plte
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
