"""HDF5 through h5py, as its docs show: a `File` opened in each process (never shared across a
fork), an item by integer index, a batch by fancy indexing, which h5py requires in increasing
order (the ids are sorted, read, and put back in the order asked); the whole dataset with `[()]`."""
from __future__ import annotations

import h5py
import numpy as np

from .base import StockReader


class Hdf5(StockReader):
    file, images, labels = "images.h5", "images", "labels"

    def open(self):
        self.h5 = h5py.File(self.path / self.file.format(n=self.count), "r")
        self.x, self.y = self.h5[self.images], self.h5[self.labels]

    def item(self, i):
        return self.x[i].astype(np.uint8, copy=False), int(self.y[i])

    def batch(self, ids):
        unique, back = np.unique(ids, return_inverse=True)  # increasing, each id once
        return self.x[unique][back].astype(np.uint8, copy=False), self.y[unique][back].astype(np.int64)

    def read_all(self):
        with h5py.File(self.path / self.file.format(n=self.count), "r") as f:
            return f[self.images][()].astype(np.uint8, copy=False), f[self.labels][()].astype(np.int64)
