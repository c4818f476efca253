"""SQLite through Python's `sqlite3`, as its docs and SQLite's show for a file nobody writes: a
connection per process (`sqlite3.connect` on a `file:` URI with `mode=ro`), memory-mapped I/O
on (`PRAGMA mmap_size`, SQLite's documented fast path for reads), a parameterised `SELECT` by
`id` (the rowid: one b-tree search) for an item and one `WHERE id IN (...)` for a batch; the
`image` blob decoded with Pillow (PNG, JPEG, original files) or viewed as pixels (raw); the
whole store with one `SELECT ... ORDER BY id`."""
from __future__ import annotations

import os
import sqlite3

import numpy as np

from .base import StockReader, decode

MAX_VARIABLES = 900  # host parameters per statement: under SQLite's least limit (999)


class Sqlite(StockReader):
    def open(self):
        path = self.path / "images.sqlite"
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self.db.execute(f"PRAGMA mmap_size = {os.path.getsize(path)}")
        self.columns = "label, image" if self.shape is not None else "label, image, height, width, channels"

    def _image(self, row):
        blob = row[1]
        shape = self.shape or tuple(row[2:5])
        if self.encoding == "raw":
            return np.frombuffer(blob, np.uint8).reshape(shape)
        return decode(blob, shape[2])

    def item(self, i):
        row = self.db.execute(f"SELECT {self.columns} FROM images WHERE id = ?", (self.first_id + i,)).fetchone()
        return self._image(row), int(row[0])

    def batch(self, ids):
        wanted = (ids + self.first_id).tolist()
        rows = {}
        for k in range(0, len(wanted), MAX_VARIABLES):
            part = wanted[k:k + MAX_VARIABLES]
            marks = ", ".join("?" * len(part))
            for row in self.db.execute(f"SELECT id, {self.columns} FROM images WHERE id IN ({marks})", part):
                rows[row[0]] = row[1:]
        got = [rows[i] for i in wanted]
        labels = np.array([r[0] for r in got], np.int64)
        images = [self._image(r) for r in got]
        if self.shape is None:
            return images, labels
        return (np.stack(images) if images else np.empty((0, *self.shape), np.uint8)), labels

    def read_all(self):
        self._ready()
        rows = self.db.execute(f"SELECT {self.columns} FROM images ORDER BY id").fetchall()
        labels = np.array([r[0] for r in rows], np.int64)
        images = [self._image(r) for r in rows]
        if self.shape is None:
            return images, labels
        return (np.stack(images) if images else np.empty((0, *self.shape), np.uint8)), labels
