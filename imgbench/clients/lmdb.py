"""LMDB through py-lmdb, as its docs advise: an `Environment` per process, opened read-only
without locks, one read transaction kept open, a `get` per key. A value is imgbench's 24-byte
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
        self.env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False)
        self.txn = self.env.begin(buffers=True)

    def item(self, i):
        value = self.txn.get(b"%010d" % (self.first_id + i))
        h, w, c, _, label, _ = HEADER.unpack_from(value)
        data = value[HEADER.size:]
        image = np.frombuffer(data, np.uint8).reshape(h, w, c).copy() if self.encoding == "raw" else decode(data)
        return image, label
