"""`article-lmdb`'s store read as the article reads it: py-lmdb, a `get` per key `f"{id:08}"`, each
value unpickled to the article's image object. The article unpickles with `pickle.loads`; this
goes through imgbench's allow-list instead, the one change, since plain pickle would run what a
store holds."""
from __future__ import annotations

from ..backends.article_lmdb import article_loads
from .lmdb import Lmdb


class ArticleLmdb(Lmdb):
    def item(self, i):
        obj = article_loads(self.txn.get(f"{self.first_id + i:08}".encode()))
        return obj.get_image(), int(obj.label)
