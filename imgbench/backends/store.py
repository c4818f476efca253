"""A store on disk: its manifest (`imgbench.json`), and an opened store (`Store`).

An opened store keeps its directory open and reads every file through it (on Linux, libraries
that take a path get /proc/self/fd/N/name), so a reader keeps reading the store it opened while
another process replaces it: the old images, or an error once the old files are deleted; never
some of each.
"""
from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

import numpy as np

from ..images import ImageList
from . import checksums
from .errors import NotAStoreError

MANIFEST = "imgbench.json"
MAX_ID = 10**10 - 1  # ids are written as 10 zero-padded digits

_PROC_FD = os.path.isdir("/proc/self/fd")


def _read_manifest(path: Path, dfd: int, name: str) -> dict:
    try:
        fd = os.open(MANIFEST, os.O_RDONLY, dir_fd=dfd)
    except FileNotFoundError:
        raise NotAStoreError(f"{path} is not a {name} store (it has no {MANIFEST})") from None
    try:
        with open(fd, "rb") as f:
            meta = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise NotAStoreError(f"{path} is not a {name} store (unreadable {MANIFEST}: {e})") from None
    if not isinstance(meta, dict):
        raise NotAStoreError(f"{path} is not a {name} store ({MANIFEST} is not an object)")
    return meta


def manifest(path) -> dict:
    """A store's manifest (which backend wrote it, how many images...), without opening it."""
    path = Path(path)
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise NotAStoreError(f"{path} is not a store ({e.strerror})") from None
    try:
        return _read_manifest(path, dfd, "imgbench")
    finally:
        os.close(dfd)


def new_manifest(backend, images, first_id: int, tag: str, sums: np.ndarray) -> dict:
    """What `backend` writes into a new store's manifest for `images` with checksums `sums`."""
    ragged = isinstance(images, ImageList)
    meta = {"backend": backend.name, "format_version": backend.format_version, "count": len(images),
            "shape": None if ragged else list(images.shape[1:]), "first_id": first_id,
            "encoding": backend.encoding, "uuid": tag, "checksum": checksums.ALGORITHM}
    meta["digest"] = checksums.digest(meta, sums)
    return meta


def open_store(path, name: str, format_version: int) -> "Store":
    """The store at `path`, which must be a `name` store of `format_version`."""
    path = Path(path)
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise NotAStoreError(f"{path} is not a {name} store (it does not exist)") from None
    except OSError as e:
        raise NotAStoreError(f"{path} is not a {name} store ({e.strerror})") from None
    try:
        meta = _read_manifest(path, dfd, name)
    except BaseException:
        os.close(dfd)
        raise
    store = Store(path, meta, dfd)
    if meta.get("backend") != name:
        raise NotAStoreError(f"{path} is a {meta.get('backend')!r} store, not a {name} store; "
                             f"read it with backends.get({meta.get('backend')!r})")
    if meta.get("format_version") != format_version:
        raise NotAStoreError(f"{path}: {name} store format {meta.get('format_version')} "
                             f"is not the supported {format_version}; store the images again")
    if type(meta.get("count")) is not int or type(meta.get("first_id")) is not int or meta["count"] < 0:
        raise NotAStoreError(f"{path}/{MANIFEST} has no valid count and first_id; the store is damaged")
    return store


def checked_sums(store: "Store", sums, errors: list | None = None) -> np.ndarray:
    """A store's checksums (as its backend keeps them), checked against the manifest's digest; a
    mismatch raises, or with `errors` is added to it."""
    problem = None
    if sums.shape != (store.count,):
        problem = f"it holds {sums.size} checksums for the manifest's {store.count} images"
    elif store.meta.get("digest") != checksums.digest(store.meta, sums):
        problem = "the manifest's digest does not match its fields and the store's checksums"
    if problem:
        msg = f"{store.path}/{MANIFEST} disagrees with the store's data: {problem}; the store is damaged"
        if errors is None:
            raise NotAStoreError(msg)
        errors.append(msg)
    return sums


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
    """An opened store's manifest: where it is and what it holds. `dfd` is its directory, held
    open (closed when the Store goes): files are opened through it (`file`), so they are this
    store's even if another store has since been renamed to the same path."""

    def __init__(self, path: Path, meta: dict, dfd: int | None = None):
        self.path = path
        self.meta = meta
        self.dfd = dfd
        self._root = f"/proc/self/fd/{dfd}" if dfd is not None and _PROC_FD else str(path)
        if dfd is not None:
            weakref.finalize(self, os.close, dfd)
        self.count = int(meta["count"])
        # every image's (H, W, C); None when they differ (each record or index row has its own)
        self.shape = tuple(meta["shape"]) if meta.get("shape") is not None else None
        self.first_id = int(meta["first_id"])
        self.encoding = meta.get("encoding", "raw")

    def file(self, name: str) -> str:
        """A path to this store's file `name` for any library (resolved through its open directory)."""
        return f"{self._root}/{name}"

    def open_file(self, name: str, flags: int = os.O_RDONLY) -> int:
        """os.open of this store's file `name`; NotAStoreError if it is gone."""
        try:
            return os.open(name, flags, dir_fd=self.dfd) if self.dfd is not None else os.open(self.path / name, flags)
        except FileNotFoundError:
            raise NotAStoreError(self.missing(name)) from None

    def missing(self, name: str) -> str:
        """Why file `name` cannot be opened: the store was replaced or deleted since it was opened, or
        is damaged."""
        try:
            gone = os.fstat(self.dfd).st_nlink == 0 or os.path.realpath(self._root) != os.path.realpath(self.path)
        except (OSError, TypeError):
            gone = False
        if gone:
            return (f"{self.path} was replaced or deleted after it was opened (its {name} is gone): open it again "
                    "to read what is there now")
        return f"{self.path}: {name} is missing; the store is damaged (imgbench verify {self.path})"

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
