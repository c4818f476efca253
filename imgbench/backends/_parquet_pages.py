"""The parquet backend's fast path: where the image values lie in the file, from its page headers.

A row group's image column written as parquet_store writes it (uncompressed, PLAIN, no
dictionary, non-nullable, one V1 data page per row group) holds its values at a computable
place: the last n*L bytes of the page for raw pixels (FIXED_LEN_BYTE_ARRAY); for encoded bytes,
length-prefixed values found by one walk over the row group's lengths. `Pages.find` reads each
column chunk's page header (a thrift compact-protocol struct, parsed here for the few fields it
needs) and checks one value against pyarrow; `Pages.locate` gives a value's place in the file.
"""
from __future__ import annotations

import mmap
import os
import struct

import numpy as np

from .errors import NotAStoreError


def _zigzag(buf: bytes, p: int) -> tuple[int, int]:
    """A thrift compact-protocol varint (zigzag i32) at p: (value, next position)."""
    shift = value = 0
    while True:
        b = buf[p]
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value >> 1) ^ -(value & 1), p
        shift += 7


def _data_page(buf: bytes):
    """(page type, uncompressed size, compressed size, values, encoding, bytes parsed) of a
    Parquet page header, or None if it is not laid out as pyarrow writes a V1 data page."""
    top, fid, p = {}, 0, 0
    while True:
        b = buf[p]
        p += 1
        fid += b >> 4
        if b >> 4 == 0:  # a stop before the data page header, or a long-form field header
            return None
        if b & 0x0F == 5:  # i32: type (1), uncompressed_page_size (2), compressed_page_size (3), crc (4)
            top[fid], p = _zigzag(buf, p)
        elif b & 0x0F == 12 and fid == 5:  # DataPageHeader: num_values (1), encoding (2) first
            inner = []
            for want in (0x15, 0x15):
                if buf[p] != want:
                    return None
                value, p = _zigzag(buf, p + 1)
                inner.append(value)
            return top.get(1), top.get(2), top.get(3), inner[0], inner[1], p
        else:
            return None


class Pages:
    """Each row group's PLAIN image values as a byte range of the file (`spans`), and where
    value j of row group g lies (`locate`)."""

    def __init__(self, spans: list, starts: np.ndarray, raw: bool, px: int, path: str, shown: str):
        self.spans, self.starts, self.raw, self.px, self.shown = spans, starts, raw, px, shown
        self.path = path
        self.walked: dict[int, np.ndarray] = {}  # encoded: value starts per row group, found on first use

    @classmethod
    def find(cls, pf, path: str, column: int, starts: np.ndarray, raw: bool, px: int, shown: str) -> "Pages | None":
        """The layout of `pf`'s image column (index `column`) if it is the one written here, and
        one value read both ways agrees with pyarrow; None otherwise."""
        md, c = pf.metadata, column
        col = pf.schema.column(c)
        if col.max_definition_level or col.max_repetition_level:
            return None
        spans = []
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for g in range(md.num_row_groups):
                meta, n = md.row_group(g).column(c), md.row_group(g).num_rows
                if meta.compression != "UNCOMPRESSED" or meta.has_dictionary_page:
                    return None
                f.seek(meta.data_page_offset)
                try:
                    page = _data_page(f.read(256))
                except IndexError:  # a header longer than any we write
                    page = None
                total = meta.total_compressed_size
                # One V1 DATA_PAGE (type 0) of all n values, PLAIN (0), uncompressed, after its header.
                if (page is None or page[0] != 0 or page[3] != n or page[4] != 0 or page[1] != page[2]
                        or page[2] > total - page[5] or (raw and page[2] != n * px)):
                    return None
                end = meta.data_page_offset + total
                if end > size:  # metadata claiming bytes the file does not have
                    return None
                spans.append((end - page[2], end))
        pages = cls(spans, starts, raw, px, path, shown)
        return pages if pages._agrees_with_pyarrow(pf, path) else None

    def _agrees_with_pyarrow(self, pf, path: str) -> bool:
        """One value of the first row group read both ways: the cheap proof the mapping is right."""
        batch = next(pf.iter_batches(batch_size=1, row_groups=[0], columns=["image"]))
        value = batch.column(0)[0].as_py()
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                start, length = self.locate(mm, 0, 0)
                return mm[start:start + length] == value
            finally:
                mm.close()

    def locate(self, mm, g: int, j: int) -> tuple[int, int]:
        """(file offset, size) of value j of row group g, in `spans`' layout (`mm` maps the file)."""
        start, end = self.spans[g]
        if self.raw:  # FIXED_LEN_BYTE_ARRAY: the values one after another
            return start + j * self.px, self.px
        found = self.walked.get(g)
        if found is None:  # PLAIN BYTE_ARRAY: a 4-byte little-endian length, then the bytes
            # The walk reads the page in one request, not through the map: a map advised for
            # random reads would fault it in 4 KiB at a time, an I/O per page on a slow tier.
            with open(self.path, "rb") as f:
                page = os.pread(f.fileno(), end - start, start)
            n = int(self.starts[g + 1] - self.starts[g])
            starts, p, last = np.empty(n + 1, np.int64), 0, len(page)
            for i in range(n):
                if p + 4 > last:  # fewer values than rows
                    p = -1
                    break
                starts[i] = start + p + 4
                p += 4 + struct.unpack_from("<I", page, p)[0]
            starts[n] = start + p + 4
            if p != last:
                raise NotAStoreError(f"{self.shown}: row group {g}'s image values do not fill its page; "
                                     "the store is damaged")
            found = self.walked[g] = starts
        return int(found[j]), int(found[j + 1] - found[j] - 4)
