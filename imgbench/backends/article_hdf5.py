"""article-hdf5: the article's HDF5 file, big-endian images and labels.

The article "Three Ways of Storing and Accessing Lots of Images in Python" stores all images in one
HDF5 dataset and the labels in another; this backend does what its published code does in every step
that costs time, so its choices can be timed beside `hdf5`'s. The class docstring says what it
reproduces and what it does differently; like every store it is written atomically with a manifest,
and it keeps `checksums.npy` (its pixels with its label, see checksums.py) beside the article's
files.
"""
from __future__ import annotations

import h5py
import numpy as np

from . import checksums
from .base import Backend
from .errors import NotAStoreError
from .hdf5_store import ChunkedHandle, plain_dataset
from .store import Store

HDF5_LABELS = (0, 255)  # the article stores labels as unsigned 8-bit integers


class ArticleHdf5Backend(Backend):
    """The article's HDF5: `{N}_many.h5` with datasets `images` and `meta`, both big-endian uint8.

    Reproduced: `h5py.File(path, "w")`, then `create_dataset("images", shape, h5py.h5t.STD_U8BE,
    data=images)` and `create_dataset("meta", shape, h5py.h5t.STD_U8BE, data=labels)`
    (contiguous, unfiltered, in HDF5's big-endian uint8 type), and closing the file. A whole
    store is read as `np.array(f["/images"]).astype("uint8")`: h5py's read with its type
    conversion, then numpy's copy.

    Labels are stored as the article stores them, in one unsigned byte: labels outside 0..255
    are refused with a ValueError before anything is written (HDF5 would clip them silently).

    Deliberately different: the article opens the file for reading with "r+" and never closes
    it; we open it with "r" and close it. Neither changes what a read costs (the same open, the
    same read; closing is the release of a handle the article leaves to the garbage collector),
    and "r" neither needs write permission nor can change the store. Labels are returned as
    int64 (the article's `.astype("uint8")` of 0..255 labels, widened). Reads by ids and Readers
    (read_single, Reader) go through h5py: one image as `ds[i].astype("uint8")` (the article's
    single-image read), a batch as reads of the runs of consecutive ids (the hdf5 backend's
    chunked reader, correct for any order and repeats); never the hdf5 backend's memory map of
    the dataset's bytes: reading through h5py is the article's way and what is measured.
    """

    name = "article-hdf5"
    RAGGED = False  # the article's code stores one array of one shape

    def __init__(self, *, fsync: bool = False):
        super().__init__(fsync=fsync)

    @staticmethod
    def _file(store_dir, n: int):
        return store_dir / f"{n}_many.h5"

    def _create(self, path, images, labels, first_id, overwrite, sources=None):
        lo, hi = HDF5_LABELS
        if labels.min() < lo or labels.max() > hi:
            bad = labels[(labels < lo) | (labels > hi)][0]
            raise ValueError(f"{self.name} stores labels as the article does, as unsigned 8-bit integers "
                             f"(HDF5 STD_U8BE): labels must lie in {lo}..{hi}, got {bad}; "
                             "use the hdf5 backend for other labels")
        return super()._create(path, images, labels, first_id, overwrite, sources)

    def _write(self, tmp, images, labels, first_id, sources):
        # ours, not the article's: the checksums (big-endian uint8: the same bytes), hashed beside the writing
        hashing = checksums.Hashing(checksums.rows, len(images), images, labels)
        with hashing, h5py.File(self._file(tmp, len(images)), "w") as f:
            hashing.start()
            f.create_dataset("images", np.shape(images), h5py.h5t.STD_U8BE, data=images)
            f.create_dataset("meta", np.shape(labels), h5py.h5t.STD_U8BE, data=labels.astype(np.uint8))
        return checksums.save(tmp, hashing.result())

    def _sums(self, store):
        return checksums.load(store)

    def _change_label(self, path, store, pos):
        f = self._file(path, store.count)
        with h5py.File(f, "r+") as h:
            ds = h["meta"]
            ds[pos] = (int(ds[pos]) + 1) % 256  # the article's byte: 255 wraps to 0
        return f.name

    def _open(self, store: Store):
        path = self._file(store.path, store.count)
        try:
            f = h5py.File(store.file(path.name), "r")
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable {self.name} store ({e})") from None
        try:  # ours: plain datasets of this file (see hdf5_store.plain_dataset)
            images = plain_dataset(f, "images", path, "u", (store.count, *store.shape))
            meta = plain_dataset(f, "meta", path, "u", (store.count,))
            if images is None or meta is None or images.dtype.itemsize != 1:
                raise NotAStoreError(f"{path} has no images dataset of shape {(store.count, *store.shape)} "
                                     f"and meta dataset of {store.count} labels; not an {self.name} store")
        except BaseException:
            f.close()
            raise
        return f, images

    def _read_all(self, store):
        f, images = self._open(store)
        with f:
            return np.array(images).astype("uint8"), np.array(f["/meta"]).astype(np.int64)

    def _handle(self, store):
        f, images = self._open(store)
        try:
            h = _ArticleHdf5Handle(f, images, np.array(f["/meta"]).astype(np.int64))
            h.file = self._file(store.path, store.count).name
            return h
        except BaseException:
            f.close()
            raise


class _ArticleHdf5Handle(ChunkedHandle):
    """h5py reads of the big-endian dataset: one image the article's way, batches by runs."""

    def get(self, pos):
        return self.ds[pos].astype("uint8"), int(self.labels[pos])
