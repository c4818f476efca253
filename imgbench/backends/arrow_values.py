"""Image values in pyarrow arrays (Parquet, Lance, Hugging Face datasets' Arrow files): their
bytes and offsets as numpy views, decoded into the caller's arrays, a whole column in forked
workers that inherit the chunks (no library call in a child)."""
from __future__ import annotations

import mmap
import os

import numpy as np
import pyarrow as pa

from ..images import Codec, DecodeError, ImageList, as_blobs
from . import checksums, parallel
from .errors import NotAStoreError
from .handles import Handle, read_into

PART = ".coded-%010d.part"  # encoded bytes of the images from an id on, written by one worker
PARTS = ".coded-*.part"


def put(dst: np.ndarray, data, codec: Codec, where: str) -> None:
    try:
        codec.decode_into(dst, data, where)
    except DecodeError as e:
        raise NotAStoreError(str(e)) from None


def decode_range(bounds: tuple[int, int]) -> None:
    """Decode rows lo..hi-1 of a whole-store read from pyarrow's binary chunks (forked worker)."""
    j = parallel.job
    lo, hi = bounds
    for first, data, offs in j["chunks"]:
        for k in range(max(lo, first), min(hi, first + len(offs) - 1)):
            put(j["out"][k], data[offs[k - first]:offs[k - first + 1]], j["codec"], f"{j['where']} (image {k})")


def values(ch: pa.Array, px: int) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow image array's data bytes and value offsets (n + 1; raw values are px apart)."""
    bufs = ch.buffers()
    if pa.types.is_fixed_size_binary(ch.type):
        offs = (np.arange(len(ch) + 1) + ch.offset) * px
    else:
        dtype = np.int64 if pa.types.is_large_binary(ch.type) else np.int32
        offs = np.frombuffer(bufs[1], dtype)[ch.offset:ch.offset + len(ch) + 1]
    return np.frombuffer(bufs[-1], np.uint8), offs


def chunks_of(column: pa.ChunkedArray, px: int) -> list:
    """(first row, data, offsets) of each non-empty chunk of an image column."""
    first, chunks = 0, []
    for ch in column.chunks:
        if len(ch):
            chunks.append((first, *values(ch, px)))
        first += len(ch)
    return chunks


def image_column(b, tmp, images, labels, sources, rows_per_chunk: int) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Backend `b`'s image column for a table of the images, and their checksums: the input
    array's bytes as they are for raw pixels of one shape (fixed-size binary, no copy), else
    binary chunks of `rows_per_chunk` rows (see _binary_column)."""
    if b.encoding == "raw" and not isinstance(images, ImageList):
        px = int(np.prod(images.shape[1:]))
        image = pa.FixedSizeBinaryArray.from_buffers(pa.binary(px), len(images), [None, pa.py_buffer(images)])
        return pa.chunked_array([image]), checksums.rows(images, labels)
    return _binary_column(b, tmp, images, labels, sources, rows_per_chunk)


def _encode_range(bounds: tuple[int, int]) -> None:
    """Encoded bytes of images lo..hi-1 into one part file, their sizes into the shared array."""
    j = parallel.job
    images, codec, sizes, sums, labels = j["images"], j["codec"], j["sizes"], j["sums"], j["labels"]
    lo, hi = bounds
    with open(os.path.join(j["root"], PART % lo), "xb", buffering=2**20) as f:
        for i in range(lo, hi):
            data = codec.encode(images[i])
            sizes[i] = len(data)
            sums[i] = checksums.checksum(data, labels[i])
            f.write(data)


def _binary_column(b, tmp, images, labels, sources, rows_per_chunk: int) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Each image's stored bytes as a binary chunk per `rows_per_chunk` rows, and their checksums:
    encoded in forked workers (via part files), the original files' bytes, or raw pixels of
    several shapes."""
    n = len(images)
    if b.encoding not in ("raw", "source"):
        sizes = np.frombuffer(mmap.mmap(-1, 8 * n), np.int64, n)
        sums = np.frombuffer(mmap.mmap(-1, 8 * n), np.uint64, n)
        b._parallel(_encode_range, n, dict(images=images, codec=b.codec(), sizes=sizes, sums=sums,
                                              labels=labels.tolist(), root=str(tmp)))
        starts = np.r_[0, np.cumsum(sizes)]
        data = _gather_parts(tmp, starts)
        sums = sums.copy()
    else:
        if b.encoding == "raw":
            data = images.flat()
            starts = np.r_[0, np.cumsum(images.sizes)]
        else:
            blobs = as_blobs(sources)
            data, starts = blobs.flat(), np.r_[0, np.cumsum(blobs.sizes)]
        sums = checksums.spans(data, starts[:-1], np.diff(starts), labels)
    edges = list(range(0, n, rows_per_chunk)) + [n]
    big = max(starts[b] - starts[a] for a, b in zip(edges[:-1], edges[1:])) >= 2**31
    kind, dtype = (pa.large_binary(), np.int64) if big else (pa.binary(), np.int32)  # arrow offsets
    return pa.chunked_array([
        pa.Array.from_buffers(kind, b - a, [None, pa.py_buffer((starts[a:b + 1] - starts[a]).astype(dtype)),
                                            pa.py_buffer(data[starts[a]:starts[b]])])
        for a, b in zip(edges[:-1], edges[1:])], kind), sums

def _gather_parts(tmp, starts) -> np.ndarray:
    data = np.empty(int(starts[-1]), np.uint8)
    for part in sorted(tmp.glob(PARTS)):
        lo = int(part.stem.split("-")[1])
        fd = os.open(part, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            read_into(fd, memoryview(data)[starts[lo]:starts[lo] + size], 0, str(part))
        finally:
            os.close(fd)
        part.unlink()
    return data


class ValuesHandle(Handle):
    """A store whose images' stored bytes a subclass finds (`_values(pos)`: each row's bytes, in
    the order of `pos`), then copied (raw pixels, their size checked) or decoded into `out`."""

    def __init__(self, store, labels: np.ndarray, shapes, codec: Codec, shown: str):
        self.store, self.labels, self.shapes, self.codec, self.shown = store, labels, shapes, codec, shown
        self.raw = store.encoding == "raw"

    def _values(self, pos: np.ndarray):
        raise NotImplementedError

    def shapes_of(self, pos):
        return self.shapes[pos]

    def get(self, pos):
        shape = self.store.shape or tuple(self.shapes[pos])
        out = np.empty((1, *shape), np.uint8)
        self.batch(np.array([pos]), [out[0]])
        return out[0], int(self.labels[pos])

    def batch(self, pos, out):
        first = self.store.first_id
        for k, (p, value) in enumerate(zip(pos.tolist(), self._values(pos))):
            if not self.raw:
                put(out[k], value, self.codec, f"{self.shown} (image id {first + p})")
            elif len(value) != out[k].nbytes:
                raise NotAStoreError(f"{self.shown}: image id {first + p} holds {len(value):,} bytes, not the "
                                     f"{out[k].nbytes:,} of its shape; the store is damaged")
            else:
                out[k].reshape(-1)[:] = value
        return self.labels[pos]

    def stored(self, pos):
        (value,) = self._values(np.array([pos]))
        return value, int(self.labels[pos])
