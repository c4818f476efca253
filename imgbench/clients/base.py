"""What every stock reader shares: the manifest's count and shape, a map-style dataset's indexing,
and opening again in each process (as each library's docs ask of worker processes).

A stock reader reads a store written by imgbench with only its format's own library and the
store's documented layout (docs/formats.md), the way that library's documentation shows: it is
what a person who picked the format gets. It is a map-style dataset: `ds[i]` is the i-th image
(an (H, W, C) uint8 array) and its label; `ds[ids]` (a list or array of positions) is a batch,
read through the library's own batch path where it has one, so PyTorch's DataLoader takes it
with a batch sampler and `batch_size=None`. `read_all()` reads the whole store the
way the library reads everything at once. Nothing here checks a store: it is a benchmark client,
meant for stores the benchmark wrote (read untrusted stores through imgbench's own reader).
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np


MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def pixels(im, channels: int | None = None) -> np.ndarray:
    """A Pillow image as (H, W, C) uint8, as Pillow's docs show: turned upright by its EXIF
    orientation (ImageOps.exif_transpose; photographs' files carry it), converted to the store's
    channels where they are known."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    if channels is not None and im.mode != MODES[channels]:
        im = im.convert(MODES[channels])
    a = np.asarray(im)
    return a[..., None] if a.ndim == 2 else a


def decode(data, channels: int | None = None) -> np.ndarray:
    """Encoded bytes (PNG, JPEG, WebP, AVIF, an original file) to pixels (see `pixels`); JPEG XL,
    which Pillow does not read, through imagecodecs (libjxl), as its docs show."""
    from PIL import Image

    from ..decoders import kind

    if kind(data) == "jxl":
        import imagecodecs

        a = imagecodecs.jpegxl_decode(bytes(data))
        return a[..., None] if a.ndim == 2 else a

    with Image.open(io.BytesIO(data)) as im:
        return pixels(im, channels)


def flat_item(data, row, encoding: str) -> np.ndarray:
    """Image `row` of a flat layout (docs/formats.md): `data` holds every image's bytes one after
    another, `row` is its (offset, size, height, width, channels) in the store's `index`."""
    offset, size, h, w, c = (int(v) for v in row)
    got = np.asarray(data[offset:offset + size])
    return got.reshape(h, w, c) if encoding == "raw" else decode(got, c)


SHAPE = ["height", "width", "channels"]


def arrow_images(rows, shape, encoding: str):
    """The `image` column of a pyarrow table of rows as a store's images (`shape` None: each its
    own, from the `height`, `width`, `channels` columns): raw fixed-size values viewed as one
    array of pixels, encoded ones decoded with Pillow."""
    column = rows.column("image")
    if shape is not None and encoding == "raw":  # one fixed-size buffer of pixels
        values = column.combine_chunks()
        step = int(np.prod(shape))
        return np.frombuffer(values.buffers()[1], np.uint8, len(values) * step,
                             values.offset * step).reshape(len(values), *shape)
    values = column.to_pylist()
    if shape is None:
        shapes = zip(*(rows.column(c).to_pylist() for c in SHAPE))
        if encoding == "raw":
            return [np.frombuffer(v, np.uint8).reshape(s) for v, s in zip(values, shapes)]
        return [decode(v, s[2]) for v, s in zip(values, shapes)]
    images = [decode(v, shape[2]) for v in values]
    return np.stack(images) if images else np.empty((0, *shape), np.uint8)


class StockReader:
    """A store read through its format's own library (subclasses: `open`, `item`, and where the
    library has a batch path, `batch`; `read_all` where it reads everything at once)."""

    random_access = True  # False: the library only streams (see `stream`)
    # True: an epoch is the library's own stream (`stream`), which orders itself, as its users read
    streams = False
    buffered = False  # True: its stream shuffles in a sample buffer (epoch.shuffle_buffer)

    def __init__(self, path):
        self.path = Path(path)
        meta = json.loads((self.path / "imgbench.json").read_text())
        self.count, self.first_id, self.encoding = int(meta["count"]), int(meta["first_id"]), meta["encoding"]
        self.shape = tuple(meta["shape"]) if meta.get("shape") else None
        self._pid, self._opened = None, set()

    def _ready(self) -> None:
        if self._pid != os.getpid():  # each process (a DataLoader worker) opens its own
            for name in self._opened:  # a parent's handles, inherited: not this process's to use
                vars(self).pop(name, None)
            before = set(vars(self))
            try:
                self.open()
            finally:
                self._opened = set(vars(self)) - before
            self._pid = os.getpid()

    def close(self) -> None:
        """Drop what `open` opened in this process (a mapped file cannot be evicted from the cache)."""
        mine = self._pid == os.getpid()
        for name in self._opened:
            handle = vars(self).pop(name, None)
            if mine and hasattr(handle, "close") and not isinstance(handle, np.ndarray):
                handle.close()
        self._pid, self._opened = None, set()

    def open(self) -> None:
        pass

    def __len__(self) -> int:
        self._ready()  # opens, as imgbench's Reader does on len()
        return self.count

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getitem__(self, i):
        self._ready()
        if isinstance(i, (list, range, np.ndarray)):
            return self.batch(np.asarray(i, dtype=np.int64))
        return self.item(int(i))

    def item_of_batch(self, i):
        """`item` for a library whose documented read of one row is its batch read of one id."""
        images, labels = self.batch(np.array([i]))
        return images[0], int(labels[0])

    def batch(self, ids: np.ndarray):
        """Images and labels of `ids`, in that order: one item at a time unless the library
        has a batch path (then the subclass overrides this)."""
        got = [self.item(int(i)) for i in ids]
        labels = np.array([label for _, label in got], np.int64)
        if self.shape is None:
            return [image for image, _ in got], labels
        return np.stack([image for image, _ in got]) if got else np.empty((0, *self.shape), np.uint8), labels

    def read_all(self):
        self._ready()
        return self.batch(np.arange(self.count))

    def __getstate__(self):  # a spawned worker gets the path and opens its own
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])
