"""A store opened in one process, as readers, whole-store reads and verify use it: a Handle.

Each format makes its own (see its `_handle`); the shapes most share are here: records decoded
one at a time (RecordHandle) and rows of an array in memory or mapped from a file (ArrayHandle).
"""
from __future__ import annotations

import os

import numpy as np

from ..images import Codec, DecodeError
from .errors import NotAStoreError
from .store import OPEN_FLAGS, Store


def read_into(fd: int, buf: memoryview, offset: int, where: str) -> None:
    """Fill `buf` from file offset `offset` (pread, finishing short reads)."""
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], offset + done)
        if not got:
            raise NotAStoreError(f"{where} ends early; the store is damaged")
        done += got


class Handle:
    """One process's open store, as a backend's reader needs it. Positions are checked rows."""

    # how the reader reads ('random' or 'sequential', advise.py): a handle that maps files as it
    # meets them advises each new map so
    advice: str | None = None

    def get(self, pos: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def batch(self, pos: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Read rows `pos` (any order, repeats allowed) into `out`; return their labels (int64)."""
        raise NotImplementedError

    def stored(self, pos: int) -> tuple:
        """The bytes the store keeps for row `pos` (a buffer) and its label: what its checksum covers."""
        raise NotImplementedError

    def stored_range(self, lo: int, hi: int):
        """stored(p) for rows lo..hi-1, in order (handles with a faster way to read many override it)."""
        for p in range(lo, hi):
            yield self.stored(p)

    def where(self, pos: int) -> str:
        """The file (in the store) that holds row `pos`'s bytes, for messages."""
        return self.file

    def locate(self, pos: int) -> tuple[str, int] | None:
        """(file in the store, byte offset) of row `pos`'s stored bytes where a search of the files
        for them could find a stale copy first (LMDB's free pages); None: search the files."""
        return None

    file = "the store's data"
    # Where raw rows lie in files, for reading many (verify): [(path, byte offset, rows)] in row
    # order, rows of `row_bytes` each; None when they do not (records, compressed chunks).
    spans = None
    row_bytes = 0

    def rows(self, lo: int, hi: int, buf: bytearray | None = None) -> tuple:
        """Rows lo..hi-1 read from `spans` into `buf` (reused when large enough): (buffer, bytes
        per row, labels as a list). pread into one buffer: no page faults of a fresh array or a
        memory map, so checking a store costs about what copying it does."""
        rb, need = self.row_bytes, (hi - lo) * self.row_bytes
        if buf is None or len(buf) < need:
            buf = bytearray(need)
        mv, done, start = memoryview(buf), 0, 0
        for path, offset, count in self.spans:
            a, b = max(lo, start), min(hi, start + count)
            if a < b:
                fd = os.open(path, OPEN_FLAGS)  # a file of the store, checked when it was opened
                try:
                    read_into(fd, mv[done:done + (b - a) * rb], offset + (a - start) * rb, path)
                finally:
                    os.close(fd)
                done += (b - a) * rb
            start += count
        return buf, rb, self.labels[lo:hi].tolist()

    def close(self) -> None:
        pass


class RecordHandle(Handle):
    """A store of records: each image's stored bytes (`_payload(pos)`, a buffer) decoded by the
    store's codec (a copy for raw pixels) into the caller's array. `shapes` (N, 3) is every
    image's shape, or None when the store has one shape; `shapes_of` may read them lazily."""

    def __init__(self, store: Store, labels: np.ndarray, codec: Codec, shapes: np.ndarray | None = None):
        self.store, self.labels, self.codec, self.shapes = store, labels, codec, shapes

    def _payload(self, pos: int):
        raise NotImplementedError

    def shapes_of(self, pos: np.ndarray) -> np.ndarray:
        return self.shapes[pos]

    def stored(self, pos):
        return self._payload(pos), int(self.labels[pos])

    def _into(self, dst: np.ndarray, pos: int) -> None:
        try:
            self.codec.decode_into(dst, self._payload(pos), f"{self.store.path}: image id {self.store.first_id + pos}")
        except DecodeError as e:
            raise NotAStoreError(str(e)) from None

    def get(self, pos):
        shape = self.store.shape or tuple(self.shapes_of(np.array([pos]))[0])
        out = np.empty(shape, np.uint8)
        self._into(out, pos)
        return out, int(self.labels[pos])

    def batch(self, pos, out):
        order = np.argsort(pos, kind="stable")  # storage order: neighbouring pages, fewer seeks when cold
        for k, p in zip(order.tolist(), pos[order].tolist()):
            self._into(out[k], p)
        return self.labels[pos]


class ArrayHandle(Handle):
    """Rows of an array in memory or mapped from a file (npy, a contiguous HDF5 dataset): a row is
    a memory copy, no library call."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if isinstance(images, np.memmap) and images.filename and images.flags.c_contiguous:
            self.spans, self.row_bytes = [(images.filename, images.offset, len(images))], images[0].nbytes if len(
                images) else 0
        # a plain ndarray view: indexing a np.memmap costs a subclass instance per result
        self.images, self.labels = np.asarray(images), labels

    def get(self, pos):
        return np.array(self.images[pos]), int(self.labels[pos])

    def batch(self, pos, out):
        # positions are checked already; numpy buffers `out` in mode "raise", not in "clip"
        np.take(self.images, pos, axis=0, out=out, mode="clip")
        return self.labels[pos]

    def stored(self, pos):
        return self.images[pos], int(self.labels[pos])

    def close(self):
        self.images = None  # unmapped when the last view goes (closing a map under a view fails)
