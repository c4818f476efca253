"""Parquet through pyarrow, as its docs show: the file read once per process with
`pq.read_table` (into memory: Parquet pages are decoded, not mapped) and its row groups combined
into one chunk, so `Table.take` of a batch's rows does not join the whole column per call; the
`image` values decoded with Pillow (PNG, JPEG or original files) or viewed as pixels (raw: a
fixed-size binary column, or with images of different shapes a binary column beside `height`,
`width` and `channels`); the whole file with `pq.read_table`."""
from __future__ import annotations

import pyarrow.parquet as pq

from .base import SHAPE, StockReader, arrow_images


class Parquet(StockReader):
    def columns(self):
        return ["image", "label"] + (SHAPE if self.shape is None else [])

    def open(self):
        table = pq.read_table(self.path / "images.parquet", columns=self.columns(), memory_map=True)
        self.table = table.combine_chunks()

    def _images(self, rows):
        return arrow_images(rows, self.shape, self.encoding)

    def item(self, i):
        return self.item_of_batch(i)

    def batch(self, ids):
        rows = self.table.take(ids)
        return self._images(rows), rows.column("label").to_numpy()

    def read_all(self):
        table = pq.read_table(self.path / "images.parquet", columns=self.columns(), memory_map=True)
        return self._images(table), table.column("label").to_numpy()
