"""Reader: a store opened lazily, once per process, for training code (a map-style dataset)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..images import ImageList
from . import advise as _advise, checksums, errors as _errors
from .errors import DamagedImageError, NotAStoreError
from .handles import Handle
from .store import Store, check_id

# Bumped in every forked child, so a reader knows it is in a new process without asking the OS
# for its pid on every read (a system call).
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)

# Batch buffers a reader keeps to hand out again (get_batch without out=). A new array per batch
# is new memory: glibc gives a batch-sized block back to the kernel when it is freed and takes
# it again for the next, so every page faults afresh (on this kind of VM that made get_batch 6x
# slower than reading into a reused out=). A kept buffer is handed out again only once nothing
# outside the pool refers to it: every array or tensor made from it holds a reference to it.
POOL = 2
ADVISE_BATCHES = 2  # reads after opening that advise the maps (0.4 ms each): the second catches maps the first opened


def _refs(pool: list, k: int) -> int:
    return sys.getrefcount(pool[k])


_probe = [np.empty(1)]
_FREE = _refs(_probe, 0)  # the count of an array only the pool holds, as this interpreter counts it
del _probe


class Reader:
    """A store opened lazily, once per process, for training code (a map-style dataset).

    Safe across fork: a reader used in a parent and then in forked children notices the new process
    and opens the store again in each child, never touching the parent's handle (LMDB
    environments and HDF5 files must not be shared across fork). Safe across spawn: it pickles
    as backend class, options and path. Opening one store in several readers of a process works
    for every backend (LMDB environments are shared, since LMDB allows one per process).
    """

    def __init__(self, backend, path, verify: bool = False, uuid: str | None = None, advice: str | None = None,
                 decode_size: int | None = None):
        if advice not in (None, "random", "sequential"):
            raise ValueError(f"advice must be None, 'random' or 'sequential', got {advice!r}")
        if decode_size is not None and (isinstance(decode_size, bool) or not isinstance(decode_size, int)
                                        or decode_size < 1):
            raise ValueError(f"decode_size must be a positive number of pixels or None, got {decode_size!r}")
        self.decode_size = decode_size
        self.backend = backend
        self.advice = advice
        self.path = Path(path)
        self.verify = bool(verify)
        self._uuid = uuid  # the store this reader reads (its manifest's uuid), once opened
        self._gen = None  # the process generation the handle was opened in (None: not open)
        self._store: Store | None = None
        self._h: Handle | None = None
        self._sums = None
        self._pool: list[np.ndarray] = []  # batch buffers to hand out again (POOL)
        self._advise_left = 0  # reads left that advise the store's maps (advise.py), after each open

    def _open(self) -> Handle:
        if self._gen != _generation:  # first use, or a forked child: the parent's handle is not ours
            self._h = None
            store = self.backend.open(self.path)
            uid = store.meta.get("uuid")
            if self._uuid is not None and uid != self._uuid:
                raise NotAStoreError(f"{self.path} was replaced by another store since this reader first opened "
                                     "it; make a new reader to read the new one")
            self._sums = self.backend._checked_sums(store) if self.verify else None
            self._h = self.backend._handle(store)
            self._codec = store.codec()
            self._store, self._gen, self._uuid = store, _generation, uid
            if self.advice is not None:  # the maps read as advised; a handle advises maps it opens later
                self._h.advice, self._advise_left = self.advice, ADVISE_BATCHES
        return self._h

    def _advise(self) -> None:
        """On the first reads after the store opens: tell the kernel how the store's maps (those
        opened since too) will be read."""
        self._advise_left -= 1
        _advise.advise(self.path, self.advice)

    def _check(self, h: Handle, pos) -> None:
        s = self._store
        for p in np.unique(pos).tolist():
            data, label = h.stored(p)
            if checksums.checksum(data, label) != self._sums[p]:
                raise DamagedImageError(f"{self.path}: image id {s.first_id + p} is damaged (in {h.where(p)}): its "
                                        "bytes or label do not match its checksum; check the whole store with "
                                        f"imgbench verify {self.path}")

    @property
    def store(self) -> Store:
        self._open()
        return self._store

    def __len__(self) -> int:
        return self.store.count

    def __getitem__(self, image_id):
        try:
            return self._getitem(image_id)
        except _errors.LIBRARY_ERRORS as e:
            raise _errors.from_library(e, self.path) from None

    def _getitem(self, image_id):
        """`r[id]`: (image, label); `r[ids]` with a list, range or 1-D array of ids: get_batch(ids),
        so a DataLoader with a BatchSampler and batch_size=None reads a batch per call."""
        h = self._h if self._gen == _generation else self._open()
        s = self._store
        if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, (bool, np.bool_)):
            pos = int(image_id) - s.first_id
            if 0 <= pos < s.count:
                if self._advise_left:
                    self._advise()
                got = h.get(pos) if self.decode_size is None else self._resized(h, pos)
                if self._sums is not None:
                    self._check(h, [pos])
                return got
        elif isinstance(image_id, (list, range, np.ndarray)):
            return self.get_batch(image_id)
        pos = int(s.positions([check_id(image_id)])[0])  # raises the KeyError naming the id
        got = h.get(pos) if self.decode_size is None else self._resized(h, pos)
        if self._sums is not None:
            self._check(h, [pos])
        return got

    def get_batch(self, ids, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images (len(ids), H, W, C) and labels (len(ids),) int64 of `ids`, in the order given;
        an ImageList of the images if the store's images differ in shape.

        `out`, if given, is a C-contiguous uint8 array of that shape to read into (or an
        ImageList of the images' shapes)."""
        try:
            return self._get_batch(ids, out)
        except _errors.LIBRARY_ERRORS as e:
            raise _errors.from_library(e, self.path) from None

    def _resized(self, h: Handle, pos: int):
        """Image `pos` at training size (decode_size) and its label, from its stored bytes."""
        s = self._store
        data, label = h.stored(pos)
        shape = s.shape if s.shape is not None else tuple(h.shapes_of(np.array([pos]))[0])
        where = f"{s.path}: image id {s.first_id + pos}"
        return self._codec.decode_resized(bytes(data), shape, self.decode_size, where), int(label)

    def _get_batch(self, ids, out):
        h = self._open()
        pos = self._store.positions(ids)
        if self._advise_left:
            self._advise()
        if self.decode_size is not None:
            if out is not None:
                raise ValueError("out cannot be given with decode_size: the images' sizes are the decoder's")
            got = [self._resized(h, p) for p in pos.tolist()]
            if self._sums is not None:
                self._check(h, pos)
            images = [g[0] for g in got]
            same = len(images) > 0 and all(a.shape == images[0].shape for a in images)
            return (np.stack(images) if same else ImageList.from_arrays(images),
                    np.array([g[1] for g in got], np.int64))
        if self._store.shape is None:
            if out is None:
                out = ImageList.allocate(h.shapes_of(pos))
            elif not isinstance(out, ImageList) or len(out) != len(pos):
                # each image's shape is checked as it is read
                raise ValueError("out must be an ImageList of the shapes of the images read (ImageList.allocate)")
            labels = h.batch(pos, out) if len(pos) else np.empty(0, np.int64)
            if self._sums is not None:
                self._check(h, pos)
            return out, labels
        shape = (len(pos), *self._store.shape)
        if out is None:
            out = self._buffer(shape)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, "
                             f"got {out.dtype} {out.shape}")
        if len(pos) == 0:
            return out, np.empty(0, np.int64)
        labels = h.batch(pos, out)
        if self._sums is not None:
            self._check(h, pos)
        return out, labels

    def _buffer(self, shape) -> np.ndarray:
        """An array of `shape` for a batch: a pooled one nothing else refers to any more, or a new one."""
        pool = self._pool
        for k in range(len(pool)):
            if pool[k].shape == shape and _refs(pool, k) <= _FREE:
                return pool[k]
        out = np.empty(shape, np.uint8)
        if len(pool) >= POOL:
            pool.pop(0)  # the caller still holds it; it is no longer ours to reuse
        pool.append(out)
        return out

    def close(self) -> None:
        if self._h is not None and self._gen == _generation:
            self._h.close()
        self._h, self._gen, self._store = None, None, None
        self._pool = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        # the class by reference and its options, not the backend's state (such as map_grown)
        return {"cls": type(self.backend), "options": self.backend.option_values(), "path": str(self.path),
                "verify": self.verify, "uuid": self._uuid, "advice": self.advice,
                "decoder": self.backend.decoder, "decode_size": self.decode_size}

    def __setstate__(self, state):
        self.__init__(state["cls"](**state["options"]).decoding(state.get("decoder")), state["path"],
                      state["verify"], state["uuid"], state.get("advice"), state.get("decode_size"))

    def __repr__(self):
        v = ", verify=True" if self.verify else ""
        return f"{self.backend!r}.reader({str(self.path)!r}{v})"
