"""The layout npy, HDF5 and Zarr stores use for images of different shapes, and HDF5 for encoded
images: one flat uint8 buffer of every image's bytes one after another (raw pixels, or the PNG,
JPEG or original file bytes), beside an index (N, 5) int64 of offset, size in bytes, height,
width and channels per image. A whole raw store reads back as an ImageList over the buffer
itself (no copy); a reader's image is a slice of the mapped buffer.
"""
from __future__ import annotations

import numpy as np

from ..images import ImageList, as_blobs, shapes_of
from .errors import NotAStoreError
from .handles import RecordHandle
from .store import Store


def flatten(backend, images, sources) -> tuple[np.ndarray, np.ndarray]:
    """(flat uint8 buffer, index) of a batch as `backend` stores it (raw, encoded or source)."""
    n, shapes = len(images), shapes_of(images)
    if backend.encoding == "raw":
        if isinstance(images, ImageList):
            data = images.flat()
        else:
            data = images.reshape(-1)
        sizes = shapes.prod(axis=1)
    else:
        blobs = as_blobs(backend._encode_all(images, sources))
        data, sizes = blobs.flat(), blobs.sizes
    index = np.empty((n, 5), np.int64)
    index[:, 1] = sizes
    index[:, 0] = np.cumsum(sizes) - sizes
    index[:, 2:] = shapes
    return data, index


def check_index(index, store: Store, data_len: int, where) -> None:
    n = store.count
    if not isinstance(index, np.ndarray) or index.shape != (n, 5) or index.dtype.kind not in "iu":
        raise NotAStoreError(f"{where}: the index is not ({n}, 5) integers; the store is damaged")
    off, size, shapes = index[:, 0], index[:, 1], index[:, 2:]
    if (n and (off[0] != 0 or (off[1:] != off[:-1] + size[:-1]).any() or off[-1] + size[-1] != data_len)
            or (shapes < 1).any() or ~np.isin(shapes[:, 2], (1, 3, 4)).all()):
        raise NotAStoreError(f"{where}: the index does not describe the {data_len:,} bytes of image data; "
                             "the store is damaged")
    if store.encoding == "raw" and (size != shapes.prod(axis=1)).any():
        raise NotAStoreError(f"{where}: an image's size disagrees with its shape; the store is damaged")


def read_all(store: Store, data: np.ndarray, index: np.ndarray, labels: np.ndarray, backend):
    """A whole store from its buffer in memory: raw as an ImageList over it; encoded decoded in
    parallel by `backend`'s handles."""
    if store.encoding == "raw":
        return ImageList(data, index[:, 0], index[:, 2:]), labels
    return backend._decode_all(store, labels, index[:, 2:] if store.shape is None else None)


class FlatHandle(RecordHandle):
    """Image bytes as slices of `data` (a memory map, or anything sliceable like an h5py dataset)."""

    def __init__(self, store: Store, data, index: np.ndarray, labels: np.ndarray):
        super().__init__(store, labels, store.codec(), index[:, 2:].copy())
        if isinstance(data, np.memmap):  # a plain view: slicing a memmap makes a subclass instance each time
            data = np.asarray(data)
        self.data, self.offsets, self.sizes = data, index[:, 0].tolist(), index[:, 1].tolist()

    def _payload(self, pos):
        o = self.offsets[pos]
        return self.data[o:o + self.sizes[pos]]

    def close(self):
        self.data = None
