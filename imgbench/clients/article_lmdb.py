"""`article-lmdb`'s store read as the article reads it: `lmdb.open(path, readonly=True)`, a `get`
per key `f"{id:08}"`, each value unpickled to the article's image object. The article unpickles
with `pickle.loads`; this goes through imgbench's allow-list instead, since plain pickle would
run what a store holds; and one read transaction is kept open (`buffers=True`) where the
article opens one per call."""
from __future__ import annotations

from ..backends.article_lmdb import article_loads
import lmdb

from .base import StockReader
from .lmdb import Lmdb


class ArticleLmdb(Lmdb):
    read_all = StockReader.read_all  # the article reads a get per key, not a cursor

    def open(self):  # the article's open: read-only, LMDB's defaults otherwise (a lock file)
        self.env = lmdb.open(str(self.path), readonly=True)
        self.txn = self.env.begin(buffers=True)

    def item(self, i):
        obj = article_loads(self.txn.get(f"{self.first_id + i:08}".encode()))
        return obj.get_image(), int(obj.label)
