"""article-disk: the article's PNG files, one per image, and its label CSV.

The article "Three Ways of Storing and Accessing Lots of Images in Python" stores each image as a
PNG file with the labels in a CSV file; this backend does what its published code does in every step
that costs time, so its choices can be timed beside `disk`'s. The class docstring says what it
reproduces and what it does differently; like every store it is written atomically with a manifest,
and it keeps `checksums.npy` (its PNG file's bytes with its label, see checksums.py) beside the
article's files. The article's formats keep no checksums (PNG's CRC per chunk aside, which
decoders do not check).
"""
from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from . import checksums
from .base import Backend
from .errors import NotAStoreError
from .handles import Handle
from .store import Store

# The article's CSV dialect for labels.
CSV_DIALECT = dict(delimiter=" ", quotechar="|", quoting=csv.QUOTE_MINIMAL)


class ArticleDiskBackend(Backend):
    """The article's PNG files: `{id}.png` per image and the labels in `{N}.csv`.

    Reproduced: each image is saved by `Image.fromarray(image).save(path)` (Pillow's default
    PNG settings), one after another in one process; the labels are written with the csv
    module in the article's dialect (space-delimited, `|` as quote character, minimal quoting),
    one row per label, to `{N}.csv` where N is the number of images in the store (the article's
    name), opened with `open(path, "w")` as it does (so rows end in "\\r\\n"). Reading is
    `np.array(Image.open(...))` per image and `csv.reader` over `{N}.csv` in the same dialect.

    Deliberately different: file names use our ids (first_id, first_id + 1, ...; the article's
    ids are always 0..N-1); a store of one image (store_single) is a store like any other (the
    article's single-image code writes `{id}.csv` instead); one-channel images are saved as
    greyscale ("L") PNGs, since Pillow cannot make an image of an (H, W, 1) array (the article
    only has RGB); decoded images are copied into one (N, H, W, C) array rather than kept in a
    list; each image is checked for the store's shape. A store is untrusted input, so each file
    is opened as the store's own (never through a link) and given to Pillow as an open file,
    with PNG as the only format to try, and its declared size is checked before its pixels are
    decoded (the article opens by path and lets Pillow try every format). The article never closes the images it
    opens; we do, with `with`. That costs nothing measurable: Pillow closes a single-frame PNG's
    file itself as soon as its pixels are loaded (which `np.array` does), so our close only
    marks an already-closed image closed; no file stays open longer in either.
    """

    name = "article-disk"
    RAGGED = False  # the article's code stores one array of one shape
    ENCODINGS = ("png",)
    encoding = "png"  # Pillow's defaults: zlib level 6

    def read_processes(self, n: int) -> int:
        return 1  # the article reads one file after another

    def __init__(self, *, fsync: bool = False):
        super().__init__(fsync=fsync)

    @staticmethod
    def _labels_file(store_dir, n: int):
        return store_dir / f"{n}.csv"

    def _write(self, tmp, images, labels, first_id, sources):
        if images.shape[3] == 1:
            images = images[:, :, :, 0]  # Pillow makes greyscale images of (H, W) arrays only
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp / f"{first_id + i}.png")
        with open(self._labels_file(tmp, len(images)), "w") as f:
            writer = csv.writer(f, **CSV_DIALECT)
            for label in labels:
                writer.writerow([label])
        # ours: each file's bytes read back (from the page cache) for its checksum
        return checksums.save(tmp, np.array([checksums.checksum((tmp / f"{first_id + i}.png").read_bytes(), lab)
                                         for i, lab in enumerate(labels.tolist())], np.uint64))

    def _sums(self, store):
        return checksums.load(store)

    def _change_label(self, path, store, pos):
        f = self._labels_file(path, store.count)
        lines = f.read_text().split("\n")
        lines[pos] = str(int(lines[pos].strip()) + 1) + "\r"  # the article's rows end in \r\n
        f.write_text("\n".join(lines), newline="")
        return f.name

    def _labels(self, store: Store) -> np.ndarray:
        labels = []
        try:
            with open(store.file(f"{store.count}.csv")) as f:
                for row in csv.reader(f, **CSV_DIALECT):
                    labels.append(int(row[0]))
        except (OSError, ValueError, IndexError, csv.Error) as e:
            raise NotAStoreError(f"{store.path} has no readable label file {store.count}.csv "
                                 f"({e}); the {self.name} store is damaged") from None
        if len(labels) != store.count:
            raise NotAStoreError(f"{store.path}/{store.count}.csv lists {len(labels)} labels for "
                                 f"{store.count} images; the store is damaged")
        return np.array(labels, np.int64)

    def _read_all(self, store):
        labels = self._labels(store)  # first: its rows count the images before room is made for them
        images = np.empty((store.count, *store.shape), np.uint8)
        _ArticleDiskHandle(store, None).read_into(images, range(store.count))
        return images, labels

    def _handle(self, store):
        return _ArticleDiskHandle(store, self._labels(store))


class _ArticleDiskHandle(Handle):
    def __init__(self, store: Store, labels):
        self.store, self.labels = store, labels

    def where(self, pos):
        return f"{self.store.first_id + pos}.png"

    def stored(self, pos):
        with open(self.store.open_file(self.where(pos)), "rb") as f:
            return f.read(), int(self.labels[pos])

    def read_into(self, out: np.ndarray, positions) -> None:
        """Decode the images at `positions` into out[0], out[1], ... the article's way."""
        store = self.store
        rows = out[:, :, :, 0] if store.shape[2] == 1 else out  # greyscale PNGs decode to (H, W)
        want = rows.shape[1:]
        first = store.first_id
        for k, p in enumerate(positions):
            name = f"{first + p}.png"
            # Ours: the file is opened as the store's own (no link followed), Pillow tries PNG only
            # (no other format's plugin, such as EPS's, which runs Ghostscript), and the declared
            # size is checked before the pixels are decoded.
            try:
                with open(store.open_file(name), "rb") as f, Image.open(f, formats=("PNG",)) as im:
                    if im.size != want[1::-1]:
                        raise ValueError(f"it declares a {im.size[1]} x {im.size[0]} image")
                    a = np.array(im)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # not a PNG of this store
                raise NotAStoreError(f"{store.path}/{name} is not a readable image of the store ({e}); the store "
                                     "is damaged") from None
            if a.shape != want or a.dtype != np.uint8:
                raise NotAStoreError(f"{store.path}/{name} holds a {a.dtype} {a.shape} image, the store's images are "
                                     f"uint8 {store.shape}; the store is damaged")
            rows[k] = a

    def get(self, pos):
        out = np.empty((1, *self.store.shape), np.uint8)
        self.read_into(out, (pos,))
        return out[0], int(self.labels[pos])

    def batch(self, pos, out):
        self.read_into(out, pos.tolist())
        return self.labels[pos]


