"""litdata: LitData's optimized chunks (Lightning), written with `litdata.optimize`.

`index.json` and chunk files `chunk-R-K.bin` at the store's top, as `optimize(fn, inputs,
output_dir, chunk_bytes=...)` leaves them: each item a dict `{"id", "label", "checksum",
["height", "width", "channels",] "image"}` of ints (int64; `checksum` is the image's XXH3, see
checksums.py, as a signed int64) and the image: its pixels as a numpy array (encoding "raw",
LitData's "numpy" serializer: a header of dtype, rank and shape, then the bytes) or the PNG,
JPEG or original file's bytes (LitData's "bytes"). Images of different shapes add the three
shape fields. `litdata.StreamingDataset(store)` reads it.

A chunk is LitData's documented layout: the item count (uint32), N + 1 item offsets (uint32),
then the items; an item is its fields' sizes (uint32 each) and then the fields. imgbench's reader
reads that layout itself, without LitData: at open, `index.json` and each chunk's offsets (4
bytes per image); an image is a slice of its chunk's memory map. The items are made in this
process (coded in parallel as every backend codes) and serialized and written by `optimize`'s
worker, one, forked (`start_method="fork"`, a documented setting: its default, spawn, costs a
new interpreter importing PyTorch and the items pickled to it).

A store is untrusted input: `index.json` is read bounded, must describe exactly the items
written here (no compression, encryption or other item loader) in chunks named as LitData names
them, at the store's top, whose counts add up to the manifest's; each chunk's size is the one the
index gives and its offsets rise within it; each item's field sizes, id and (for raw pixels)
shape header are checked when it is read.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import struct

import numpy as np

from ..images import Blobs, DecodeError, ImageList
from . import advise, checksums
from .arrow_values import chunks_of
from .base import Backend, check_coding
from .errors import NotAStoreError
from .handles import Handle, read_into
from .store import Store, check_shapes

INDEX = "index.json"
CHUNK = re.compile(r"chunk-\d{1,6}-\d{1,9}\.bin")
MAX_INDEX_BYTES = 64 * 2**20  # an index is ~100 bytes per chunk
SHAPE = ("height", "width", "channels")
UINT8 = 4  # LitData's numpy serializer's index of uint8
ARROW_FOOTER = b"LDARW01\0"  # ends a chunk whose rows LitData keeps as an Arrow IPC file
INT = struct.Struct("<q")


def _keys(ragged: bool) -> list[str]:
    return ["id", "label", "checksum", *(SHAPE if ragged else ()), "image"]


class _Items:
    """optimize's `fn`: input i -> the i-th item (pickled into the spawned worker with its data)."""

    def __init__(self, data, labels, sums, first_id: int, shapes, raw: bool):
        self.data, self.labels, self.sums, self.first_id = data, labels, sums, first_id
        self.shapes, self.raw = shapes, raw

    def __call__(self, i: int) -> dict:
        value = self.data[i]
        item = {"id": self.first_id + i, "label": int(self.labels[i]), "checksum": int(self.sums[i])}
        if self.shapes is not None:
            item.update(zip(SHAPE, (int(v) for v in self.shapes[i])))
        item["image"] = np.asarray(value) if self.raw else bytes(value)
        return item


class LitdataBackend(Backend):
    name = "litdata"
    ENCODINGS = ("raw", "png", "jpeg", "source")
    REQUIRES, EXTRA = ("litdata",), "litdata"  # LitData pulls in PyTorch: an optional extra

    def __init__(self, *, encoding: str = "raw", quality: int = 90, compress_level: int = 6,
                 chunk_bytes: str = "64MB", workers: int | None = None, fsync: bool = False):
        """encoding: "raw" (pixels), "png" (Pillow, `compress_level` 0-9), "jpeg" (`quality`
        1-95) or "source" (the original files' bytes); chunk_bytes: LitData's target chunk size
        (its docs' "64MB"); workers: processes for coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if not isinstance(chunk_bytes, str) or not re.fullmatch(r"\d+(KB|MB|GB)", chunk_bytes):
            raise ValueError(f"litdata option chunk_bytes must be a size such as '64MB', got {chunk_bytes!r}")
        self.chunk_bytes = chunk_bytes

    def _write(self, tmp, images, labels, first_id, sources):
        import litdata

        n = len(images)
        raw = self.encoding == "raw"
        ragged = isinstance(images, ImageList)
        data = images if raw else self._encode_all(images, sources)
        if not raw and not isinstance(data, Blobs):
            data = Blobs.from_bytes(data)
        sums = np.empty(n, np.uint64)
        labels = np.asarray(labels, np.int64)
        for i in range(n):
            sums[i] = checksums.checksum(np.ascontiguousarray(data[i]) if raw else data[i], labels[i])
        fn = _Items(data, labels, sums.view(np.int64), first_id, images.shapes if ragged else None, raw)
        # Its worker forked (optimize's documented start_method; its default, spawn, starts a
        # new interpreter that imports PyTorch and gets the items pickled: 6 s for 300 images
        # here, fork 0.1 s). Its progress bar and messages go to the job's log. It sets this
        # process's multiprocessing start method (force=True), which a DataLoader made later
        # here would follow: the caller's is put back.
        before = multiprocessing.get_start_method(allow_none=True)
        try:
            litdata.optimize(fn=fn, inputs=list(range(n)), output_dir=str(tmp), chunk_bytes=self.chunk_bytes,
                             num_workers=1, start_method="fork")
        finally:
            multiprocessing.set_start_method(before, force=True)
        _check_written(tmp, n)
        return sums

    def _read_all(self, store):
        h = _LitdataHandle(self, store)
        try:
            if store.shape is None:
                shapes = h.shapes_all()
                check_shapes(shapes, store.path)
            else:
                shapes = None
            if h.raw:
                out = ImageList.allocate(shapes) if shapes is not None else np.empty((store.count, *store.shape),
                                                                                      np.uint8)
                return out, h.batch(np.arange(store.count), out)
            labels = h.fields_all(1)
        finally:
            h.close()
        return self._decode_all(store, labels, shapes)

    def _handle(self, store):
        return _LitdataHandle(self, store)

    def _sums(self, store):
        h = _LitdataHandle(self, store)
        try:
            return h.fields_all(2).view(np.uint64)
        finally:
            h.close()

    def _change_label(self, path, store, pos):
        h = _LitdataHandle(self, store)
        try:
            c = int(np.searchsorted(h.firsts, pos, "right")) - 1
            name, at = h.names[c], h.chunks[c].label_offset(pos - int(h.firsts[c]))
        finally:
            h.close()
        with open(path / name, "r+b") as f:
            f.seek(at)
            label = INT.unpack(f.read(8))[0]
            f.seek(at)
            f.write(INT.pack(label + 1))
        return name


def _check_written(tmp, n: int) -> None:
    """What optimize wrote must be whole: it returns normally when its worker's write failed (a
    full disk, a file-size limit), leaving a short chunk or no index."""
    try:
        index = json.loads((tmp / INDEX).read_text())
        chunks = index["chunks"]
        written = sum(c["chunk_size"] for c in chunks)
        short = [c["filename"] for c in chunks if (tmp / c["filename"]).stat().st_size != c["chunk_bytes"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OSError(f"litdata.optimize left no readable {INDEX} in {tmp} ({e}); a write in its worker failed") \
            from None
    if written != n or short:
        raise OSError(f"litdata.optimize wrote {written:,} of {n:,} images to {tmp}"
                      f"{', with short chunks ' + ', '.join(short) if short else ''}; a write in its worker failed")


def _index(store: Store) -> dict:
    shown = f"{store.path}/{INDEX}"
    fd = store.open_file(INDEX)
    try:
        data = os.pread(fd, MAX_INDEX_BYTES + 1, 0)
    finally:
        os.close(fd)
    try:
        if len(data) > MAX_INDEX_BYTES:
            raise ValueError(f"more than {MAX_INDEX_BYTES:,} bytes")
        index = json.loads(data)
        config, chunks = index["config"], index["chunks"]
        if not isinstance(config, dict) or not isinstance(chunks, list):
            raise ValueError("no config object and chunk list")
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise NotAStoreError(f"{shown} is unreadable ({e}); the store is damaged") from None
    return index


class _PytreeChunk:
    """A chunk in LitData's item layout: the items one after another, each its fields' sizes and
    fields (LitData writes numpy arrays so)."""

    def __init__(self, h, name: str, fd: int, count: int, size: int):
        shown = f"{h.store.path}/{name}"
        head = 4 + 4 * (count + 1)
        buf = bytearray(head)
        read_into(fd, memoryview(buf), 0, shown)
        got = np.frombuffer(buf, np.uint32)
        self.offsets = got[1:].astype(np.int64)
        if (int(got[0]) != count or self.offsets[0] != head or self.offsets[-1] > size
                or np.any(np.diff(self.offsets) < 4 * h.k + 8 * h.ints)):
            raise NotAStoreError(f"{shown}: its item table does not describe {count:,} items within it; the store "
                                 "is damaged")
        self.h, self.path, self.mm = h, h.store.file(name), None

    def item(self, row: int, where: str) -> tuple:
        h = self.h
        if self.mm is None:
            self.mm = np.memmap(self.path, np.uint8, "r")
            if h.advice is not None:  # a chunk met mid-epoch reads as the epoch does
                advise.advise_map(self.mm, h.advice)
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        item = self.mm[a:b]
        head = 4 * h.k
        sizes = item[:head].view(np.uint32)
        if np.any(sizes[:-1] != 8) or head + int(sizes.sum(dtype=np.int64)) != b - a:
            raise NotAStoreError(f"{where}: its item's field sizes do not add up; the store is damaged")
        return item[head:head + 8 * h.ints].view(np.int64), item[head + 8 * h.ints:]

    def ints(self, field: int, where) -> np.ndarray:
        return np.array([self.item(r, where(r))[0][field] for r in range(len(self.offsets) - 1)], np.int64)

    def label_offset(self, row: int) -> int:
        return int(self.offsets[row]) + 4 * self.h.k + 8

    def close(self):
        self.mm = None  # unmapped when the last view goes


class _ArrowChunk:
    """A chunk in LitData's Arrow layout (what it writes when every field has an Arrow type: ints
    and bytes): its item table empty, the rows an Arrow IPC file at its end, in batches of 256."""

    def __init__(self, h, name: str, fd: int, count: int, size: int):
        import pyarrow as pa

        shown = f"{h.store.path}/{name}"
        tail = os.pread(fd, 12, size - 12) if size >= 12 else b""
        span = struct.unpack("<I", tail[:4])[0] if len(tail) == 12 and tail[4:] == ARROW_FOOTER else 0
        start = size - 12 - span
        if not span or start < 4 + 4 * (count + 1):
            raise NotAStoreError(f"{shown} has neither items nor LitData's Arrow rows; the store is damaged")
        fields = [pa.field(key, pa.int64()) for key in _keys(h.ragged)[:-1]] + [pa.field("image", pa.binary())]
        try:
            whole = pa.memory_map(h.store.file(name)).read_buffer()  # a map of the chunk: no copy
            table = pa.ipc.open_file(whole.slice(start, span)).read_all()
            table.validate(full=True)  # offsets within their buffers, before numpy views them
            if table.schema.remove_metadata() != pa.schema(fields) or table.num_rows != count:
                raise ValueError(f"{table.num_rows:,} rows of {table.schema.names}")
            self.ints_ = np.column_stack([table.column(i).to_numpy() for i in range(h.ints)]).astype(np.int64)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise NotAStoreError(f"{shown}: its Arrow rows are not {count:,} items of a store ({e}); the store is "
                                 "damaged") from None
        self.images = chunks_of(table.column("image"), 0)  # (first row, data, offsets) per batch
        self.firsts = np.array([first for first, _, _ in self.images], np.int64)
        # where each batch's labels lie in the file (the fault battery changes one there)
        self.label_at = [ch.buffers()[1].address - whole.address + 8 * ch.offset
                         for ch in table.column("label").chunks if len(ch)]

    def label_offset(self, row: int) -> int:
        b = int(np.searchsorted(self.firsts, row, "right")) - 1
        return self.label_at[b] + 8 * (row - int(self.firsts[b]))

    def item(self, row: int, where: str) -> tuple:
        first, data, offs = self.images[int(np.searchsorted(self.firsts, row, "right")) - 1]
        return self.ints_[row], data[offs[row - first]:offs[row - first + 1]]

    def ints(self, field: int, where) -> np.ndarray:
        return self.ints_[:, field].copy()

    def close(self):
        self.images = []


class _LitdataHandle(Handle):
    """The index, and each chunk's item table (or Arrow rows), in memory; chunks mapped."""

    def __init__(self, backend: LitdataBackend, store: Store):
        self.store, self.shown, self.codec = store, f"{store.path}/{INDEX}", store.codec()
        self.raw = store.encoding == "raw"
        self.ragged = store.shape is None
        keys = _keys(self.ragged)
        self.k, self.ints = len(keys), len(keys) - 1
        index = _index(store)
        config, chunks = index["config"], index["chunks"]
        expect = ["int"] * self.ints + ["numpy" if self.raw else "bytes"]
        try:
            spec = json.loads(config.get("data_spec") or "null")
            got_keys = json.loads(spec[1]["context"])
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            got_keys = None
        if (config.get("data_format") != expect or got_keys != keys or config.get("compression")
                or config.get("encryption") or config.get("item_loader") != "PyTreeLoader"):
            raise NotAStoreError(f"{self.shown} describes other items than a store's ({expect} of {keys}, "
                                 "uncompressed, unencrypted); the store is damaged, or not imgbench's")
        self.names, self.chunks, firsts = [], [], [0]
        for c, entry in enumerate(chunks):
            try:
                name, count, size = entry["filename"], entry["chunk_size"], entry["chunk_bytes"]
            except (KeyError, TypeError):
                raise NotAStoreError(f"{self.shown}: chunk entry {c} is unreadable; the store is damaged") from None
            if not (isinstance(name, str) and CHUNK.fullmatch(name) and type(count) is int and type(size) is int
                    and 0 < count <= store.count - firsts[-1]):
                raise NotAStoreError(f"{self.shown}: chunk entry {c} ({name!r}, {count!r} items) is not a chunk of "
                                     "the store; the store is damaged, or made to read elsewhere")
            self.chunks.append(self._chunk(name, count, size))
            self.names.append(name)
            firsts.append(firsts[-1] + count)
        if firsts[-1] != store.count:
            raise NotAStoreError(f"{self.shown} lists {firsts[-1]:,} items, not the {store.count:,} the manifest "
                                 "says; the store is damaged")
        self.firsts = np.array(firsts, np.int64)

    def _chunk(self, name: str, count: int, size: int):
        fd = self.store.open_file(name)
        shown = f"{self.store.path}/{name}"
        try:
            actual = os.fstat(fd).st_size
            if actual != size or 4 + 4 * (count + 1) > actual:
                raise NotAStoreError(f"{shown} is {actual:,} bytes, not the {size:,} of {count:,} items the index "
                                     "says; the store is damaged")
            second = os.pread(fd, 8, 4)  # the first two offsets: equal when the rows are Arrow's
            kind = _ArrowChunk if len(second) == 8 and second[:4] == second[4:] else _PytreeChunk
            return kind(self, name, fd, count, size)
        finally:
            os.close(fd)

    def _where(self, chunk: int, row: int) -> str:
        return f"{self.store.path}/{self.names[chunk]}: image id {self.store.first_id + int(self.firsts[chunk]) + row}"

    def _item(self, pos: int) -> tuple:
        """(ints, image payload, where) of row `pos`, its id and pixel header checked."""
        c = int(np.searchsorted(self.firsts, pos, "right")) - 1
        row = pos - int(self.firsts[c])
        where = self._where(c, row)
        ints, payload = self.chunks[c].item(row, where)
        if int(ints[0]) != self.store.first_id + pos:
            raise NotAStoreError(f"{where}: its item holds id {int(ints[0])}; the store is damaged")
        if self.raw:
            shape = tuple(int(v) for v in ints[3:6]) if self.ragged else self.store.shape
            want = np.array([UINT8, 3, *shape], np.uint32).view(np.uint8)
            if len(payload) < 20 or np.any(payload[:20] != want):
                raise NotAStoreError(f"{where}: its pixels' header is not a uint8 array of shape {shape}; the store "
                                     "is damaged")
            payload = payload[20:]
        return ints, payload, where

    def fields_all(self, field: int) -> np.ndarray:
        """Int field `field` (1 label, 2 checksum, 3-5 shape) of every item, in id order."""
        parts = [ch.ints(field, lambda r, c=c: self._where(c, r)) for c, ch in enumerate(self.chunks)]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def shapes_all(self) -> np.ndarray:
        return np.column_stack([self.fields_all(f) for f in (3, 4, 5)]).reshape(-1, 3)

    def shapes_of(self, pos):
        return np.array([self._item(int(p))[0][3:6] for p in pos], np.int64).reshape(-1, 3)

    def _into(self, dst: np.ndarray, payload, where: str) -> None:
        try:
            self.codec.decode_into(dst, payload, where)
        except DecodeError as e:
            raise NotAStoreError(str(e)) from None

    def get(self, pos):
        ints, payload, where = self._item(pos)
        shape = tuple(int(v) for v in ints[3:6]) if self.ragged else self.store.shape
        check_shapes(np.array([shape]), self.store.path)
        out = np.empty(shape, np.uint8)
        self._into(out, payload, where)
        return out, int(ints[1])

    def batch(self, pos, out):
        labels = np.empty(len(pos), np.int64)
        order = np.argsort(pos, kind="stable")  # storage order: neighbouring pages when cold
        for k, p in zip(order.tolist(), pos[order].tolist()):
            ints, payload, where = self._item(p)
            if self.ragged and tuple(int(v) for v in ints[3:6]) != out[k].shape:
                raise NotAStoreError(f"{where} is {tuple(ints[3:6])}, not {out[k].shape}; the store is damaged")
            self._into(out[k], payload, where)
            labels[k] = ints[1]
        return labels

    def stored(self, pos):
        ints, payload, _ = self._item(pos)
        return payload, int(ints[1])

    def where(self, pos):
        return self.names[int(np.searchsorted(self.firsts, pos, "right")) - 1]

    file = INDEX

    def close(self):
        for ch in self.chunks:
            ch.close()
