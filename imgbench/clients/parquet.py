"""Parquet through pyarrow, as its docs show: the file read once per process as a memory-mapped
table, a batch by `Table.take` of its rows, the `image` column's values decoded with Pillow (PNG
or JPEG bytes) or viewed as pixels (raw, a fixed-size binary column); the whole file with
`pq.read_table`."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from .base import StockReader, decode


class Parquet(StockReader):
    def open(self):
        self.table = pq.read_table(self.path / "images.parquet", columns=["image", "label"], memory_map=True)

    def _images(self, column):
        values = column.to_pylist()
        if self.encoding == "raw" and self.shape is not None:
            return np.frombuffer(b"".join(values), np.uint8).reshape(len(values), *self.shape)
        images = [decode(v) for v in values]
        return np.stack(images) if self.shape is not None and images else images

    def item(self, i):
        images, labels = self.batch(np.array([i]))
        return images[0], int(labels[0])

    def batch(self, ids):
        rows = self.table.take(ids)
        return self._images(rows.column("image")), rows.column("label").to_numpy()

    def read_all(self):
        table = pq.read_table(self.path / "images.parquet", columns=["image", "label"], memory_map=True)
        return self._images(table.column("image")), table.column("label").to_numpy()
