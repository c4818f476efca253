"""npy through numpy: `np.load(..., mmap_mode="r")`, numpy's way to index an array larger than
memory; a batch is one fancy index of the map."""
from __future__ import annotations

import numpy as np

from .base import StockReader


class Npy(StockReader):
    def open(self):
        self.images = np.load(self.path / "images.npy", mmap_mode="r")
        self.labels = np.load(self.path / "labels.npy")

    def item(self, i):
        return np.array(self.images[i]), int(self.labels[i])

    def batch(self, ids):
        return self.images[ids], self.labels[ids]

    def read_all(self):
        return np.load(self.path / "images.npy"), np.load(self.path / "labels.npy")
