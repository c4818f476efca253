"""Zarr through zarr-python 3, as its docs show: `zarr.open_group(..., mode="r")` once per process,
an item by integer index, a batch by orthogonal selection (`oindex`, ids in any order), which
zarr-python reads chunk by chunk (each needed chunk decoded once); the whole array with `[:]`.
zarr-python resets its event loop in a forked child (since 3.0.3), so a worker may fork after
the parent read."""
from __future__ import annotations

import zarr

from .base import StockReader, flat_item


class Zarr(StockReader):
    def open(self):
        group = zarr.open_group(self.path / "images.zarr", mode="r")
        self.labels = group["labels"][:]
        if self.shape is None:  # images of different shapes: `data` and its `index`
            self.x, self.index = group["data"], group["index"][:]
        else:
            self.x = group["images"]

    def item(self, i):
        if self.shape is None:
            return flat_item(self.x, self.index[i], "raw"), int(self.labels[i])
        return self.x[i], int(self.labels[i])

    def batch(self, ids):
        if self.shape is None:
            return super().batch(ids)
        return self.x.oindex[ids], self.labels[ids]

    def read_all(self):
        if self.shape is None:
            return super().read_all()
        group = zarr.open_group(self.path / "images.zarr", mode="r")
        return group["images"][:], group["labels"][:]
