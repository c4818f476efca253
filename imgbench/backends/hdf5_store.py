"""HDF5: one file with datasets `images` (N, H, W, C) native uint8 and `labels` (N,) int64.

Reads go straight into a preallocated array (no h5py conversion layer, no astype copy). Reads by
ids avoid h5py fancy indexing, which is slow on long or unsorted lists: the ids are sorted and
de-duplicated, read as contiguous runs (or as whole blocks when they are dense), then put back
in the caller's order with one numpy gather.
"""
from __future__ import annotations

import h5py
import numpy as np

from .base import Backend, NotAStoreError, Store

FILE = "images.h5"
BLOCK_BYTES = 32 * 2**20  # dense id reads go through blocks of about this size
# One h5py read call costs about as much as copying this many bytes (measured: ~50 us per call
# against ~5 GB/s for a contiguous read), so ids with fewer than one run per this many bytes
# of span are read run by run, denser ones by reading the whole span in blocks.
RUN_COST_BYTES = 256 * 2**10
CHUNK_CACHE_BYTES = 64 * 2**20


class Hdf5Backend(Backend):
    name = "hdf5"

    def __init__(self, *, chunks: int | None = None, compression: str | None = None,
                 compression_opts: int | None = None, fsync: bool = False):
        """chunks: images per chunk (None: contiguous, or automatic when compressing);
        compression: None, "gzip" or "lzf"; compression_opts: the gzip level (0-9)."""
        super().__init__(fsync=fsync)
        if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
            raise ValueError(f"hdf5 option chunks must be a positive number of images or None, got {chunks!r}")
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"hdf5 option compression must be None, 'gzip' or 'lzf', got {compression!r}")
        self.chunks = chunks
        self.compression = compression
        self.compression_opts = compression_opts

    def _write(self, tmp, images, labels, first_id):
        n, h, w, c = images.shape
        chunks = self.chunks
        if chunks is None and self.compression:
            chunks = max(1, (1 << 20) // (h * w * c))  # about 1 MiB per chunk
        layout = {}
        if chunks:
            layout = dict(chunks=(min(chunks, n), h, w, c), compression=self.compression,
                          compression_opts=self.compression_opts)
        with h5py.File(tmp / FILE, "w") as f:
            f.create_dataset("images", data=images, **layout)
            f.create_dataset("labels", data=labels)
            f.attrs["first_id"] = first_id

    def _open(self, store: Store):
        try:
            f = h5py.File(store.path / FILE, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable hdf5 store ({e})") from None
        ds = f.get("images")
        if ds is None or ds.shape != (store.count, *store.shape) or ds.dtype != np.uint8:
            f.close()
            raise NotAStoreError(f"{store.path}/{FILE} has no images dataset of shape "
                                 f"{(store.count, *store.shape)} uint8; not an hdf5 store")
        return f, ds

    def _read_all(self, store):
        f, ds = self._open(store)
        with f:
            out = np.empty(ds.shape, np.uint8)
            if out.size:
                ds.read_direct(out)
            return out, f["labels"][()]

    def _read_positions(self, store, pos):
        f, ds = self._open(store)
        with f:
            uniq, inverse = np.unique(pos, return_inverse=True)
            buf = np.empty((len(uniq), *store.shape), np.uint8)
            lo, hi = int(uniq[0]), int(uniq[-1]) + 1
            per_block = max(1, BLOCK_BYTES // buf[0].nbytes)
            breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
            if (len(breaks) + 1) * RUN_COST_BYTES >= (hi - lo) * buf[0].nbytes:
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
            labels = f["labels"][()]
        return buf[inverse], labels[uniq][inverse]

    def _read_one(self, store, pos):
        f, ds = self._open(store)
        with f:
            out = np.empty(store.shape, np.uint8)
            ds.read_direct(out, np.s_[pos])
            return out, f["labels"][pos]
