"""sqlite: one SQLite database `images.sqlite`, Python's own `sqlite3`, a row per image.

    CREATE TABLE images (id INTEGER PRIMARY KEY, label INTEGER NOT NULL, checksum INTEGER NOT NULL,
                         [height, width, channels INTEGER NOT NULL,] image BLOB NOT NULL)

`id` is the rowid (a lookup by id is one b-tree search); `checksum` is the image's XXH3 (see
checksums.py) as a signed 64-bit integer, SQLite's only integer; `image` is last, so a row's
small columns sit in its first page however long the blob. The blob holds PNG bytes (encoding
"png"), JPEG ("jpeg"), the original file ("source") or raw pixels ("raw"). Images of different
shapes add `height`, `width` and `channels`. `sqlite3 images.sqlite "SELECT image FROM images
WHERE id = 7"` or any SQLite library opens it.

Written in one transaction into a new file with the journal off (the store is created in a
temporary directory and renamed into place, so a journal would protect nothing), at SQLite's
default page size unless `page_size` says otherwise: a raw CIFAR image (3,072 bytes) takes a
4 KiB page of its own, two PNG ones share one. Read as SQLite's documentation suggests for a
file nobody writes: opened read-only and `immutable=1` (no locking, no journal checks), with
memory-mapped I/O (`PRAGMA mmap_size` the file's size) and `trusted_schema=OFF`. A batch is one
`SELECT ... WHERE id IN (...)`.

A database is untrusted input: before SQLite runs a query on it, its schema must be exactly the
one written here (no view, trigger, index or other table: nothing of the file's own runs), its
header must name a page count its size holds, and each blob is checked for the size its image
needs before it is used.
"""
from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

import numpy as np

from ..images import ENCODINGS, MAX_RATIO, DecodeError, ImageList
from . import checksums
from .base import Backend, check_coding
from .errors import NotAStoreError, register_library_errors
from .handles import Handle
from .store import Store, check_shapes

FILE = "images.sqlite"
SHAPE = ("height", "width", "channels")
MAX_VARIABLES = 900  # ids per IN (...): under SQLite's least limit of host parameters (999)
PAGE_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
HEADER = b"SQLite format 3\x00"
MIN_ROW_BYTES = 8  # a row's cell: its size, rowid, record header and at least a byte of each column

register_library_errors(sqlite3.DatabaseError)


def _schema(ragged: bool) -> str:
    shape = "".join(f"{c} INTEGER NOT NULL, " for c in SHAPE) if ragged else ""
    return ("CREATE TABLE images (id INTEGER PRIMARY KEY, label INTEGER NOT NULL, checksum INTEGER NOT NULL, "
            f"{shape}image BLOB NOT NULL)")


class SqliteBackend(Backend):
    name = "sqlite"
    ENCODINGS = ENCODINGS  # every codec (images.py): raw, png, jpeg, webp, webp-lossless, avif, jxl, source

    def __init__(self, *, encoding: str = "raw", quality: int = 90, compress_level: int = 6,
                 page_size: int = 4096, workers: int | None = None, fsync: bool = False):
        """encoding: "raw" (pixels), "png" (Pillow, `compress_level` 0-9), "jpeg" (`quality`
        1-95) or "source" (the original files' bytes); page_size: the database's page size in
        bytes (SQLite's default 4096; its docs suggest larger pages for large blobs); workers:
        processes for coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if page_size not in PAGE_SIZES:
            raise ValueError(f"sqlite option page_size must be one of {PAGE_SIZES}, got {page_size!r}")
        self.page_size = page_size

    def _write(self, tmp, images, labels, first_id, sources):
        n = len(images)
        ragged = isinstance(images, ImageList)
        raw = self.encoding == "raw"
        data = images if raw else self._encode_all(images, sources)
        shapes = images.shapes.tolist() if ragged else None
        sums = np.empty(n, np.uint64)
        labels = labels.tolist()

        def rows():  # one row at a time: no second copy of the whole store in memory
            check = checksums.checksum
            for i in range(n):
                value = data[i]
                payload = memoryview(np.ascontiguousarray(value)).cast("B") if raw else value
                sums[i] = s = check(payload, labels[i])
                signed = s - (1 << 64) if s >= 1 << 63 else s
                shape = shapes[i] if ragged else ()
                yield (first_id + i, labels[i], signed, *shape, payload)

        db = sqlite3.connect(tmp / FILE, isolation_level=None)
        try:
            db.execute(f"PRAGMA page_size = {self.page_size}")
            db.execute("PRAGMA journal_mode = OFF")  # a new file in a temporary directory: nothing to roll back to
            db.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'OFF'}")
            db.execute(_schema(ragged))
            marks = ", ".join("?" * (4 + (3 if ragged else 0)))
            db.execute("BEGIN")
            db.executemany(f"INSERT INTO images VALUES ({marks})", rows())
            db.execute("COMMIT")
        finally:
            db.close()
        return sums

    def _read_all(self, store):
        h = self._handle(store)
        try:
            n = store.count
            if store.shape is None:
                shapes = h.shapes_all()
                check_shapes(shapes, store.path)
                pixels = int(shapes.prod(axis=1).sum())
                if pixels > (1 if h.encoding == "raw" else MAX_RATIO) * h.size:
                    raise NotAStoreError(f"{store.path}/{FILE}: its images' shapes come to {pixels:,} bytes of pixels "
                                         f"in a file of {h.size:,}; the store is damaged")
            else:
                shapes = None
            if self.encoding == "raw" or h.encoding == "raw":
                out = ImageList.allocate(shapes) if shapes is not None else np.empty((n, *store.shape), np.uint8)
                labels = h.batch(np.arange(n), out)
                return out, labels
            labels = h.labels_all()
        finally:
            h.close()
        return self._decode_all(store, labels, shapes)

    def _handle(self, store):
        return SqliteHandle(self, store)

    def _sums(self, store):
        db, _ = connect(store)
        try:
            got = np.array([s for (s,) in db.execute("SELECT checksum FROM images ORDER BY id")], np.int64)
        finally:
            _close(db)
        if len(got) != store.count:
            raise NotAStoreError(f"{store.path}/{FILE} holds {len(got):,} images, not the {store.count:,} its "
                                 "manifest says; the store is damaged")
        return got.view(np.uint64)

    def _change_label(self, path, store, pos):
        db = sqlite3.connect(path / FILE, isolation_level=None)
        try:
            db.execute("UPDATE images SET label = label + 1 WHERE id = ?", (store.first_id + pos,))
        finally:
            db.close()
        return FILE


def _forget_parent_connections() -> None:
    """In a forked child: keep the parent's connections referenced for ever, never closed here
    (SQLite: a connection must not be used, closing included, across fork)."""
    _INHERITED.extend(_OPEN.values())
    _OPEN.clear()


_OPEN: dict[int, sqlite3.Connection] = {}  # id -> a connection this process opened
_INHERITED: list = []
os.register_at_fork(after_in_child=_forget_parent_connections)


def _check_file(fd: int, shown: str) -> int:
    """The file's size, after checking its header names a page size and count it holds."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, 100, 0)
    if len(head) < 100 or head[:16] != HEADER:
        raise NotAStoreError(f"{shown} is not an SQLite database; the store is damaged")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if page not in PAGE_SIZES or pages * page > size:
        raise NotAStoreError(f"{shown}: its header claims {pages:,} pages of {page:,} bytes in a file of {size:,}; "
                             "the store is damaged")
    return size


def connect(store: Store) -> tuple[sqlite3.Connection, int]:
    """A read-only connection to the store's database, its schema checked to be ours; its size."""
    shown = f"{store.path}/{FILE}"
    fd = store.open_file(FILE)  # a regular file of the store (NotAStoreError if missing or not)
    try:
        size = _check_file(fd, shown)
    finally:
        os.close(fd)
    # What a read of the whole store allocates must be justified by the file: raw pixels are in
    # it byte for byte, encoded ones within the ratio deflate allows, and every row takes bytes.
    pixels = store.count * int(np.prod(store.shape)) if store.shape is not None else 0
    ratio = 1 if store.encoding == "raw" else MAX_RATIO
    if store.count * MIN_ROW_BYTES > size or pixels > ratio * size:
        raise NotAStoreError(f"{shown}: {store.count:,} images in {size:,} bytes cannot be (its manifest says "
                             "more than the file holds); the store is damaged")
    path = quote(store.file(FILE))  # through the store's open directory
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None,
                         check_same_thread=False)
    try:
        db.execute("PRAGMA trusted_schema = OFF")
        schema = db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        ragged = store.shape is None
        if schema != [("table", "images", _schema(ragged))]:
            raise NotAStoreError(f"{shown} holds other tables, views or triggers than the images table a store has "
                                 "(or another images table); the store is damaged, or not imgbench's")
        db.execute(f"PRAGMA mmap_size = {size}")
        # Map the file now, reading the first row: a reader advises a store's maps before
        # its first batch, and a map made during that batch faulted every row in with the
        # device's read-ahead around it (a cold batch of 256 read the whole 410 MB file).
        db.execute("SELECT id FROM images WHERE id = ?", (store.first_id,)).fetchone()
    except BaseException:
        db.close()
        raise
    _OPEN[id(db)] = db
    return db, size


def _close(db: sqlite3.Connection) -> None:
    if _OPEN.pop(id(db), None) is not None:
        db.close()


class SqliteHandle(Handle):
    """A connection of this process; rows by id, a batch in one query."""

    file = FILE

    def __init__(self, backend: SqliteBackend, store: Store):
        self.store, self.codec = store, store.codec()
        self.encoding = store.meta.get("encoding", "raw")
        self.db, self.size = connect(store)
        self.ragged = store.shape is None
        self.columns = "id, label, " + ("height, width, channels, " if self.ragged else "") + "image"
        self.first = store.first_id

    def _rows(self, pos: np.ndarray) -> dict:
        """id -> (label, [h, w, c,] image) of the rows at `pos` (unique), in chunks of MAX_VARIABLES."""
        ids = (np.unique(pos) + self.first).tolist()
        got = {}
        for k in range(0, len(ids), MAX_VARIABLES):
            part = ids[k:k + MAX_VARIABLES]
            sql = f"SELECT {self.columns} FROM images WHERE id IN ({', '.join('?' * len(part))})"
            for row in self.db.execute(sql, part):
                got[row[0]] = row[1:]
        if len(got) != len(ids):
            missing = next(i for i in ids if i not in got)
            raise NotAStoreError(f"{self.store.path}/{FILE} has no row for image id {missing}; the store is damaged")
        return got

    def _into(self, dst: np.ndarray, blob, image_id: int) -> None:
        where = f"{self.store.path}: image id {image_id}"
        if self.encoding == "raw":
            if len(blob) != dst.nbytes:
                raise NotAStoreError(f"{where} holds {len(blob):,} bytes, not the {dst.nbytes:,} of its shape; "
                                     "the store is damaged")
            dst.reshape(-1)[:] = np.frombuffer(blob, np.uint8)
            return
        try:
            self.codec.decode_into(dst, blob, where)
        except DecodeError as e:
            raise NotAStoreError(str(e)) from None

    def shapes_of(self, pos):
        rows = self._rows(pos)
        return np.array([rows[p + self.first][1:4] for p in pos.tolist()], np.int64).reshape(-1, 3)

    def shapes_all(self) -> np.ndarray:
        shapes = np.array(self.db.execute("SELECT height, width, channels FROM images ORDER BY id").fetchall(),
                          np.int64).reshape(-1, 3)
        if len(shapes) != self.store.count:
            raise NotAStoreError(f"{self.store.path}/{FILE} holds {len(shapes):,} images, not the "
                                 f"{self.store.count:,} its manifest says; the store is damaged")
        return shapes

    def labels_all(self) -> np.ndarray:
        labels = np.array([x for (x,) in self.db.execute("SELECT label FROM images ORDER BY id")], np.int64)
        if len(labels) != self.store.count:
            raise NotAStoreError(f"{self.store.path}/{FILE} holds {len(labels):,} images, not the "
                                 f"{self.store.count:,} its manifest says; the store is damaged")
        return labels

    def get(self, pos):
        (label, *rest), = self._rows(np.array([pos])).values()
        blob = rest[-1]
        shape = self.store.shape or tuple(rest[:3])
        check_shapes(np.array([shape]), self.store.path)
        out = np.empty(shape, np.uint8)
        self._into(out, blob, self.first + pos)
        return out, int(label)

    def batch(self, pos, out):
        rows = self._rows(pos)
        labels = np.empty(len(pos), np.int64)
        for k, p in enumerate(pos.tolist()):
            label, *rest = rows[p + self.first]
            if self.ragged and tuple(rest[:3]) != out[k].shape:
                raise NotAStoreError(f"{self.store.path}: image id {p + self.first} is {tuple(rest[:3])}, not "
                                     f"{out[k].shape}; the store is damaged")
            self._into(out[k], rest[-1], p + self.first)
            labels[k] = label
        return labels

    def stored(self, pos):
        (label, *rest), = self._rows(np.array([pos])).values()
        return rest[-1], int(label)

    def stored_range(self, lo, hi):
        sql = "SELECT id, label, image FROM images WHERE id >= ? AND id < ? ORDER BY id"
        expect = self.first + lo
        for image_id, label, blob in self.db.execute(sql, (self.first + lo, self.first + hi)):
            if image_id != expect:
                raise NotAStoreError(f"{self.store.path}/{FILE} has no row for image id {expect}; the store is damaged")
            expect += 1
            yield blob, int(label)
        if expect != self.first + hi:
            raise NotAStoreError(f"{self.store.path}/{FILE} has no row for image id {expect}; the store is damaged")

    def close(self):
        if self.db is not None:
            _close(self.db)
            self.db = None
