"""hfdatasets: a Hugging Face `datasets.Dataset` saved with `save_to_disk` (Arrow files).

`images.hf/` holds what `save_to_disk` writes: `data-00000-of-0000N.arrow` (Arrow IPC streams),
`dataset_info.json` (the features) and `state.json` (which files, in order). Columns `id`,
`label` (int64), `checksum` (uint64, see checksums.py) and `image`: the `Image` feature (a
struct of PNG, JPEG or original-file `bytes` and a null `path`: encoding "png", the default,
"jpeg" or "source"), or with encoding "raw" an `Array3D` of uint8 (one shape) or a nested
list (`Sequence` of `Sequence` of `Sequence`) for images of different shapes, with int32 `height`,
`width`, `channels` columns then. `datasets.load_from_disk(path)` opens it.

imgbench's reader maps each Arrow file with pyarrow (zero copy, as `datasets` does) and slices an
image's bytes out of the column's buffers; the `datasets` library itself is only needed to write.
A store is untrusted input: `state.json` may only name plain file names in `images.hf/`, its
row count must be the manifest's, and the files' schema must be the one written here.
"""
from __future__ import annotations

import json
import mmap
import os

import numpy as np
import pyarrow as pa

from ..images import ImageList
from . import parallel
from .arrow_values import ValuesHandle, decode_range, image_column, values
from .base import Backend, check_coding
from .errors import NotAStoreError
from .store import Store, check_shapes

DIR = "images.hf"
STATE = "state.json"
SHAPE = ("height", "width", "channels")
MAX_STATE_BYTES = 2**20


class HfDatasetsBackend(Backend):
    name = "hfdatasets"
    ENCODINGS = ("png", "jpeg", "raw", "source")

    def __init__(self, *, encoding: str = "png", quality: int = 90, compress_level: int = 6,
                 max_shard_size: str = "500MB", workers: int | None = None, fsync: bool = False):
        """encoding: "png" (the `Image` feature's PNG bytes, Pillow `compress_level` 0-9), "jpeg"
        (`quality` 1-95), "source" (the original files' bytes) or "raw" (pixels as `Array3D`);
        max_shard_size: save_to_disk's Arrow file size (its default); workers: processes for
        coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if not isinstance(max_shard_size, str):
            raise ValueError(f"hfdatasets option max_shard_size must be a size such as '500MB', got {max_shard_size!r}")
        self.max_shard_size = max_shard_size

    def _write(self, tmp, images, labels, first_id, sources):
        import datasets

        n = len(images)
        ragged = isinstance(images, ImageList)
        values, sums = image_column(self, tmp, images, labels, sources, 1 << 16)
        features = {"id": datasets.Value("int64"), "label": datasets.Value("int64"),
                    "checksum": datasets.Value("uint64")}
        columns = {"id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
                   "label": pa.array(np.asarray(labels, np.int64)), "checksum": pa.array(sums)}
        if self.encoding != "raw":  # the Image feature: struct<bytes, path>, path null
            chunks = [pa.StructArray.from_arrays([ch, pa.nulls(len(ch), pa.string())], ["bytes", "path"])
                      for ch in values.chunks]
            columns["image"] = pa.chunked_array(chunks)
            features["image"] = datasets.Image()
        elif not ragged:  # Array3D: list<list<list<uint8>>> over the pixels, no copy of them
            h, w, c = images.shape[1:]
            if images.nbytes >= 2**31:  # Arrow lists' 32-bit offsets, as datasets' Array3D uses
                raise ValueError("hfdatasets keeps raw pixels in at most 2 GiB per store; use encoding 'png', or "
                                 "store fewer images")
            flat = pa.array(np.asarray(images).reshape(-1))
            inner = pa.ListArray.from_arrays(pa.array(np.arange(0, n * h * w * c + 1, c, dtype=np.int32)), flat)
            middle = pa.ListArray.from_arrays(pa.array(np.arange(0, n * h * w + 1, w, dtype=np.int32)), inner)
            columns["image"] = pa.ListArray.from_arrays(pa.array(np.arange(0, n * h + 1, h, dtype=np.int32)), middle)
            features["image"] = datasets.Array3D(shape=(h, w, c), dtype="uint8")
        else:
            columns["image"] = _nested(images)
            features["image"] = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("uint8"))))
        if ragged:
            for name, col in zip(SHAPE, images.shapes.T):
                columns[name] = pa.array(col.astype(np.int32))
                features[name] = datasets.Value("int32")
        features = datasets.Features(features)
        table = pa.table(columns)
        ds = datasets.Dataset(datasets.table.InMemoryTable(table.cast(features.arrow_schema)),
                              info=datasets.DatasetInfo(features=features))
        ds.save_to_disk(str(tmp / DIR), max_shard_size=self.max_shard_size)
        return sums

    def _read_all(self, store):
        t = _Tables(store)
        n = store.count
        if t.raw and store.shape is not None:
            out = np.empty((n, *store.shape), np.uint8)
            flat, k = out.reshape(n, -1), 0
            for data, offs in t.chunks:
                count = len(offs) - 1
                a, b = offs[0], offs[-1]
                if not 0 <= a <= b <= len(data) or b - a != count * flat.shape[1]:
                    raise NotAStoreError(f"{t.shown}: its pixels do not fill {count:,} images of {store.shape}; "
                                         "the store is damaged")
                flat[k:k + count] = data[a:b].reshape(count, -1)
                k += count
            return out, t.labels
        out = parallel.allocate(store.shape, t.shapes, n, self._workers(n) > 1)
        if t.raw:
            h = HfHandle(t)
            h.batch(np.arange(n), out)
            return out, t.labels
        chunks, first = [], 0
        for data, offs in t.chunks:
            chunks.append((first, data, offs))
            first += len(offs) - 1
        self._parallel(decode_range, n, dict(out=out, chunks=chunks, codec=t.codec, where=t.shown))
        return out, t.labels

    def _handle(self, store):
        return HfHandle(_Tables(store))

    def _sums(self, store):
        return _Tables(store).sums

    def _change_label(self, path, store, pos):
        import datasets

        d = datasets.load_from_disk(str(path / DIR))
        labels = np.array(d["label"])
        labels[pos] += 1
        d = d.remove_columns("label").add_column("label", labels.tolist(), feature=datasets.Value("int64"))
        moved = path / ".relabelled"
        d.save_to_disk(str(moved))
        for name in os.listdir(path / DIR):
            os.unlink(path / DIR / name)
        for name in os.listdir(moved):
            os.rename(moved / name, path / DIR / name)
        os.rmdir(moved)
        return DIR


def _nested(images: ImageList) -> pa.Array:
    """Images of different shapes as list<list<list<uint8>>> over their pixels, in id order."""
    shapes = images.shapes
    h, w, c = shapes[:, 0], shapes[:, 1], shapes[:, 2]
    px = np.repeat(c, h * w)  # bytes of each pixel, pixel after pixel, image after image
    if int(shapes.prod(axis=1).sum()) >= 2**31:  # Arrow lists' 32-bit offsets, as datasets' Sequence uses
        raise ValueError("hfdatasets keeps raw images of different shapes in at most 2 GiB of pixels; "
                         "use encoding 'png', or store fewer images")
    flat = pa.array(images.flat())
    inner = pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(px)].astype(np.int32)), flat)
    middle = pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(np.repeat(w, h))].astype(np.int32)), inner)
    return pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(h)].astype(np.int32)), middle)


def _walk(fd: int) -> tuple[pa.Table, mmap.mmap]:
    """An Arrow stream file's table, its buffers in a map of the file (zero copy). An Arrow stream
    is walked message by message: pyarrow's own map asks the kernel for each message's body
    (MADV_WILLNEED), and a plain map faults each header in with the device's read-ahead around
    it; either read the whole file (184 MB for 100,000 PNGs) to open it. Advised random while the
    caller walks it and gathers labels and offsets, the map reads their pages (6 MB); the caller
    then lets it read ahead again (the table and its map)."""
    try:
        size = os.fstat(fd).st_size
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
    finally:
        os.close(fd)
    if not size:
        raise ValueError("an empty file")
    mm.madvise(mmap.MADV_RANDOM)
    return pa.ipc.open_stream(pa.BufferReader(pa.py_buffer(mm))).read_all(), mm


class _Tables:
    """A store's Arrow files mapped with pyarrow, checked: file names, rows, schema, labels."""

    def __init__(self, store: Store):
        self.store, self.shown = store, f"{store.path}/{DIR}"
        root = store.file(DIR)  # every entry a regular file of the store, no links
        if not os.path.isdir(root):
            raise NotAStoreError(f"{store.path}: {DIR} is missing; the store is damaged (imgbench verify {store.path})")
        names = self._state(root)
        tables, maps = [], []
        for name in names:
            try:
                table, mm = _walk(store.open_file(f"{DIR}/{name}"))
                tables.append(table)
                maps.append(mm)
            except (OSError, ValueError, pa.ArrowException) as e:
                raise NotAStoreError(f"{self.shown}/{name} is not a readable Arrow file ({e}); the store is damaged"
                                     ) from None
        try:
            table = pa.concat_tables(tables)
        except pa.ArrowException as e:
            raise NotAStoreError(f"{self.shown}: its Arrow files differ in schema ({e}); the store is damaged") from None
        n = store.count
        if table.num_rows != n:
            raise NotAStoreError(f"{self.shown} holds {table.num_rows:,} rows, the manifest {n:,} images; "
                                 "the store is damaged")
        self.encoding, self.codec = store.encoding, store.codec()
        self.raw = store.encoding == "raw"
        for name in ("id", "label", "checksum", "image"):
            if name not in table.schema.names:
                raise NotAStoreError(f"{self.shown} has no {name} column; not an hfdatasets store")
        ids = table.column("id")
        if ids.null_count or not np.array_equal(ids.to_numpy(), np.arange(store.first_id, store.first_id + n)):
            raise NotAStoreError(f"{self.shown} does not hold ids {store.first_id}..{store.first_id + n - 1} in "
                                 "order; the store is damaged")
        labels, sums = table.column("label"), table.column("checksum")
        if labels.null_count or sums.null_count or not pa.types.is_integer(labels.type):
            raise NotAStoreError(f"{self.shown} has missing or non-integer labels or checksums; the store is damaged")
        self.labels = labels.to_numpy().astype(np.int64)
        self.sums = sums.to_numpy().astype(np.uint64)
        self.shapes = None
        if store.shape is None:
            try:
                self.shapes = np.column_stack([table.column(c).to_numpy() for c in SHAPE]).astype(np.int64)
            except (KeyError, pa.ArrowException) as e:
                raise NotAStoreError(f"{self.shown} has no image shapes ({e}); the store is damaged") from None
            check_shapes(self.shapes, self.shown)
        self.chunks = [self._values(ch) for ch in table.column("image").chunks if len(ch)]
        self.starts = np.r_[0, np.cumsum([len(offs) - 1 for _, offs in self.chunks])].astype(np.int64)
        for mm in maps:  # the kernel's read-ahead for the images, unless a reader advises otherwise
            if isinstance(mm, mmap.mmap):
                mm.madvise(mmap.MADV_NORMAL)

    def _state(self, root: str) -> list[str]:
        """The Arrow files state.json names, checked to be plain names of files in the store."""
        try:
            with open(os.path.join(root, STATE), "rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(f"more than {MAX_STATE_BYTES:,} bytes")
            files = json.loads(data)["_data_files"]
            names = [f["filename"] for f in files]
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise NotAStoreError(f"{self.shown}/{STATE} is unreadable ({e}); the store is damaged") from None
        for name in names:
            if (not isinstance(name, str) or "/" in name or name in ("", ".", "..")
                    or not os.path.isfile(os.path.join(root, name))):
                raise NotAStoreError(f"{self.shown}/{STATE} names {name!r}, not a file of the store; the store is "
                                     "damaged, or made to read elsewhere")
        return names

    def _values(self, ch: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """A chunk's image bytes and value offsets (n + 1) as numpy views of its buffers."""
        if pa.types.is_struct(ch.type):  # the Image feature: its bytes field
            ch = ch.field("bytes") if ch.type.get_field_index("bytes") >= 0 else None
            if ch is None or not pa.types.is_binary(ch.type) or ch.null_count:
                raise NotAStoreError(f"{self.shown}: its image column has no bytes of every image; the store is "
                                     "damaged")
            return values(ch, -1)
        if not self.raw:
            raise NotAStoreError(f"{self.shown}: its image column holds {ch.type}, not encoded bytes; the store is "
                                 "damaged")
        # list<list<list<uint8>>>: an image's pixels lie between its outer offsets, through two levels
        try:
            if isinstance(ch, pa.ExtensionArray):  # Array3D: its storage is the nested lists
                ch = ch.storage
            outer, middle = _offsets(ch), ch.values
            mid, inner = _offsets(middle), middle.values
            low, data = _offsets(inner), inner.values
            if data.type != pa.uint8() or ch.null_count or middle.null_count or inner.null_count:
                raise ValueError(f"{ch.type}")
            return np.frombuffer(data.buffers()[1], np.uint8), _Nested(outer, mid, low, data.offset)
        except (ValueError, IndexError, AttributeError, pa.ArrowException) as e:
            raise NotAStoreError(f"{self.shown}: its image column is not uint8 pixels ({e}); the store is "
                                 "damaged") from None


def _offsets(a: pa.Array) -> np.ndarray:
    """A list array's n + 1 offsets into its child: a view of its buffer (nothing read yet)."""
    dtype = np.int64 if pa.types.is_large_list(a.type) else np.int32
    return np.frombuffer(a.buffers()[1], dtype)[a.offset:a.offset + len(a) + 1]


class _Nested:
    """The pixel offsets of images kept as lists of rows of pixels (datasets' Array3D): image j
    starts at low[mid[outer[j]]]. Looked up per image read: the per-pixel offsets (four bytes a
    pixel, more than the pixels) are read only where an image is."""

    def __init__(self, outer, mid, low, base: int):
        self.outer, self.mid, self.low, self.base = outer, mid, low, base

    def __len__(self) -> int:
        return len(self.outer)

    def __getitem__(self, j: int) -> int:
        return int(self.low[self.mid[self.outer[j]]]) + self.base


class HfHandle(ValuesHandle):
    """Rows sliced out of the mapped Arrow files."""

    file = DIR

    def __init__(self, t: _Tables):
        super().__init__(t.store, t.labels, t.shapes, t.codec, t.shown)
        self.t = t

    def _values(self, pos):
        t, got = self.t, []
        for p in pos.tolist():
            k = int(np.searchsorted(t.starts, p, "right")) - 1
            data, offs = t.chunks[k]
            a, b = int(offs[p - t.starts[k]]), int(offs[p - t.starts[k] + 1])
            if not 0 <= a <= b <= len(data):
                raise NotAStoreError(f"{t.shown}: image id {self.store.first_id + p} lies outside its file; "
                                     "the store is damaged")
            got.append(data[a:b])
        return got

    def close(self):
        self.t = None
