"""Two of the article's stores read as the article reads them: `article-disk`'s `{id}.png` files
with Pillow and its `{N}.csv` (one label per row, its dialect); `article-hdf5`'s `{N}_many.h5`
with h5py, big-endian `images` and `meta` made uint8 (article_lmdb.py: the third)."""
from __future__ import annotations

import csv

import numpy as np

from .files import Files
from .hdf5 import Hdf5


class ArticleFiles(Files):
    def open(self):
        with open(self.path / f"{self.count}.csv", newline="") as f:
            self.labels = np.array([int(row[0]) for row in csv.reader(f, delimiter=" ", quotechar="|")], np.int64)
        self.files = [f"{self.first_id + i}.png" for i in range(self.count)]
        self.channels = None  # one shape: the manifest's


class ArticleHdf5(Hdf5):
    file, images, labels = "{n}_many.h5", "images", "meta"
