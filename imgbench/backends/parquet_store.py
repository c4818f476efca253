"""parquet: one Apache Parquet file `images.parquet` with columns `id`, `label` (int64), `image`
and `checksum` (uint64: XXH3 of the image value seeded with the label, see checksums.py; Parquet's
own page CRC is optional, off in pyarrow by default, and covers a whole row group).

`image` holds PNG bytes in a binary column (encoding "png", as Hugging Face datasets stores
images), JPEG bytes ("jpeg"), the original files' bytes ("source"), or the raw pixels as
fixed_size_binary(H*W*C) ("raw"); the schema metadata `imgbench` records the image shape and
encoding. Images of different shapes add int32 columns `height`, `width` and `channels` (raw
pixels are then a binary column). pandas.read_parquet and any Parquet reader open it.

The image column is written uncompressed (by default), PLAIN, without dictionary or statistics,
non-nullable, one data page per row group. Then a value's bytes sit at a computable place in the
file (the last n*L bytes of the page for raw; for PNG, length-prefixed values found by one walk
over a row group's lengths), so readers map the file and copy or decode exactly the images asked
for: a random id costs one image, not a row group. That layout is checked at open against each
column chunk's metadata and page header, and one value against pyarrow; any other file (say a
compressed one) is read through pyarrow, a row group at a time, with a few decoded row groups
cached. Whole raw stores are read with one pread per row group straight into the result.
"""
from __future__ import annotations

import inspect
import json
import os
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..images import ENCODINGS, MAX_RATIO, ImageList
from . import _parquet_pages, parallel
from .arrow_values import chunks_of, decode_range, image_column, put, values
from .base import Backend, check_coding
from .errors import NotAStoreError
from .handles import Handle, read_into
from .store import Store, check_shapes

FILE = "images.parquet"
COMPRESSIONS = (None, "snappy", "gzip", "brotli", "lz4", "zstd")
PAGE_BYTES = 2**30  # data page target: a row group's image column stays one page
CACHED_ROW_GROUPS = 4  # pyarrow path: decoded row groups kept per reader
# pyarrow >= 23 can lift its default limit of 20,000 rows per page; older versions split larger
# row groups into several pages, which readers detect and read through pyarrow.
_ROWS_PER_PAGE = "max_rows_per_page" in inspect.signature(pq.ParquetWriter.__init__).parameters


class _File:
    """An opened store: ids checked, labels, row groups and, if the file has the layout we
    write, each row group's PLAIN image values as a byte range of the file (`spans`)."""

    def __init__(self, store: Store):
        self.store, self.path, self.shown = store, store.file(FILE), f"{store.path}/{FILE}"
        try:
            pf = self.pf = pq.ParquetFile(self.path, memory_map=True)  # reads copy only what they use
            schema = pf.schema_arrow
            self._footer(pf, schema)
            ids, labels = pf.read(columns=["id", "label"]).columns
        except (OSError, pa.ArrowException, KeyError) as e:
            raise NotAStoreError(f"{store.path} is not a readable parquet store ({e})") from None
        except NotAStoreError:
            pf.close()
            raise
        try:
            self._inspect(schema, ids, labels)
        except BaseException:
            pf.close()
            raise

    def _footer(self, pf, schema) -> None:
        """The footer checked before any column is read: the manifest's row count, integer id and
        label columns, and no column chunk declaring more bytes than the file could hold."""
        md, store = pf.metadata, self.store
        if md.num_rows != store.count:
            raise NotAStoreError(f"{self.shown} declares {md.num_rows:,} rows, the manifest {store.count:,} "
                                 "images; the store is damaged")
        for name in ("id", "label"):
            if name not in schema.names or not pa.types.is_integer(schema.field(name).type):
                raise NotAStoreError(f"{self.shown} has no integer {name} column; not a parquet store")
        size = os.stat(self.path).st_size
        declared = sum(md.row_group(g).column(c).total_uncompressed_size
                       for g in range(md.num_row_groups) for c in range(md.num_columns))
        if declared > MAX_RATIO * size + 2**20:
            raise NotAStoreError(f"{self.shown} declares {declared:,} bytes of values in a file of {size:,}; "
                                 "the store is damaged")

    def _inspect(self, schema, ids, labels) -> None:
        """The schema, ids and labels checked; row groups, and the mapped layout if it holds."""
        store, pf = self.store, self.pf
        self.px = int(np.prod(store.shape)) if store.shape is not None else -1
        self.codec = store.codec()  # its own encoding, by the backend's decoder
        image = schema.field("image").type if "image" in schema.names else None
        if store.encoding == "raw" and store.shape is not None and image == pa.binary(self.px):
            self.raw = True  # fixed-size values, the pixels one image after another
        elif image in (pa.binary(), pa.large_binary()) and (store.encoding != "raw" or store.shape is None):
            self.raw = False
        else:
            raise NotAStoreError(f"{self.shown} has no image column of {store.encoding} bytes (found {image}); "
                                 "not a parquet store")
        self.shapes = None
        if store.shape is None:
            try:
                t = pf.read(columns=["height", "width", "channels"])
            except (pa.ArrowException, KeyError) as e:
                raise NotAStoreError(f"{self.shown} has no height, width and channels columns ({e}); "
                                     "the store is damaged") from None
            if any(c.null_count for c in t.columns):
                raise NotAStoreError(f"{self.shown} has missing image shapes; the store is damaged")
            self.shapes = np.column_stack([c.to_numpy() for c in t.columns]).astype(np.int64)
            check_shapes(self.shapes, self.shown)
        n = store.count
        ids = ids.to_numpy()
        if pf.metadata.num_rows != n or not np.array_equal(ids, np.arange(store.first_id, store.first_id + n)):
            raise NotAStoreError(f"{self.shown} does not hold ids {store.first_id}..{store.first_id + n - 1} "
                                 "in order; the store is damaged")
        if labels.null_count:
            raise NotAStoreError(f"{self.shown} has {labels.null_count:,} missing labels; the store is damaged")
        self.labels = labels.to_numpy().astype(np.int64)
        md = pf.metadata
        self.starts = np.r_[0, np.cumsum([md.row_group(g).num_rows for g in range(md.num_row_groups)])]
        self.column = schema.names.index("image")
        # the mapped layout, if the file has it (else None: read through pyarrow)
        self.pages = _parquet_pages.Pages.find(pf, self.path, self.column, self.starts, self.raw, self.px, self.shown)
        self.spans = None if self.pages is None else self.pages.spans

    def column_chunks(self):
        """The whole image column through pyarrow: (first row, data, offsets) per chunk."""
        return chunks_of(self.pf.read(columns=["image"]).column(0), self.px)


class ParquetBackend(Backend):
    name = "parquet"
    # 2: encoding in the metadata; jpeg, source and images of several shapes. 3: a checksum column
    format_version = 3
    ENCODINGS = ENCODINGS  # every codec (images.py): raw, png, jpeg, webp, webp-lossless, avif, jxl, source

    def __init__(self, *, encoding: str = "png", quality: int = 90, row_group: int = 1000,
                 compression: str | None = None, compress_level: int = 6, workers: int | None = None,
                 fsync: bool = False):
        """encoding: "png" (Pillow, `compress_level` 0-9), "jpeg" (`quality` 1-95), "raw"
        (pixels) or "source" (the original files' bytes); row_group: images per row group;
        compression: None or a Parquet codec for the whole file (PNG bytes do not compress
        further, and a compressed file is read through pyarrow); workers: processes for coding
        (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if not isinstance(row_group, int) or isinstance(row_group, bool) or row_group < 1:
            raise ValueError(f"parquet option row_group must be a positive number of images, got {row_group!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"parquet option compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.row_group = row_group
        self.compression = compression

    def _write(self, tmp, images, labels, first_id, sources):
        n = len(images)
        ragged = isinstance(images, ImageList)
        shape = None if ragged else list(images.shape[1:])
        image, sums = image_column(self, tmp, images, labels, sources, self.row_group)
        fields = [pa.field("id", pa.int64(), nullable=False), pa.field("label", pa.int64(), nullable=False),
                  pa.field("image", image.type, nullable=False), pa.field("checksum", pa.uint64(), nullable=False)]
        columns = [pa.array(np.arange(first_id, first_id + n)), pa.array(labels), image, pa.array(sums)]
        if ragged:
            for name, col in zip(("height", "width", "channels"), images.shapes.T):
                fields.append(pa.field(name, pa.int32(), nullable=False))
                columns.append(pa.array(col.astype(np.int32)))
        schema = pa.schema(fields, metadata={"imgbench": json.dumps({"shape": shape, "encoding": self.encoding})})
        table = pa.table(columns, schema=schema)
        extra = {"max_rows_per_page": self.row_group} if _ROWS_PER_PAGE else {}
        pq.write_table(table, tmp / FILE, row_group_size=self.row_group, compression=self.compression or "none",
                       use_dictionary=False, write_statistics=["id", "label"], data_page_size=PAGE_BYTES,
                       data_page_version="1.0", **extra)
        return sums

    def _read_all(self, store):
        f = _File(store)
        n = store.count
        shape = (n, *store.shape) if store.shape is not None else None
        try:
            if f.raw and f.spans is not None:  # each row group's values straight into the result
                out = np.empty(shape, np.uint8)
                flat, fd = memoryview(out).cast("B"), os.open(f.path, os.O_RDONLY)
                try:
                    for g, (start, end) in enumerate(f.spans):
                        read_into(fd, flat[f.starts[g] * f.px:f.starts[g + 1] * f.px], start, f.shown)
                finally:
                    os.close(fd)
                return out, f.labels
            chunks = f.column_chunks()
            if f.raw:
                out = np.empty(shape, np.uint8)
                flat = out.reshape(n, -1)
                for first, data, offs in chunks:
                    flat[first:first + len(offs) - 1] = data[offs[0]:offs[-1]].reshape(-1, f.px)
                return out, f.labels
            out = parallel.allocate(store.shape, f.shapes, n, self._workers(n) > 1)
            self._parallel(decode_range, n, dict(out=out, chunks=chunks, codec=f.codec, where=f.shown))
            return out, f.labels
        finally:
            f.pf.close()

    def _handle(self, store):
        f = _File(store)
        if f.spans is None:
            return _ArrowHandle(f)
        f.pf.close()
        return _MappedHandle(f)

    def _sums(self, store):
        try:
            return pq.ParquetFile(store.file(FILE)).read(columns=["checksum"]).column(0).to_numpy()
        except (OSError, pa.ArrowException, KeyError) as e:
            raise NotAStoreError(f"{store.path}/{FILE} has no readable checksum column ({e}); "
                                 "the store is damaged") from None

    def _change_label(self, path, store, pos):
        f = path / FILE
        pf = pq.ParquetFile(f)
        table, row_group, schema = pf.read(), pf.metadata.row_group(0).num_rows, pf.schema_arrow
        pf.close()
        labels = table.column("label").to_numpy().copy()
        labels[pos] += 1
        table = table.set_column(table.schema.get_field_index("label"), schema.field("label"), pa.array(labels))
        pq.write_table(table.cast(schema), f, row_group_size=row_group, compression="none", use_dictionary=False,
                       data_page_version="1.0")
        return FILE


class _ParquetHandle(Handle):
    """Shared by both readers: rows grouped by row group, in file order, then copied or decoded."""

    file = FILE

    def __init__(self, f: _File):
        self.f = f

    def stored(self, pos):
        f = self.f
        g = int(np.searchsorted(f.starts, pos, "right")) - 1
        data, start, length = self._value(g, pos - int(f.starts[g]))
        return data[start:start + length], int(f.labels[pos])

    def shapes_of(self, pos):
        return self.f.shapes[pos]

    def get(self, pos):
        shape = self.f.store.shape or tuple(self.f.shapes[pos])
        out = np.empty((1, *shape), np.uint8)
        self.batch(np.array([pos]), [out[0]])
        return out[0], int(self.f.labels[pos])

    def batch(self, pos, out):
        f = self.f
        order = np.argsort(pos, kind="stable")
        groups = np.searchsorted(f.starts, pos[order], "right") - 1
        for k, p, g in zip(order.tolist(), pos[order].tolist(), groups.tolist()):
            data, start, length = self._value(g, p - int(f.starts[g]))
            put(out[k], data[start:start + length], f.codec, f"{f.shown} (image id {f.store.first_id + p})")
        return f.labels[pos]


class _MappedHandle(_ParquetHandle):
    """The file memory-mapped: a value is a slice at an offset computed from the metadata."""

    def __init__(self, f: _File):
        super().__init__(f)
        self.mm = np.memmap(f.path, np.uint8, "r")

    def _value(self, g, j):
        return (self.mm, *self.f.pages.locate(self.mm, g, j))

    def close(self):
        self.mm = None  # unmapped when the last view goes


class _ArrowHandle(_ParquetHandle):
    """Any other layout: a row group's image column read through pyarrow, the last few cached."""

    def __init__(self, f: _File):
        super().__init__(f)
        self.cache: OrderedDict[int, tuple] = OrderedDict()

    def _value(self, g, j):
        hit = self.cache.get(g)
        if hit is None:
            col = self.f.pf.read_row_group(g, columns=["image"]).column(0).combine_chunks()
            hit = self.cache[g] = values(col, self.f.px)
            if len(self.cache) > CACHED_ROW_GROUPS:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(g)
        data, offs = hit
        return data, int(offs[j]), int(offs[j + 1] - offs[j])

    def close(self):
        self.cache.clear()
        self.f.pf.close()
