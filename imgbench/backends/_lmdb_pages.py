"""LMDB's data file read from its pages, without LMDB: the check that every value lies inside it."""
from __future__ import annotations

import os

import numpy as np

from .errors import NotAStoreError

_BIGDATA, _BRANCH, _LEAF = 0x01, 0x01, 0x02  # LMDB's node and page flags (mdb.c)
_FIELDS = np.arange(8)


def check_tree(fd: int, path) -> None:
    """NotAStoreError unless every value in the main B-tree of data.mdb (open as `fd`) lies inside
    the file: read from its pages (pread, not the map) before LMDB serves any value. py-lmdb
    touches every page of a value as it returns it (its `preload`), so a value whose recorded size
    or overflow page runs past the end of the file kills the process with SIGBUS, before any
    check of ours could see it. Once per store and process: the leaf pages are about 1% of the
    file for images (one 8-byte page number per image), read and checked a page at a time."""
    size = os.fstat(fd).st_size

    def bad(what):
        return NotAStoreError(f"{path}/data.mdb: {what}; the store is damaged")

    m0 = os.pread(fd, 152, 0)  # meta page 0: its MDB_meta, whose free DB's md_pad is the page size
    psize = int.from_bytes(m0[40:44], "little") if len(m0) == 152 else 0
    if not 512 <= psize <= 65536 or 2 * psize > size:
        raise bad("it does not start with LMDB's meta pages")
    metas = [(int.from_bytes(m[144:152], "little"), m, psize) for m in (m0, os.pread(fd, 152, psize))
             if len(m) == 152 and int.from_bytes(m[16:20], "little") == 0xBEEFC0DE]  # LMDB's magic
    if not metas:
        raise bad("it does not start with LMDB's meta pages")
    txnid, m, psize = max(metas)
    root, last = int.from_bytes(m[128:136], "little"), int.from_bytes(m[136:144], "little")
    if not 512 <= psize <= 65536:
        raise bad("LMDB's meta page does not describe the file")
    if (last + 1) * psize > size:  # touching a mapped page past the end would be a SIGBUS
        raise bad(f"it has {size:,} bytes, LMDB's own header says {(last + 1) * psize:,}: it was cut short")
    if root == 2**64 - 1:  # an empty tree
        return
    stack, seen = [root], set()
    while stack:
        pg = stack.pop()
        if pg in seen or not 2 <= pg <= last:
            raise bad(f"its B-tree points to page {pg} (twice, or outside pages 2..{last})")
        seen.add(pg)
        page = np.frombuffer(os.pread(fd, psize, pg * psize), np.uint8)
        flags, lower = int(page[10:12].view("<u2")[0]), int(page[12:14].view("<u2")[0])
        if len(page) != psize or not 16 <= lower <= psize or lower % 2:
            raise bad(f"page {pg} is not a B-tree page")
        ptrs = page[16:lower].view("<u2").astype(np.int64)
        if len(ptrs) and (ptrs.min() < lower or ptrs.max() + 8 > psize):
            raise bad(f"page {pg} has nodes outside it")
        head = page[ptrs[:, None] + _FIELDS].view("<u2").astype(np.int64)  # lo, hi, flags, ksize per node
        lo, hi, fl, ks = head.T
        if flags & 0xFF == _BRANCH:
            stack.extend((lo | hi << 16 | fl << 32).tolist())
            continue
        if flags & 0xFF != _LEAF or (fl & ~_BIGDATA).any():
            raise bad(f"page {pg} is not a leaf of plain values")
        data_at, nbytes = ptrs + 8 + ks, lo | hi << 16
        big = (fl & _BIGDATA) != 0
        if (data_at[~big] + nbytes[~big] > psize).any() or (data_at[big] + 8 > psize).any():
            raise bad(f"a value of page {pg} runs past its page")
        if big.any():
            pgno = page[data_at[big][:, None] + _FIELDS].copy().view("<u8")[:, 0].astype(np.int64)
            if pgno.min() < 2 or pgno.max() > last or (pgno * psize + 16 + nbytes[big] > size).any():
                raise bad(f"a value on page {pg} runs past the end of the file")
