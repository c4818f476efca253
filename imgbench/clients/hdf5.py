"""HDF5 through h5py, as its docs show: a `File` opened in each process (never shared across a
fork), an item by integer index, a batch by fancy indexing, which h5py requires in increasing
order without repeats (the ids are made so, read, and put back in the order asked); the whole
dataset with `[()]`. Encoded images and images of different shapes: each a slice of `data`
found in `index`."""
from __future__ import annotations

import h5py
import numpy as np

from .base import StockReader, flat_item


class Hdf5(StockReader):
    file, images, labels = "images.h5", "images", "labels"

    def open(self):
        self.h5 = h5py.File(self.path / self.file.format(n=self.count), "r")
        self.y = self.h5[self.labels][()].astype(np.int64)  # small: read once, as the other readers do
        self.flat = "index" in self.h5  # encoded, or of different shapes: `data` and its `index`
        if self.flat:
            self.x, self.index = self.h5["data"], self.h5["index"][()]
        else:
            self.x = self.h5[self.images]

    def item(self, i):
        if self.flat:
            return flat_item(self.x, self.index[i], self.encoding), int(self.y[i])
        return self.x[i].astype(np.uint8, copy=False), int(self.y[i])

    def batch(self, ids):
        if self.flat:
            return super().batch(ids)
        unique, back = np.unique(ids, return_inverse=True)  # increasing, each id once
        x = self.x[unique] if len(unique) else self.x[:0]
        if len(unique) != len(ids) or not np.array_equal(unique, ids):  # not already in that order
            x = x[back]
        return x.astype(np.uint8, copy=False), self.y[ids]

    def read_all(self):
        self._ready()
        if self.flat:
            return super().read_all()
        with h5py.File(self.path / self.file.format(n=self.count), "r") as f:
            return f[self.images][()].astype(np.uint8, copy=False), f[self.labels][()].astype(np.int64)
