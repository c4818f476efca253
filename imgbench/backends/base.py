"""What every backend shares: input checks, the store manifest, atomic creation, id handling.

A store is a directory the backend owns. It is built in a hidden temporary sibling and renamed
into place only when complete, with ``imgbench.json`` (the manifest) written last, so a crash
or an exception half way never leaves a directory that reads as a valid store.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from ..errors import UserError

MANIFEST = "imgbench.json"
CHANNELS = (1, 3, 4)
MAX_ID = 10**10 - 1  # ids are written as 10 zero-padded digits


class NotAStoreError(UserError, ValueError):
    """The directory is not a store of the backend that was asked to read it."""


class StoreExistsError(UserError, FileExistsError):
    """The target path already holds something that store_* would replace."""


def check_images(images) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array (N, H, W, C) of uint8, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}; scale to 0..255 and use .astype(np.uint8)")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}; "
                         "add a channel axis for grey images, or use store_single for one image")
    if len(images) == 0:
        raise ValueError("images is an empty batch (N = 0); there is nothing to store")
    if images.shape[3] not in CHANNELS or 0 in images.shape[1:3]:
        raise ValueError(f"images must have 1, 3 or 4 channels and a non-empty height and width, "
                         f"got shape {images.shape}")
    return np.ascontiguousarray(images)


def check_labels(labels, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"labels must be a 1-D array of {n} integers (one per image), got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if labels.dtype.kind == "u" and labels.dtype.itemsize == 8 and n and labels.max() > np.iinfo(np.int64).max:
        raise ValueError("labels must fit in int64")
    return labels.astype(np.int64)


def check_id(image_id) -> int:
    if isinstance(image_id, (bool, np.bool_)) or not isinstance(image_id, (int, np.integer)):
        raise ValueError(f"image_id must be an integer, got {image_id!r}")
    if not 0 <= int(image_id) <= MAX_ID:
        raise ValueError(f"image_id must lie in 0..{MAX_ID}, got {image_id}")
    return int(image_id)


class Store:
    """An opened store's manifest: where it is and what it holds."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        self.count = int(meta["count"])
        self.shape = tuple(meta["shape"])
        self.first_id = int(meta["first_id"])

    def positions(self, ids) -> np.ndarray:
        """Row positions of image ids; KeyError naming the first id that is not in the store."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"ids must be a 1-D sequence of integer image ids, got {ids.dtype} {ids.shape}")
        pos = ids.astype(np.int64) - self.first_id
        bad = (pos < 0) | (pos >= self.count)
        if bad.any():
            raise KeyError(f"image id {int(ids[np.argmax(bad)])} is not in {self.path} "
                           f"(it holds ids {self.first_id}..{self.first_id + self.count - 1})")
        return pos


class Backend:
    """One storage format. Subclasses set `name` and implement the `_write`/`_read_*` hooks."""

    name = "?"
    format_version = 1

    def __init__(self, *, fsync: bool = False):
        # Off by default for every backend alike: a store counts as written once its files are
        # closed (in the OS page cache). True adds fsync of every file, as a durability cost.
        self.fsync = bool(fsync)

    def __repr__(self):
        from . import options  # the options only, not state such as map_grown

        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in options(self.name))
        return f"backends.get({self.name!r}{', ' if opts else ''}{opts})"

    # ------------------------------------------------------------------ public interface

    def store_many(self, path, images, labels, *, overwrite: bool = False) -> Path:
        """Store images (N, H, W, C) uint8 with labels (N,) as ids 0..N-1 in a new store at `path`."""
        images = check_images(images)
        labels = check_labels(labels, len(images))
        return self._create(Path(path), images, labels, 0, overwrite)

    def read_many(self, path, ids=None) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels in id order, or those of `ids` in the order given."""
        if ids is None:
            return self._read_all(self.open(path))
        with self.reader(path) as r:
            return r.get_batch(ids)

    def store_single(self, path, image, image_id, label, *, overwrite: bool = False) -> Path:
        """Store one image (H, W, C) uint8 with its id and label in a new store at `path`."""
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ValueError(f"image must be a numpy array (H, W, C), got "
                             f"{getattr(image, 'shape', type(image).__name__)}; for a batch use store_many")
        image_id = check_id(image_id)
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"label must be an integer, got {label!r}")
        images = check_images(image[None])
        return self._create(Path(path), images, np.array([label], np.int64), image_id, overwrite)

    def read_single(self, path, image_id) -> tuple[np.ndarray, int]:
        check_id(image_id)
        with self.reader(path) as r:
            return r[image_id]

    def reader(self, path) -> "Reader":
        """A map-style dataset over the store at `path`: `len(r)`, `r[id]`, `r.get_batch(ids)`.

        Nothing is opened until the first use; it reopens itself in a forked child and pickles
        as backend, options and path (for spawned workers)."""
        return Reader(self, path)

    def open(self, path) -> Store:
        path = Path(path)
        manifest = path / MANIFEST
        try:
            meta = json.loads(manifest.read_text())
        except FileNotFoundError:
            what = "does not exist" if not path.exists() else f"has no {MANIFEST}"
            raise NotAStoreError(f"{path} is not a {self.name} store ({what})") from None
        except (OSError, ValueError) as e:
            raise NotAStoreError(f"{path} is not a {self.name} store (unreadable {MANIFEST}: {e})") from None
        if meta.get("backend") != self.name:
            raise NotAStoreError(f"{path} is a {meta.get('backend')!r} store, not a {self.name} store; "
                                 f"read it with backends.get({meta.get('backend')!r})")
        if meta.get("format_version") != self.format_version:
            raise NotAStoreError(f"{path}: {self.name} store format {meta.get('format_version')} "
                                 f"is not the supported {self.format_version}")
        return Store(path, meta)

    # ------------------------------------------------------------------ hooks

    def _write(self, tmp: Path, images: np.ndarray, labels: np.ndarray, first_id: int) -> None:
        raise NotImplementedError

    def _read_all(self, store: Store) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _handle(self, store: Store) -> "Handle":
        """An open store for a Reader (see Handle)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ creation

    def _create(self, path: Path, images, labels, first_id: int, overwrite: bool) -> Path:
        self._check_target(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        tmp = path.parent / f".{path.name}.tmp-{tag}"
        tmp.mkdir()
        try:
            self._write(tmp, images, labels, first_id)
            meta = {"backend": self.name, "format_version": self.format_version, "count": len(images),
                    "shape": list(images.shape[1:]), "first_id": first_id}
            (tmp / MANIFEST).write_text(json.dumps(meta) + "\n")
            if self.fsync:
                _fsync_tree(tmp)
            if path.exists():  # an empty directory, or a store the caller allowed us to replace
                old = path.parent / f".{path.name}.old-{tag}"
                path.rename(old)
                tmp.rename(path)
                shutil.rmtree(old)
            else:
                tmp.rename(path)
            if self.fsync:
                _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def _check_target(self, path: Path, overwrite: bool) -> None:
        if not path.exists():
            return
        if not path.is_dir():
            raise StoreExistsError(f"{path} exists and is not a directory; choose another path")
        if (path / MANIFEST).exists():
            if not overwrite:
                raise StoreExistsError(f"{path} already holds a store; pass overwrite=True to replace it")
            return
        if any(path.iterdir()):
            raise StoreExistsError(f"{path} is a non-empty directory that is not an imgbench store; "
                                   "refusing to replace it, choose another path")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


# Bumped in every forked child, so a reader knows it is in a new process without asking the OS
# for its pid on every read (a system call).
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


class Handle:
    """One process's open store, as a backend's reader needs it. Positions are checked rows."""

    def get(self, pos: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def batch(self, pos: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Read rows `pos` (any order, repeats allowed) into `out`; return their labels (int64)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ArrayHandle(Handle):
    """Rows of an array in memory or mapped from a file (npy, a contiguous HDF5 dataset): a row is
    a memory copy, no library call."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        # a plain ndarray view: indexing a np.memmap costs a subclass instance per result
        self.images, self.labels = np.asarray(images), labels

    def get(self, pos):
        return np.array(self.images[pos]), int(self.labels[pos])

    def batch(self, pos, out):
        np.take(self.images, pos, axis=0, out=out)
        return self.labels[pos]

    def close(self):
        self.images = None  # unmapped when the last view goes (closing a map under a view fails)


class Reader:
    """A store opened lazily, once per process, for training code (a map-style dataset).

    Safe across fork: a reader used in a parent and then in forked children notices the new process
    and opens the store again in each child, never touching the parent's handle (LMDB
    environments and HDF5 files must not be shared across fork). Safe across spawn: it pickles
    as backend, options and path. Opening one store in several readers of a process works for
    every backend (LMDB environments are shared, since LMDB allows one per process).
    """

    def __init__(self, backend: Backend, path):
        self.backend = backend
        self.path = Path(path)
        self._gen = None  # the process generation the handle was opened in (None: not open)
        self._store: Store | None = None
        self._h: Handle | None = None

    def _open(self) -> Handle:
        if self._gen != _generation:  # first use, or a forked child: the parent's handle is not ours
            self._h = None
            store = self.backend.open(self.path)
            self._h = self.backend._handle(store)
            self._store, self._gen = store, _generation
        return self._h

    @property
    def store(self) -> Store:
        self._open()
        return self._store

    def __len__(self) -> int:
        return self.store.count

    def __getitem__(self, image_id):
        """`r[id]`: (image, label); `r[ids]` with a list, range or 1-D array of ids: get_batch(ids),
        so a DataLoader with a BatchSampler and batch_size=None reads a batch per call."""
        h = self._h if self._gen == _generation else self._open()
        s = self._store
        if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, (bool, np.bool_)):
            pos = int(image_id) - s.first_id
            if 0 <= pos < s.count:
                return h.get(pos)
        elif isinstance(image_id, (list, range, np.ndarray)):
            return self.get_batch(image_id)
        pos = int(s.positions([check_id(image_id)])[0])  # raises the KeyError naming the id
        return h.get(pos)

    def get_batch(self, ids, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images (len(ids), H, W, C) and labels (len(ids),) int64 of `ids`, in the order given.

        `out`, if given, is a C-contiguous uint8 array of that shape to read into."""
        h = self._open()
        pos = self._store.positions(ids)
        shape = (len(pos), *self._store.shape)
        if out is None:
            out = np.empty(shape, np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, "
                             f"got {out.dtype} {out.shape}")
        if len(pos) == 0:
            return out, np.empty(0, np.int64)
        return out, h.batch(pos, out)

    def close(self) -> None:
        if self._h is not None and self._gen == _generation:
            self._h.close()
        self._h, self._gen, self._store = None, None, None

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
        from . import options

        return {"backend": self.backend.name, "path": str(self.path),
                "options": {k: getattr(self.backend, k) for k in options(self.backend.name)}}

    def __setstate__(self, state):
        from . import get

        self.__init__(get(state["backend"], **state["options"]), state["path"])

    def __repr__(self):
        return f"{self.backend!r}.reader({str(self.path)!r})"
