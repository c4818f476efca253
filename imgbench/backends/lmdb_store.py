"""LMDB: one key per image, the id as 10 zero-padded digits (keys sort in id order).

A value is a 24-byte header (height, width, channels, 0 as little-endian uint16, then the label
as int64 and the image's checksum as uint64: XXH3 of the bytes after the header, seeded with the
label, see checksums.py; LMDB keeps no checksum of its own) followed by the image: its raw pixels (encoding "raw"), its PNG or JPEG bytes, or its
original file's bytes ("source"). Nothing is pickled, so reading a store runs no code from it.
Images of different shapes need nothing else: each value's header has its shape. The map size is estimated from the data and grown on MapFullError, so it is never a reason
to fail. Readers open read-only without locks; reading a whole store is one cursor pass that
copies each value straight into a preallocated array.
"""
from __future__ import annotations

import os
import struct
import threading

import lmdb
import numpy as np

from ..images import ENCODINGS, DecodeError, ImageList
from . import checksums
from .base import Backend, check_coding
from .errors import NotAStoreError, register_library_errors
from .handles import Handle
from ._lmdb_pages import check_tree
from .store import Store

register_library_errors(lmdb.Error)  # CorruptedError and its kind, for a damaged data.mdb

HEADER = struct.Struct("<4HqQ")
PAGE = 4096
KEY = b"%010d"


class LmdbBackend(Backend):
    name = "lmdb"
    format_version = 2  # 2: each value's header has its checksum
    ENCODINGS = ENCODINGS  # every codec (images.py): raw, png, jpeg, webp, webp-lossless, avif, jxl, source

    def __init__(self, *, encoding: str = "raw", quality: int = 90, compress_level: int = 6,
                 map_size: int | None = None, readahead: bool = True, workers: int | None = None,
                 fsync: bool = False):
        """encoding: "raw" pixels, "png" (`compress_level` 0-9), "jpeg" (`quality` 1-95) or
        "source" (the original files' bytes); map_size: initial map size in bytes (None:
        estimated from the data; grown when full); readahead: let the OS read ahead (good for
        whole-store passes, off for random access on stores larger than RAM); workers:
        processes for coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if map_size is not None and (not isinstance(map_size, int) or map_size < PAGE):
            raise ValueError(f"lmdb option map_size must be at least {PAGE} bytes or None, got {map_size!r}")
        self.map_size = map_size
        self.readahead = bool(readahead)
        self.map_grown = 0  # times the last store had to grow its map (visible for tests and logs)

    @staticmethod
    def estimate_map_size(n: int, value_bytes: int) -> int:
        # Values above ~half a page live on their own overflow pages; add room for the B-tree.
        pages = -(-(value_bytes + 16) // PAGE) if value_bytes > PAGE // 2 else value_bytes / (PAGE // 2)
        return int(n * pages * PAGE * 1.25) + 2**20

    def _write(self, tmp, images, labels, first_id, sources):
        n = len(images)
        labels = labels.tolist()  # Python ints pack several times faster than numpy scalars
        sums = np.empty(n, np.uint64)
        check = checksums.checksum
        if self.encoding == "raw" and not isinstance(images, ImageList):
            _, h, w, c = images.shape
            flat = images.reshape(n, -1)

            def items():  # one value at a time: no second copy of the whole batch in memory
                for i in range(n):
                    sums[i] = sum_ = check(flat[i], labels[i])
                    yield KEY % (first_id + i), HEADER.pack(h, w, c, 0, labels[i], sum_) + flat[i].tobytes()

            value_bytes = flat.shape[1]
        else:
            shapes = images.shapes.tolist() if isinstance(images, ImageList) else [images.shape[1:]] * n
            data = images if self.encoding == "raw" else self._encode_all(images, sources)

            def items():
                for i in range(n):
                    payload = data[i].tobytes() if self.encoding == "raw" else data[i]
                    sums[i] = sum_ = check(payload, labels[i])
                    yield KEY % (first_id + i), b"".join((HEADER.pack(*shapes[i], 0, labels[i], sum_), payload))

            value_bytes = sum(len(data[i]) if self.encoding != "raw" else data[i].nbytes for i in range(n)) // n
        size = self.map_size or self.estimate_map_size(n, HEADER.size + value_bytes)
        self.map_grown = 0
        env = lmdb.open(str(tmp), map_size=size, subdir=True, sync=self.fsync, metasync=self.fsync,
                        max_dbs=0, meminit=False)
        try:
            while True:
                try:
                    with env.begin(write=True) as txn:
                        added = txn.cursor().putmulti(items(), append=True)[1]
                    break
                except lmdb.MapFullError:
                    size *= 2  # the aborted transaction left nothing behind; retry with room
                    self.map_grown += 1
                    env.set_mapsize(size)
            if added != n:
                raise RuntimeError(f"lmdb stored {added} of {n} images")
            if self.fsync:
                env.sync(True)
        finally:
            env.close()
        return sums

    def _env(self, store: Store) -> lmdb.Environment:
        return acquire(store, self.readahead)

    def _sums(self, store):
        return self._headers(store)[:, 16:24].copy().view("<u8")[:, 0]

    def _change_label(self, path, store, pos):
        env = open_to_edit(path)
        try:
            with env.begin(write=True) as txn:
                key = KEY % (store.first_id + pos)
                v = bytearray(txn.get(key))
                fields = list(HEADER.unpack_from(v))
                fields[4] += 1
                HEADER.pack_into(v, 0, *fields)
                txn.put(key, bytes(v))
        finally:
            env.close()
        return "data.mdb"

    def _headers(self, store: Store) -> np.ndarray:
        """Every value's header (N, 24) uint8, in one cursor pass."""
        n, hs = store.count, HEADER.size
        env = self._env(store)
        try:
            with env.begin(buffers=True) as txn:
                if txn.stat()["entries"] != n:  # before room for n headers is allocated
                    raise NotAStoreError(f"{store.path}: lmdb holds {txn.stat()['entries']:,} values, its manifest "
                                         f"says {n:,} images; the store is damaged")
                headers = np.empty((n, hs), np.uint8)
                hdst = memoryview(headers).cast("B")
                i = -1
                for i, v in enumerate(txn.cursor().iternext(keys=False, values=True)):
                    if i >= n or len(v) < hs:
                        raise NotAStoreError(f"{store.path}: lmdb holds more or other values than its "
                                             f"{n} images; the store is damaged")
                    hdst[i * hs:(i + 1) * hs] = v[:hs]
                if i + 1 != n:
                    raise NotAStoreError(f"{store.path}: lmdb holds {i + 1} images, its manifest says {n}; "
                                         "the store is damaged")
        finally:
            release(env)
        return headers

    def _handle(self, store):
        if store.encoding == "raw" and store.shape is not None:
            return LmdbHandle(self, store)
        return _RecordHandle(self, store)

    def _decode(self, store: Store, headers: np.ndarray) -> np.ndarray:
        fields = headers.view("<u2")[:, :3]
        if (fields != store.shape).any():
            raise NotAStoreError(f"{store.path}: an lmdb value's header disagrees with the store's "
                                 f"image shape {store.shape}; the store is damaged")
        return headers[:, 8:16].copy().view("<i8")[:, 0]

    def _read_all(self, store):
        if store.encoding != "raw" or store.shape is None:
            return self._read_records(store)
        n, px = store.count, int(np.prod(store.shape))
        env = self._env(store)
        try:
            with env.begin(buffers=True) as txn:
                entries = txn.stat()["entries"]
                if entries != n:  # before room for n images is allocated
                    raise NotAStoreError(f"{store.path}: lmdb holds {entries:,} values, its manifest says {n:,} "
                                         "images; the store is damaged")
                out = np.empty((n, *store.shape), np.uint8)
                headers = np.empty((n, HEADER.size), np.uint8)
                dst, hdst, hs = memoryview(out).cast("B"), memoryview(headers).cast("B"), HEADER.size
                i = -1
                for i, v in enumerate(txn.cursor().iternext(keys=False, values=True)):
                    if i >= n or len(v) != hs + px:
                        raise NotAStoreError(f"{store.path}: lmdb holds more or other values than its "
                                             f"{n} images; the store is damaged")
                    dst[i * px:(i + 1) * px] = v[hs:]
                    hdst[i * hs:(i + 1) * hs] = v[:hs]
                if i + 1 != n:
                    raise NotAStoreError(f"{store.path}: lmdb holds {i + 1} images, its manifest says {n}")
        finally:
            release(env)
        return out, self._decode(store, headers)

    def _read_records(self, store):
        """Labels and shapes from every value's header first (to size the result), then raw images
        of several shapes copied into an ImageList, or encoded ones decoded in parallel (each
        worker its own reads)."""
        h = _RecordHandle(self, store)
        try:
            headers = h.headers(np.arange(store.count))
            shapes, labels = headers[:, :3].astype(np.int64), headers[:, 4].copy()
            if store.encoding != "raw":
                return self._decode_all(store, labels, shapes)
            out = ImageList.allocate(shapes)
            h.batch(np.arange(store.count), out)
            return out, labels
        finally:
            h.close()


class LmdbHandle(Handle):
    """One open environment and one long read transaction (stores never change in place)."""

    def __init__(self, backend: LmdbBackend, store: Store):
        self.store, self.backend = store, backend
        self.px = int(np.prod(store.shape)) if store.shape is not None else -1
        self.env = backend._env(store)
        try:
            self.txn = self.env.begin(buffers=True)
            entries = self.txn.stat()["entries"]
            if entries != store.count:  # before any walk over ids: a manifest's count is not trusted
                self.txn.abort()
                raise NotAStoreError(f"{store.path}: lmdb holds {entries:,} values, its manifest says {store.count:,} "
                                     "images; the store is damaged")
        except BaseException:
            release(self.env)
            raise

    def _value(self, pos: int):
        v = self.txn.get(KEY % (self.store.first_id + pos))
        if v is None or len(v) != HEADER.size + self.px:
            raise NotAStoreError(f"{self.store.path}: image id {self.store.first_id + pos} is missing "
                                 "or damaged in the lmdb data")
        return v

    file = "data.mdb"

    def locate(self, pos):
        # for the fault battery (bench/faults.py): LMDB's free pages may hold stale copies of a value,
        # so a search of data.mdb could damage one of those; the live one is where the map has it
        data = self.stored(pos)[0]
        return "data.mdb", _mapped_offset(np.frombuffer(data, np.uint8).ctypes.data)

    def stored(self, pos):
        v = self._value(pos)
        return v[HEADER.size:], HEADER.unpack_from(v)[4]

    def stored_range(self, lo, hi):
        """One cursor walk from lo's key (a get per image costs more than the check): each key must
        be the next id."""
        cur, first, hs, unpack = self.txn.cursor(), self.store.first_id, HEADER.size, HEADER.unpack_from
        if not cur.set_key(KEY % (first + lo)):
            self._value(lo)  # raises, naming the id
        keys = [KEY % i for i in range(first + lo, first + hi)]
        for key, (k, v) in zip(keys, cur.iternext()):
            if k != key or len(v) < hs:
                p = first + keys.index(key)
                self._value(p - first)  # raises for a missing or short value
                raise NotAStoreError(f"{self.store.path}: the lmdb keys are out of order at image id {p}; "
                                     "the store is damaged")
            yield v[hs:], unpack(v)[4]

    def get(self, pos):
        v = self._value(pos)
        h, w, c, _, label, _ = HEADER.unpack_from(v)
        if (h, w, c) != self.store.shape:
            raise NotAStoreError(f"{self.store.path}: the lmdb value of image id {self.store.first_id + pos} "
                                 f"has shape {(h, w, c)}, the store's is {self.store.shape}; the store is damaged")
        return np.frombuffer(v, np.uint8, self.px, HEADER.size).reshape(self.store.shape).copy(), label

    def batch(self, pos, out):
        # Each value (header + pixels) is copied whole into one staging row, then the pixels go to
        # `out` in one numpy copy: one Python-level copy per image instead of two (measured 15%
        # faster); keys are fetched in sorted order, so neighbouring B-tree pages are reused.
        hs, row, get, first = HEADER.size, HEADER.size + self.px, self.txn.get, self.store.first_id
        stage = np.empty((len(pos), row), np.uint8)
        dst = memoryview(stage).cast("B")
        order = np.argsort(pos)
        for j, p in zip(order.tolist(), pos[order].tolist()):
            v = get(KEY % (first + p))
            if v is None or len(v) != row:
                self._value(p)  # raises, naming the id
            dst[j * row:(j + 1) * row] = v
        out.reshape(len(pos), -1)[...] = stage[:, hs:]
        return self.backend._decode(self.store, stage[:, :hs])

    def close(self):
        try:
            self.txn.abort()
        finally:
            release(self.env)


class _RecordHandle(LmdbHandle):
    """Encoded images, or raw ones of several shapes: each value's header gives its shape and
    label, its bytes are decoded (or copied) by the store's codec."""

    def __init__(self, backend, store):
        super().__init__(backend, store)
        self.codec = store.codec()  # its own encoding, by the backend's decoder

    def _value(self, pos):
        v = self.txn.get(KEY % (self.store.first_id + pos))
        if v is None or len(v) < HEADER.size:
            raise NotAStoreError(f"{self.store.path}: image id {self.store.first_id + pos} is missing "
                                 "or damaged in the lmdb data")
        return v

    def headers(self, pos) -> np.ndarray:
        """(h, w, c, 0, label) of each position, as int64 rows."""
        out = np.empty((len(pos), 5), np.int64)
        for k, p in enumerate(pos.tolist()):
            out[k] = HEADER.unpack_from(self._value(p))[:5]
        return out

    def shapes_of(self, pos):
        return self.headers(pos)[:, :3]

    def _into(self, dst, pos) -> int:
        v = self._value(pos)
        h, w, c, _, label, _ = HEADER.unpack_from(v)
        where = f"{self.store.path}: image id {self.store.first_id + pos}"
        if (h, w, c) != dst.shape:
            raise NotAStoreError(f"{where} has shape {(h, w, c)} in its header, not {dst.shape}; the store is damaged")
        try:
            self.codec.decode_into(dst, v[HEADER.size:], where)
        except DecodeError as e:
            raise NotAStoreError(str(e)) from None
        return label

    def get(self, pos):
        h, w, c, _, label, _ = HEADER.unpack_from(self._value(pos))
        out = np.empty((h, w, c), np.uint8)
        self._into(out, pos)
        return out, label

    def batch(self, pos, out):
        labels = np.empty(len(pos), np.int64)
        order = np.argsort(pos, kind="stable")  # key order: neighbouring B-tree pages
        for k, p in zip(order.tolist(), pos[order].tolist()):
            labels[k] = self._into(out[k], p)
        return labels


# LMDB allows one open environment per data file in a process (py-lmdb refuses a second open),
# so every reader of a process shares one, counted; the last release closes it.
_envs: dict[tuple, list] = {}  # (st_dev, st_ino) of data.mdb -> [environment, users]
_envs_lock = threading.Lock()


def open_to_edit(path) -> lmdb.Environment:
    """The store's environment opened for writing one value again (the fault battery): a map with
    room beside the file for the pages a write copies (LMDB's default map, 10 MiB, is smaller
    than a store of large images, and the write would fail with MapFullError)."""
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    return lmdb.open(str(path), max_dbs=0, map_size=2 * size + 2**20)


def _mapped_offset(address: int) -> int:
    """The file offset of a byte of a memory-mapped file at `address` in this process (Linux)."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, _, offset = line.split()[:3]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= address < hi:
                return address - lo + int(offset, 16)
    raise ValueError(f"address {address:#x} is not mapped")


def acquire(store: Store, readahead: bool) -> lmdb.Environment:
    path, root = store.path, store.file("")
    fd = store.open_file("data.mdb")  # a regular file of the store, or NotAStoreError
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with _envs_lock:
            if key not in _envs:
                check_tree(fd, path)
    finally:
        os.close(fd)
    with _envs_lock:
        entry = _envs.get(key)
        if entry is None:
            try:
                env = lmdb.open(root, readonly=True, lock=False, subdir=True, readahead=readahead, max_dbs=0)
            except lmdb.Error as e:
                if "already open" in str(e):
                    raise NotAStoreError(
                        f"{path}: this process already has the store's lmdb environment open outside imgbench "
                        "(LMDB allows one per process); close that environment, or read through imgbench only"
                    ) from None
                raise NotAStoreError(f"{path} is not a readable lmdb store ({e})") from None
            entry = _envs[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def check_data_file(store: Store) -> None:
    """check_tree of a store's data.mdb."""
    fd = store.open_file("data.mdb")
    try:
        check_tree(fd, store.path)
    finally:
        os.close(fd)


def release(env: lmdb.Environment) -> None:
    with _envs_lock:
        for key, entry in list(_envs.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _envs[key]
                    env.close()
                return


def _forget_parent_envs() -> None:
    # A forked child inherits the parent's environments and py-lmdb's guard against opening them
    # again. They must not be used here; closing them unmaps only this child's copy (lock=False:
    # there are no locks to release), so the child's readers can open their own.
    for env, _ in _envs.values():
        try:
            env.close()
        except Exception:
            pass
    _envs.clear()


os.register_at_fork(after_in_child=_forget_parent_envs)
