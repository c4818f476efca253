"""Image files through Pillow, as its docs show: each file opened and decoded in the process that
reads it, the labels from the CSV beside them with the csv module. `disk` keeps `{id}.png` (or
`.jpg`, or the original file named in the `file` column) and `labels.csv`."""
from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from .base import StockReader, pixels


class Files(StockReader):
    def open(self):
        with open(self.path / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        suffix = ".jpg" if self.encoding == "jpeg" else ".png"
        self.files = [r.get("file") or r["image_id"] + suffix for r in rows]
        self.labels = np.array([int(r["label"]) for r in rows], np.int64)
        self.channels = [int(r["channels"]) for r in rows] if self.shape is None else None

    def item(self, i):
        c = self.shape[2] if self.channels is None else self.channels[i]
        with Image.open(self.path / self.files[i]) as im:
            return pixels(im, c), int(self.labels[i])
