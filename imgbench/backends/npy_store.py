"""npy: `images.npy` (N, H, W, C) uint8 and `labels.npy` (N,) int64, numpy's own format.

The physical limit the other backends are compared with: a header and the raw pixels, written
with one `tofile` call and read back with `np.load`. Readers map `images.npy` (a row is a
memcpy, a batch one `np.take`) and hold the labels in memory. Open it without imgbench with
`np.load(path / "images.npy", mmap_mode="r")`.

`checksums.npy` (N,) uint64 holds each image's checksum (its pixels and label, see checksums.py).

Images of different shapes: `data.npy` (all pixels, flat) and `index.npy` (N, 5: offset, size,
height, width, channels) instead of images.npy (see flat.py); image i is
`data[offset:offset + size].reshape(height, width, channels)`.
"""
from __future__ import annotations

import os

import numpy as np

from ..images import ImageList
from . import checksums, flat
from .base import Backend
from .errors import NotAStoreError
from .handles import ArrayHandle
from .store import Store

IMAGES = "images.npy"
LABELS = "labels.npy"
DATA = "data.npy"
INDEX = "index.npy"
SUMS = checksums.FILE


class NpyBackend(Backend):
    name = "npy"

    def __init__(self, *, fsync: bool = False):
        super().__init__(fsync=fsync)

    def _write(self, tmp, images, labels, first_id, sources):
        arrays = [(IMAGES, images)]
        if isinstance(images, ImageList):
            data, index = flat.flatten(self, images, None)
            arrays = [(DATA, data), (INDEX, index)]
            hashing = checksums.Hashing(checksums.spans, len(index), data, index[:, 0], index[:, 1], labels)
        else:
            hashing = checksums.Hashing(checksums.rows, len(images), images, labels)
        with hashing:
            hashing.start()
            for name, a in (*arrays, (LABELS, labels)):
                self._save(tmp / name, a)
        sums = hashing.result()
        self._save(tmp / SUMS, sums)
        return sums

    def _save(self, path, a):
        # np.save writes the header, then the contiguous array with one tofile: no copy.
        with open(path, "wb") as f:
            np.save(f, a, allow_pickle=False)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def _load_flat(self, store: Store, mmap_mode=None):
        data = store.load_npy(DATA, mmap_mode is not None, (-1,), "u")
        index = store.load_npy(INDEX, shape=(store.count, 5), kinds="iu")
        labels = store.labels(store.load_npy(LABELS, shape=(-1,)), f"{store.path}/{LABELS}")
        if data.dtype != np.uint8:
            raise NotAStoreError(f"{store.path}/{DATA} holds {data.dtype}, not uint8; the store is damaged")
        flat.check_index(index, store, len(data), store.path / INDEX)
        return data, index, labels

    def _load(self, store: Store, mmap_mode=None) -> tuple[np.ndarray, np.ndarray]:
        images = store.load_npy(IMAGES, mmap_mode is not None, (store.count, *store.shape), "u")
        if images.dtype != np.uint8:
            raise NotAStoreError(f"{store.path}/{IMAGES} holds {images.dtype}, not uint8; the store is damaged")
        return images, store.labels(store.load_npy(LABELS, shape=(-1,)), f"{store.path}/{LABELS}")

    def _read_all(self, store):
        if store.shape is None:
            data, index, labels = self._load_flat(store)
            return flat.read_all(store, data, index, labels, self)
        return self._load(store)

    def _handle(self, store):
        if store.shape is None:
            h = flat.FlatHandle(store, *self._load_flat(store, mmap_mode="r"))
            h.file = DATA
        else:
            h = ArrayHandle(*self._load(store, mmap_mode="r"))
            h.file = IMAGES
        return h

    def _sums(self, store):
        return checksums.load(store)

    def _change_label(self, path, store, pos):
        labels = np.load(path / LABELS)
        labels[pos] += 1
        np.save(path / LABELS, labels)
        return LABELS
