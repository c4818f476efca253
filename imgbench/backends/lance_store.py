"""lance: a Lance dataset `images.lance/`, written with `lance.write_dataset` (pylance).

Columns `id`, `label` (int64), `checksum` (uint64, see checksums.py) and `image`: the raw pixels
as fixed_size_binary(H*W*C) (encoding "raw", the default), or PNG, JPEG or the original files'
bytes as binary; images of different shapes add int32 `height`, `width` and `channels`. The
schema metadata `imgbench` records the shape and encoding. `lance.dataset(path)` opens it;
`ds.take(rows)` reads rows by position (id - first_id).

Readers read through Lance's own `take`, a batch of sorted unique rows per call (its batched
path: a single-row take costs tens of times more per row, lance#3981). Lance drives its I/O
from a Rust thread pool, and threads do not survive fork: a reader opens its own dataset in
each process and never touches the parent's (pylance rebuilds its thread pools in a forked
child since lance#4903; its docs still prefer spawn, which readers pickle for). A whole store is
one `to_table` in this process, decoded by forked workers that inherit the column and call no
Lance code.

A store is untrusted input: before Lance opens it, every entry of the directory is a regular
file or directory of the store (no links); after, each fragment's data files must be plain
names inside `data/` of the store, the rows the manifest's count, and what a whole read
allocates within what the data files can hold.
"""
from __future__ import annotations

import json
import os
import weakref

import numpy as np
import pyarrow as pa

from ..images import ENCODINGS, MAX_RATIO, ImageList
from . import _lance_server, parallel
from .arrow_values import ValuesHandle, chunks_of, decode_range, image_column, values
from .base import Backend, check_coding
from .errors import NotAStoreError
from .store import Store, check_shapes

DIR = "images.lance"
SHAPE = ("height", "width", "channels")
VERSIONS = (None, "legacy", "stable", "2.0", "2.1", "2.2")


_USED_IN = None  # the process that first called Lance (its children, forked, must not: see _lance_server)


def _lance():
    global _USED_IN
    import lance  # imported when used: pylance starts its thread pools on first use

    _USED_IN = _USED_IN or os.getpid()
    return lance


class _Local:
    """A Lance dataset in this process: the calls a reader makes of one (as _lance_server.Remote)."""

    def __init__(self, path: str):
        self.ds = _lance().dataset(path)
        self.schema = self.ds.schema
        _OPEN.add(self)

    def count_rows(self) -> int:
        return self.ds.count_rows()

    def data_files(self) -> list:
        return _lance_server.data_files(self.ds)

    def take(self, rows, columns):
        return self.ds.take(rows, columns=columns)

    def to_table(self, columns):
        return self.ds.to_table(columns=columns)

    def close(self) -> None:
        self.ds = None


_OPEN: weakref.WeakSet = weakref.WeakSet()  # datasets this process opened
_INHERITED: list = []


def _keep_parent_datasets() -> None:
    """In a forked child: a parent's datasets are kept for ever, never freed here (freeing one
    waits on thread pools that did not survive the fork)."""
    _INHERITED.extend(_OPEN)
    _OPEN.clear()


os.register_at_fork(after_in_child=_keep_parent_datasets)


def open_dataset(root: str):
    """The dataset at `root` in this process, or through a server process in a process forked
    from one that called Lance (whose thread pools it inherited broken)."""
    if _USED_IN is not None and _USED_IN != os.getpid():
        # the server reads through this process's open store directory, as a reader here would
        return _lance_server.Remote(root.replace("/proc/self/", f"/proc/{os.getpid()}/", 1))
    return _Local(root)


class LanceBackend(Backend):
    name = "lance"
    ENCODINGS = ENCODINGS  # every codec (images.py): raw, png, jpeg, webp, webp-lossless, avif, jxl, source

    def __init__(self, *, encoding: str = "raw", quality: int = 90, compress_level: int = 6,
                 data_storage_version: str | None = None, workers: int | None = None, fsync: bool = False):
        """encoding: "raw" (pixels), "png" (Pillow, `compress_level` 0-9), "jpeg" (`quality`
        1-95) or "source" (the original files' bytes); data_storage_version: Lance's file format
        (None: the library's default); workers: processes for coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if data_storage_version not in VERSIONS:
            raise ValueError(f"lance option data_storage_version must be one of {VERSIONS}, "
                             f"got {data_storage_version!r}")
        self.data_storage_version = data_storage_version

    def _write(self, tmp, images, labels, first_id, sources):
        n = len(images)
        ragged = isinstance(images, ImageList)
        image, sums = image_column(self, tmp, images, labels, sources, 1 << 16)
        columns = {"id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
                   "label": pa.array(np.asarray(labels, np.int64)), "checksum": pa.array(sums), "image": image}
        if ragged:
            for name, col in zip(SHAPE, images.shapes.T):
                columns[name] = pa.array(col.astype(np.int32))
        meta = {"shape": None if ragged else list(images.shape[1:]), "encoding": self.encoding}
        table = pa.table(columns).replace_schema_metadata({"imgbench": json.dumps(meta)})
        _lance().write_dataset(table, str(tmp / DIR), data_storage_version=self.data_storage_version)
        return sums

    def _read_all(self, store):
        d = _Dataset(store)
        n = store.count
        try:
            column = d.ds.to_table(["image"]).column(0)
        except (OSError, ValueError, RuntimeError) as e:
            raise _failed(d, e) from None
        finally:
            d.ds.close()
        if d.raw:
            out = np.empty((n, *store.shape), np.uint8)
            flat, k = out.reshape(n, -1), 0
            for ch in column.chunks:
                data, offs = values(ch, d.px)
                flat[k:k + len(ch)] = data[offs[0]:offs[-1]].reshape(-1, d.px)
                k += len(ch)
            return out, d.labels
        out = parallel.allocate(store.shape, d.shapes, n, self._workers(n) > 1)
        if d.encoding == "raw":  # raw pixels of several shapes: a copy each
            for first, data, offs in chunks_of(column, -1):
                for k in range(len(offs) - 1):
                    out[first + k].reshape(-1)[:] = _sized(data[offs[k]:offs[k + 1]], out[first + k], store,
                                                           first + k)
            return out, d.labels
        self._parallel(decode_range, n, dict(out=out, chunks=chunks_of(column, -1), codec=d.codec, where=d.shown))
        return out, d.labels

    def _handle(self, store):
        return LanceHandle(_Dataset(store))

    def _sums(self, store):
        d = _Dataset(store)
        try:
            return d.ds.to_table(["checksum"]).column(0).to_numpy()
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise NotAStoreError(f"{d.shown} has no readable checksum column ({e}); the store is damaged") from None
        finally:
            d.ds.close()

    def _change_label(self, path, store, pos):
        lance = _lance()
        ds = lance.dataset(str(path / DIR))
        table = ds.to_table()
        labels = table.column("label").to_numpy().copy()
        labels[pos] += 1
        table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels))
        lance.write_dataset(table, str(path / DIR), mode="overwrite",
                            data_storage_version=ds.data_storage_version)
        return DIR


def _failed(d: "_Dataset", e: BaseException) -> NotAStoreError:
    """A Lance read's error as one line: the store replaced or deleted since it was opened (its
    data files gone with it), or damaged."""
    why = d.store.missing(DIR)
    if "replaced or deleted" in why:
        return NotAStoreError(why)
    return NotAStoreError(f"{d.shown}: Lance cannot read it ({e}); the store is damaged")


def _sized(value, dst: np.ndarray, store: Store, pos: int):
    if len(value) != dst.nbytes:
        raise NotAStoreError(f"{store.path}: image id {store.first_id + pos} holds {len(value):,} bytes, not the "
                             f"{dst.nbytes:,} of its shape; the store is damaged")
    return value


class _Dataset:
    """A store's Lance dataset opened in this process, checked: its files, rows, schema, labels."""

    def __init__(self, store: Store):
        self.store, self.shown = store, f"{store.path}/{DIR}"
        root = store.file(DIR)  # every entry a regular file or directory of the store, no links
        if not os.path.isdir(root):
            raise NotAStoreError(f"{store.path}: {DIR} is missing; the store is damaged (imgbench verify "
                                 f"{store.path})")
        try:
            self.ds = open_dataset(root)
            self._check_files()
            rows = self.ds.count_rows()
            schema = self.ds.schema
        except (OSError, ValueError, RuntimeError) as e:
            raise NotAStoreError(f"{self.shown} is not a readable Lance dataset ({e}); the store is damaged") from None
        n = store.count
        if rows != n:
            raise NotAStoreError(f"{self.shown} holds {rows:,} rows, the manifest {n:,} images; the store is damaged")
        self.encoding = store.encoding
        self.px = int(np.prod(store.shape)) if store.shape is not None else -1
        image = schema.field("image").type if "image" in schema.names else None
        self.raw = store.encoding == "raw" and store.shape is not None
        want = pa.binary(self.px) if self.raw else pa.binary()
        if image != want or "label" not in schema.names:
            raise NotAStoreError(f"{self.shown} has no image column of {store.encoding} bytes (found {image}); "
                                 "not a lance store")
        self.codec = store.codec()  # its own encoding, by the backend's decoder
        # what a whole read allocates, against what the data files hold
        pixels = n * self.px if store.shape is not None else 0
        ratio = MAX_RATIO  # Lance may compress any column, raw pixels too (its file format's own choice)
        if pixels > ratio * self.data_bytes + 2**20:
            raise NotAStoreError(f"{self.shown}: {n:,} images of {store.shape} cannot be in {self.data_bytes:,} bytes "
                                 "of data files; the store is damaged")
        try:
            t = self.ds.to_table(["id", "label", *(SHAPE if store.shape is None else ())])
        except (OSError, ValueError, RuntimeError) as e:
            raise _failed(self, e) from None
        ids = t.column("id").to_numpy()
        if not np.array_equal(ids, np.arange(store.first_id, store.first_id + n)):
            raise NotAStoreError(f"{self.shown} does not hold ids {store.first_id}..{store.first_id + n - 1} in "
                                 "order; the store is damaged")
        if t.column("label").null_count:
            raise NotAStoreError(f"{self.shown} has missing labels; the store is damaged")
        self.labels = t.column("label").to_numpy().astype(np.int64)
        self.shapes = None
        if store.shape is None:
            self.shapes = np.column_stack([t.column(c).to_numpy() for c in SHAPE]).astype(np.int64)
            check_shapes(self.shapes, self.shown)
            if int(self.shapes.prod(axis=1).sum()) > ratio * self.data_bytes + 2**20:
                raise NotAStoreError(f"{self.shown}: its images' shapes need more bytes than its data files could "
                                     "hold; the store is damaged")

    def _check_files(self) -> None:
        """Every data file a fragment reads: a plain name in the store's data/ directory."""
        data = os.path.join(self.store.file(DIR), "data")
        total = 0
        for fragment, name, base in self.ds.data_files():
            # base: a file under another of the dataset's base paths (Lance's multi-base
            # datasets), which may be anywhere: a store keeps its files in its own data/
            if (base is not None or not isinstance(name, str) or "/" in name or name in (".", "..")
                    or not os.path.isfile(os.path.join(data, name))):
                raise NotAStoreError(f"{self.shown}: fragment {fragment} reads {name!r}, not a file of the "
                                     "store's data/; the store is damaged, or made to read elsewhere")
            total += os.stat(os.path.join(data, name)).st_size
        self.data_bytes = total


class LanceHandle(ValuesHandle):
    """Rows through Lance's batched `take` (sorted unique positions)."""

    file = DIR

    def __init__(self, d: _Dataset):
        super().__init__(d.store, d.labels, d.shapes, d.codec, d.shown)
        self.d = d

    def _values(self, pos):
        rows, inverse = np.unique(pos, return_inverse=True)
        try:
            column = self.d.ds.take(rows, ["image"]).column(0).combine_chunks()
        except (OSError, ValueError, RuntimeError) as e:  # what Lance raises for a damaged file
            raise _failed(self.d, e) from None
        data, offs = values(column, self.d.px)
        return [data[offs[j]:offs[j + 1]] for j in inverse.tolist()]

    def stored_range(self, lo, hi):
        yield from zip(self._values(np.arange(lo, hi)), self.labels[lo:hi].tolist())

    def close(self):
        if self.d is not None:
            self.d.ds.close()
            self.d = None
