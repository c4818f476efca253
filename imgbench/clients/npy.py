"""npy through numpy: `np.load(..., mmap_mode="r")`, numpy's way to index an array larger than
memory; a batch is one fancy index of the map. Images of different shapes: `data.npy` mapped,
each image a slice of it found in `index.npy`."""
from __future__ import annotations

import numpy as np

from .base import StockReader, flat_item


class Npy(StockReader):
    def open(self):
        self.labels = np.load(self.path / "labels.npy")
        if self.shape is None:
            self.data, self.index = np.load(self.path / "data.npy", mmap_mode="r"), np.load(self.path / "index.npy")
        else:
            self.images = np.load(self.path / "images.npy", mmap_mode="r")

    def item(self, i):
        if self.shape is None:
            return flat_item(self.data, self.index[i], "raw").copy(), int(self.labels[i])
        return np.array(self.images[i]), int(self.labels[i])

    def batch(self, ids):
        if self.shape is None:
            return super().batch(ids)
        return self.images[ids], self.labels[ids]

    def read_all(self):
        if self.shape is None:
            return super().read_all()
        return np.load(self.path / "images.npy"), np.load(self.path / "labels.npy")
