"""HDF5: one file with datasets `images` (N, H, W, C) native uint8, `labels` (N,) int64 and
`checksums` (N,) uint64 (each image's stored bytes and label, see checksums.py: HDF5 keeps no
checksum of a contiguous dataset itself).

Encoded images (encoding png, jpeg or source) and raw images of different shapes: datasets
`data` (every image's bytes, flat uint8) and `index` (N, 5: offset, size, height, width,
channels) instead of `images` (see flat.py); a reader maps `data` when it is contiguous.

Whole-store reads go straight into a preallocated array (no h5py conversion layer, no astype
copy). Readers (and reads by ids) of a contiguous dataset map its bytes: HDF5 stores such a
dataset as one run of raw bytes at a known offset, so a row is a memcpy. Chunked or compressed
datasets go through h5py, never its fancy indexing (slow on long or unsorted lists): ids are
sorted and de-duplicated, read as contiguous runs (or whole blocks when dense), then put back in
the caller's order.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

from ..images import ENCODINGS, MAX_RATIO, ImageList
from . import atomic, checksums, flat
from .base import Backend, check_coding
from .errors import NotAStoreError
from .handles import ArrayHandle, Handle
from .store import Store

FILE = "images.h5"
BLOCK_BYTES = 32 * 2**20  # dense id reads go through blocks of about this size
# One h5py read call costs about as much as copying this many bytes (measured: ~50 us per call
# against ~5 GB/s for a contiguous read), so ids with fewer than one run per this many bytes
# of span are read run by run, denser ones by reading the whole span in blocks.
RUN_COST_BYTES = 256 * 2**10
CHUNK_CACHE_BYTES = 64 * 2**20
PREALLOCATE_BYTES = 2**20  # smaller datasets are written as h5py writes them


def _create(f: h5py.File, name: str, a: np.ndarray, layout: dict) -> None:
    """A dataset holding `a`. A big contiguous one gets its place in the file first, and its blocks
    reserved there (see base.preallocate: 1.3x faster to write), then the bytes; HDF5 writes no
    fill value in between."""
    if layout or a.nbytes < PREALLOCATE_BYTES:
        f.create_dataset(name, data=a, **layout)
        return
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    ds = f.create_dataset(name, shape=a.shape, dtype=a.dtype, dcpl=dcpl)
    offset = ds.id.get_offset()
    if offset is not None and f.driver == "sec2":
        atomic.preallocate(f.id.get_vfd_handle(), offset, a.nbytes)
    ds.write_direct(np.ascontiguousarray(a))


def _mapped(store: Store, offset: int, shape) -> np.memmap:
    """The contiguous dataset at `offset` of the store's file, mapped once checked to lie inside it."""
    with open(store.open_file(FILE), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset < 0 or offset + int(np.prod(shape)) > size:
            raise NotAStoreError(f"{store.path}/{FILE}: a dataset lies outside the file ({offset:,} + "
                                 f"{int(np.prod(shape)):,} bytes of {size:,}); the store is damaged")
    return np.memmap(store.file(FILE), np.uint8, "r", offset, shape)  # by path: readers of rows find it


# HDF5's own filters that a store may use (deflate, shuffle, Fletcher-32, scale-offset, h5py's
# LZF); a dataset with any other (a plugin loaded from the system) is refused.
FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32,
           h5py.h5z.FILTER_SCALEOFFSET, 32000}


def plain_dataset(f: h5py.File, name: str, where, kinds: str, shape=None, ratio: int = MAX_RATIO):
    """Dataset `name` of the open file `f`, once checked to be a plain dataset of this file: a
    hard link (not a soft or external link to another file), with its data in this file (no
    external raw storage, no virtual dataset mapping other files), only HDF5's own filters, of
    a dtype of `kinds` and of `shape` if given; its declared bytes at most what the file can
    hold (its size, or `ratio` times it when compressed). None if it is absent."""
    link = f.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise NotAStoreError(f"{where}: {name} is a {type(link).__name__} (to another file or object); a store's "
                             "datasets are its own; the store is damaged, or made to read elsewhere")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise NotAStoreError(f"{where}: {name} is not a dataset; the store is damaged")
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL or dcpl.get_external_count():
        raise NotAStoreError(f"{where}: {name} keeps its data outside the file (virtual or external storage); "
                             "the store is damaged, or made to read elsewhere")
    filters = {dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())}
    if filters - FILTERS:
        raise NotAStoreError(f"{where}: {name} uses HDF5 filters {sorted(filters - FILTERS)}, not HDF5's own; "
                             "the store is damaged")
    if ds.dtype.kind not in kinds or ds.dtype.fields or (shape is not None and ds.shape != tuple(shape)):
        raise NotAStoreError(f"{where}: {name} holds {ds.dtype} {ds.shape}, not what the store keeps there; "
                             "the store is damaged")
    size = os.fstat(f.id.get_vfd_handle()).st_size
    if ds.nbytes > (ratio * size + 2**20 if filters else size):
        raise NotAStoreError(f"{where}: {name} declares {ds.nbytes:,} bytes in a file of {size:,}; "
                             "the store is damaged")
    return ds


class Hdf5Backend(Backend):
    name = "hdf5"
    ENCODINGS = ENCODINGS  # every codec (images.py): raw, png, jpeg, webp, webp-lossless, avif, jxl, source

    def __init__(self, *, encoding: str = "raw", quality: int = 90, compress_level: int = 6,
                 chunks: int | None = None, compression: str | None = None,
                 compression_opts: int | None = None, workers: int | None = None, fsync: bool = False):
        """encoding: "raw" pixels, "png" (`compress_level` 0-9), "jpeg" (`quality` 1-95) or
        "source" (the original files' bytes); chunks: images per chunk (None: contiguous, or
        automatic when compressing); compression: None, "gzip" or "lzf"; compression_opts: the
        gzip level (0-9); workers: processes for coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        check_coding(self, encoding, quality, compress_level, workers)
        if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
            raise ValueError(f"hdf5 option chunks must be a positive number of images or None, got {chunks!r}")
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"hdf5 option compression must be None, 'gzip' or 'lzf', got {compression!r}")
        self.chunks = chunks
        self.compression = compression
        self.compression_opts = compression_opts

    def _write(self, tmp, images, labels, first_id, sources):
        if self.encoding != "raw" or isinstance(images, ImageList):
            return self._write_flat(tmp, images, labels, first_id, sources)
        n, h, w, c = images.shape
        chunks = self.chunks
        if chunks is None and self.compression:
            chunks = max(1, (1 << 20) // (h * w * c))  # about 1 MiB per chunk
        layout = {}
        if chunks:
            layout = dict(chunks=(min(chunks, n), h, w, c), compression=self.compression,
                          compression_opts=self.compression_opts)
        return self._save(tmp, first_id, {"images": (images, layout), "labels": (labels, {})},
                          checksums.Hashing(checksums.rows, n, images, labels))

    def _write_flat(self, tmp, images, labels, first_id, sources):
        data, index = flat.flatten(self, images, sources)
        layout = {}
        if self.chunks or self.compression:  # chunks of about `chunks` images, or 1 MiB
            size = max(1, int(self.chunks * len(data) / len(index)) if self.chunks else 1 << 20)
            layout = dict(chunks=(min(size, max(1, len(data))),), compression=self.compression,
                          compression_opts=self.compression_opts)
        return self._save(tmp, first_id, {"data": (data, layout), "index": (index, {}), "labels": (labels, {})},
                          checksums.Hashing(checksums.spans, len(index), data, index[:, 0], index[:, 1], labels))

    def _save(self, tmp, first_id, datasets: dict, hashing) -> np.ndarray:
        """The datasets (name -> (array, layout)) and the checksums, hashed beside the writing."""
        with hashing, h5py.File(tmp / FILE, "w") as f:
            hashing.start()
            for name, (a, layout) in datasets.items():
                _create(f, name, a, layout)
            f.create_dataset("checksums", data=hashing.result())
            f.attrs["first_id"] = first_id
        return hashing.result()

    def _open_flat(self, store: Store):
        try:
            f = h5py.File(store.file(FILE), "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable hdf5 store ({e})") from None
        try:
            where = f"{store.path}/{FILE}"
            data, index, labels = (plain_dataset(f, "data", where, "u"), plain_dataset(f, "index", where, "iu"),
                                   plain_dataset(f, "labels", where, "iub", (store.count,)))
            if data is None or index is None or labels is None or data.dtype != np.uint8 or data.ndim != 1:
                raise NotAStoreError(f"{store.path}/{FILE} has no data, index and labels datasets; not an hdf5 "
                                     "store of encoded images or images of several shapes")
            index = index[()]
            flat.check_index(index, store, len(data), f"{store.path}/{FILE}")
            labels = store.labels(labels[()], f"{where}: labels")
        except BaseException:
            f.close()
            raise
        return f, data, index, labels

    def _open(self, store: Store):
        try:
            f = h5py.File(store.file(FILE), "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable hdf5 store ({e})") from None
        try:
            where = f"{store.path}/{FILE}"
            ds = plain_dataset(f, "images", where, "u", (store.count, *store.shape))
            if ds is None or ds.dtype != np.uint8:
                raise NotAStoreError(f"{where} has no images dataset of shape {(store.count, *store.shape)} uint8; "
                                     "not an hdf5 store")
            labels = plain_dataset(f, "labels", where, "iub", (store.count,))
            if labels is None:
                raise NotAStoreError(f"{where} has no labels dataset; the store is damaged")
        except BaseException:
            f.close()
            raise
        return f, ds

    def _read_all(self, store):
        if store.encoding != "raw" or store.shape is None:
            f, ds, index, labels = self._open_flat(store)
            with f:
                if store.encoding != "raw":  # decoded by workers that each map the file
                    return self._decode_all(store, labels, index[:, 2:] if store.shape is None else None)
                data = np.empty(ds.shape, np.uint8)
                if data.size:
                    ds.read_direct(data)
            return flat.read_all(store, data, index, labels, self)
        f, ds = self._open(store)
        with f:
            out = np.empty(ds.shape, np.uint8)
            if out.size:
                ds.read_direct(out)
            return out, store.labels(f["labels"][()], f"{store.path}/{FILE}: labels")

    def _handle(self, store):
        if store.encoding != "raw" or store.shape is None:
            f, ds, index, labels = self._open_flat(store)
            offset = ds.id.get_offset() if ds.chunks is None and ds.size else None
            if offset is None:  # chunked or compressed: h5py slices, through its chunk cache
                return _FlatH5Handle(store, f, ds, index, labels)
            f.close()
            h = flat.FlatHandle(store, _mapped(store, offset, ds.shape), index, labels)
            h.file = FILE
            return h
        f, ds = self._open(store)
        try:
            labels = store.labels(f["labels"][()], f"{store.path}/{FILE}: labels")
            offset = ds.id.get_offset() if ds.chunks is None and not ds.compression else None
            if offset is None or not ds.size:  # chunked or compressed (or empty): h5py and its chunk cache
                return ChunkedHandle(f, ds, labels)
            # Contiguous, unfiltered, native uint8: the dataset is plain bytes at `offset` in the file.
            mm = _mapped(store, offset, ds.shape)
        except BaseException:
            f.close()
            raise
        f.close()
        h = ArrayHandle(mm, labels)
        h.file = FILE
        return h

    def _sums(self, store):
        try:
            with h5py.File(store.file(FILE), "r") as f:
                ds = plain_dataset(f, "checksums", f"{store.path}/{FILE}", "u", (store.count,))
                return ds[()] if ds is not None else f["checksums"][()]
        except (OSError, KeyError) as e:
            raise NotAStoreError(f"{store.path}/{FILE} has no readable checksums ({e}); "
                                 "the store is damaged") from None

    def _change_label(self, path, store, pos):
        with h5py.File(path / FILE, "r+") as h:
            ds = h["labels"]
            ds[pos] = (int(ds[pos]) + 1) % 2**62
        return FILE


class ChunkedHandle(Handle):
    file = FILE

    """A chunked (maybe compressed) dataset through h5py. A read decompresses whole chunks; the
    chunk cache (CHUNK_CACHE_BYTES) keeps recent ones, so ids close together share the cost."""

    def __init__(self, f, ds, labels):
        self.f, self.ds, self.labels = f, ds, labels

    def get(self, pos):
        out = np.empty(self.ds.shape[1:], np.uint8)
        self.ds.read_direct(out, np.s_[pos])
        return out, int(self.labels[pos])

    def batch(self, pos, out):
        ds = self.ds
        uniq, inverse = np.unique(pos, return_inverse=True)
        buf = out if len(uniq) == len(pos) else np.empty((len(uniq), *ds.shape[1:]), np.uint8)
        row = buf[0].nbytes
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        per_block = max(1, BLOCK_BYTES // row)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        if (len(breaks) + 1) * RUN_COST_BYTES >= (hi - lo) * row:
            # dense: read the span block by block and pick rows
            for start in range(lo, hi, per_block):
                end = min(start + per_block, hi)
                a, b = np.searchsorted(uniq, [start, end])
                if a < b:
                    buf[a:b] = ds[start:end][uniq[a:b] - start]
        else:  # sparse: one read per run of consecutive ids
            for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(uniq)]):
                s = int(uniq[a])
                ds.read_direct(buf, np.s_[s:s + (b - a)], np.s_[a:b])
        if buf is out:  # rows were read in sorted order; put them in the caller's
            if not np.array_equal(uniq, pos):
                out[...] = buf[inverse]
        else:
            np.take(buf, inverse, axis=0, out=out, mode="clip")
        return self.labels[pos]

    def stored(self, pos):
        out = np.empty(self.ds.shape[1:], np.uint8)
        self.ds.read_direct(out, np.s_[pos])
        return out, int(self.labels[pos])

    def stored_range(self, lo, hi):
        step = max(1, BLOCK_BYTES // max(1, int(np.prod(self.ds.shape[1:]))))
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            rows = np.empty((b - a, *self.ds.shape[1:]), np.uint8)
            self.ds.read_direct(rows, np.s_[a:b])
            for k in range(b - a):
                yield rows[k], int(self.labels[a + k])

    def close(self):
        self.f.close()


class _FlatH5Handle(flat.FlatHandle):
    file = FILE

    def __init__(self, store, f, ds, index, labels):
        super().__init__(store, ds, index, labels)
        self.f = f

    def close(self):
        self.data = None
        self.f.close()
