"""LMDB through py-lmdb, as its docs advise: an `Environment` per process, opened read-only
without locks, one read transaction kept open, a `get` per key; the whole store by iterating a
cursor. A value is imgbench's 24-byte
header (height, width, channels, 0 as uint16; label int64; checksum uint64) and the pixels or
the encoded image."""
from __future__ import annotations

import struct

import lmdb
import numpy as np

from .base import StockReader, decode

HEADER = struct.Struct("<4HqQ")


class Lmdb(StockReader):
    def open(self):
        self.env = lmdb.open(str(self.path), readonly=True, lock=False)
        self.txn = self.env.begin(buffers=True)

    def item(self, i):
        return self.value(self.txn.get(b"%010d" % (self.first_id + i)))

    def value(self, value):
        h, w, c, _, label, _ = HEADER.unpack_from(value)
        data = value[HEADER.size:]
        image = np.frombuffer(data, np.uint8).reshape(h, w, c).copy() if self.encoding == "raw" else decode(data, c)
        return image, label

    def read_all(self):
        self._ready()
        got = [self.value(v) for _, v in self.txn.cursor()]  # keys sort in id order
        labels = np.array([label for _, label in got], np.int64)
        images = [image for image, _ in got]
        return (np.stack(images) if self.shape is not None and images else images), labels
