"""A store on disk: its manifest (`imgbench.json`), and an opened store (`Store`).

An opened store keeps its directory open and reads every file through it (on Linux, libraries
that take a path get /proc/self/fd/N/name), so a reader keeps reading the store it opened while
another process replaces it: the old images, or an error once the old files are deleted; never
some of each.

A store is untrusted input (people download stores others wrote), so what it holds is checked
before any library reads it: every file a store is read through is a regular file of the store
(not a symbolic link, a hard link with another name, a FIFO or a device), opened without
following links; the manifest is a bounded JSON object whose fields have the types and ranges a
store can have. What fails is a NotAStoreError naming the store and the problem. The checks are
per store or per file, never per image.
"""
from __future__ import annotations

import json
import os
import stat
import weakref
from pathlib import Path

import numpy as np

from ..decoders import DEFAULT as DEFAULT_DECODER
from ..images import ImageList
from . import checksums
from .errors import NotAStoreError

MANIFEST = "imgbench.json"
MAX_ID = 10**10 - 1  # ids are written as 10 zero-padded digits

MAX_MANIFEST_BYTES = 2**20  # a manifest is a few hundred bytes
MAX_SIDE = 2**16  # pixels per image side in a manifest's shape
CHANNELS = (1, 3, 4)
MAX_PIXELS = 2**27  # per image (134 megapixels, 512 MiB at 4 channels): above Pillow's own bomb limit
# Opening a store's file: never through a symbolic link, and never waiting (a FIFO opens at once
# and then fails the regular-file check instead of blocking for ever).
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

_PROC_FD = os.path.isdir("/proc/self/fd")


def open_nofollow(name: str, dfd: int | None, shown: str) -> int:
    """os.open of `name` (relative to directory `dfd`) for reading, never through a symbolic
    link: FileNotFoundError if it is missing, NotAStoreError if it cannot be opened so."""
    try:
        return os.open(name, OPEN_FLAGS, dir_fd=dfd)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP: a symbolic link (O_NOFOLLOW)
        raise NotAStoreError(f"{shown} cannot be opened as a file of the store ({e.strerror}: a symbolic link is "
                             "never followed); the store is damaged") from None


def open_regular(name: str, dfd: int | None, shown: str) -> int:
    """open_nofollow, refused unless it is a regular file with one name (see check_regular)."""
    fd = open_nofollow(name, dfd, shown)
    try:
        check_regular(os.fstat(fd), shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular(st: os.stat_result, shown: str) -> None:
    """NotAStoreError unless `st` is of a regular file with one name (a store writes no links)."""
    if stat.S_ISLNK(st.st_mode):
        raise NotAStoreError(f"{shown} is a symbolic link; a store's files are never links and are never followed "
                             "(the store is damaged, or made to read elsewhere)")
    if not stat.S_ISREG(st.st_mode):
        raise NotAStoreError(f"{shown} is not a regular file (a FIFO, device or socket); the store is damaged")
    if st.st_nlink != 1:
        raise NotAStoreError(f"{shown} has {st.st_nlink} hard links; a store's files have one (copy the store "
                             "without hard links, e.g. cp -r, to read it)")


def _read_manifest(path: Path, dfd: int, name: str) -> dict:
    shown = f"{path}/{MANIFEST}"
    try:
        fd = open_regular(MANIFEST, dfd, shown)
    except FileNotFoundError:
        raise NotAStoreError(f"{path} is not a {name} store (it has no {MANIFEST})") from None
    try:
        with open(fd, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ValueError(f"more than {MAX_MANIFEST_BYTES:,} bytes")
        meta = json.loads(data)
    except (OSError, ValueError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else e
        raise NotAStoreError(f"{path} is not a {name} store (unreadable {MANIFEST}: {why})") from None
    if not isinstance(meta, dict):
        raise NotAStoreError(f"{path} is not a {name} store ({MANIFEST} is not an object)")
    return meta


def check_manifest(path: Path, meta: dict) -> None:
    """NotAStoreError unless the manifest's fields have the types and ranges a store's can have."""
    def bad(what: str):
        return NotAStoreError(f"{path}/{MANIFEST}: {what}; the store is damaged")

    count, first = meta.get("count"), meta.get("first_id")
    if type(count) is not int or type(first) is not int:
        raise bad("count and first_id must be whole numbers")
    if not 0 <= count <= MAX_ID + 1 or not 0 <= first <= MAX_ID or first + count - 1 > MAX_ID:
        raise bad(f"ids {first}..{first + count - 1} are outside 0..{MAX_ID}")
    shape = meta.get("shape")
    if shape is not None and not (type(shape) is list and len(shape) == 3 and all(type(d) is int for d in shape)
                                  and 1 <= shape[0] <= MAX_SIDE and 1 <= shape[1] <= MAX_SIDE
                                  and shape[2] in CHANNELS and shape[0] * shape[1] <= MAX_PIXELS):
        raise bad(f"shape must be [height, width, channels] (sides 1..{MAX_SIDE}, channels 1, 3 or 4) or null")
    for key in ("encoding", "uuid", "digest", "checksum"):
        if key in meta and type(meta[key]) is not str:
            raise bad(f"{key} must be text")


def check_shapes(shapes, where) -> None:
    """NotAStoreError unless every (height, width, channels) row of an index is an image shape
    (sides 1..MAX_SIDE, channels 1, 3 or 4, at most MAX_PIXELS): checked, once per store, before
    room for the images is allocated."""
    s = np.asarray(shapes)
    if s.ndim != 2 or s.shape[1] != 3 or not np.issubdtype(s.dtype, np.integer):
        raise NotAStoreError(f"{where}: its image shapes are not (height, width, channels) rows; the store is damaged")
    if len(s) and (s[:, :2].min() < 1 or s[:, :2].max() > MAX_SIDE or not np.isin(s[:, 2], CHANNELS).all()
                   or (s[:, 0].astype(np.int64) * s[:, 1]).max() > MAX_PIXELS):
        raise NotAStoreError(f"{where}: an image shape is out of range (sides 1..{MAX_SIDE}, channels 1, 3 or 4, "
                             f"at most {MAX_PIXELS:,} pixels); the store is damaged")


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
        if meta.get("backend") != name:
            raise NotAStoreError(f"{path} is a {meta.get('backend')!r} store, not a {name} store; "
                                 f"read it with backends.get({meta.get('backend')!r})")
        if meta.get("format_version") != format_version:
            raise NotAStoreError(f"{path}: {name} store format {meta.get('format_version')!r} "
                                 f"is not the supported {format_version}; store the images again")
        check_manifest(path, meta)
    except BaseException:
        os.close(dfd)
        raise
    return Store(path, meta, dfd)


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
        self.decoder = DEFAULT_DECODER  # what decodes its images (Backend.open sets the backend's)
        self._checked: set[str] = set()

    def codec(self):
        """The codec its images are read with: its encoding, by its decoder."""
        from ..images import Codec

        return Codec(self.encoding, decoder=self.decoder)

    def file(self, name: str) -> str:
        """A path to this store's file (or directory) `name` for any library, resolved through its
        open directory, once `name` is checked: a regular file of the store, or a real directory
        whose whole tree holds only such files and directories (see check_regular); a missing
        one is left to the library to name."""
        if name and name not in self._checked:
            self._check_entry(name)
            self._checked.add(name)
        return f"{self._root}/{name}"

    def _check_entry(self, name: str) -> None:
        shown = f"{self.path}/{name}"
        try:
            st = os.stat(name, dir_fd=self.dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            check_regular(st, shown)
            return
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0), dir_fd=self.dfd)
        try:
            # fwalk never follows links: a linked file or directory is among `files`, checked below
            for root, _, files, rfd in os.fwalk(".", dir_fd=fd):
                for f in files:
                    check_regular(os.stat(f, dir_fd=rfd, follow_symlinks=False), os.path.join(shown, root, f))
        finally:
            os.close(fd)

    def load_npy(self, name: str, mmap: bool = False, shape=None, kinds: str = "iub",
                 fortran: bool = False) -> np.ndarray:
        """The array in this store's .npy file `name`, read without trusting it: its header is
        parsed by numpy's header reader (no pickles), and it must be of a plain dtype
        of `kinds`, of `shape` if given (-1: any length), and exactly as long as its header says;
        only then is it read (or mapped, `mmap`). It must be C-ordered (readers read rows as bytes)
        unless `fortran` allows Fortran order (a small index read whole). NotAStoreError otherwise."""
        shown = f"{self.path}/{name}"
        fd = self.open_file(name)
        with open(fd, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise ValueError(f"npy format version {version}")
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                got, is_fortran, dtype = read_header(f)
            except (ValueError, OSError, SyntaxError, TypeError) as e:
                raise NotAStoreError(f"{shown} is not a readable .npy file ({e}); the store is damaged") from None
            start, size = f.tell(), os.fstat(fd).st_size
            want = tuple(got) if shape is None else tuple(g if s == -1 else s for s, g in zip(shape, got))
            if (is_fortran and (mmap or not fortran)) or dtype.hasobject or dtype.kind not in kinds or dtype.fields or dtype.subdtype \
                    or len(got) != len(want) or tuple(got) != want:
                raise NotAStoreError(f"{shown} holds {dtype} {tuple(got)}{' in Fortran order' if is_fortran else ''}, "
                                     f"not what the store keeps there; the store is damaged")
            nbytes = int(np.prod(got, dtype=object)) * dtype.itemsize
            if start + nbytes != size:
                raise NotAStoreError(f"{shown} declares {nbytes:,} bytes of data and holds {size - start:,}; "
                                     "the store is damaged")
            if mmap:
                if nbytes == 0:
                    return np.empty(got, dtype)
                # by its checked path, so that readers of rows (handles.ArrayHandle.spans) find it
                return np.memmap(self.file(name), dtype, "r", start, tuple(got))
            a = np.empty(got[::-1] if is_fortran else got, dtype)
            if nbytes and f.readinto(memoryview(a.reshape(-1)).cast("B")) != nbytes:
                raise NotAStoreError(f"{shown} is shorter than its header says; the store is damaged")
            return a.T if is_fortran else a  # Fortran order: the transpose of the C-ordered reverse

    def labels(self, labels, where: str) -> np.ndarray:
        """A store's labels as int64, once checked to be one integer per image (NotAStoreError)."""
        a = np.asarray(labels)
        if a.shape != (self.count,) or a.dtype.kind not in "iub" or (
                a.dtype.kind == "u" and a.dtype.itemsize == 8 and len(a) and a.max() > np.iinfo(np.int64).max):
            raise NotAStoreError(f"{where} holds {a.dtype} {a.shape}, not {self.count} integer labels; "
                                 "the store is damaged")
        return a.astype(np.int64, copy=False)

    def open_file(self, name: str) -> int:
        """os.open of this store's file `name` for reading (a regular file of the store, see
        check_regular); NotAStoreError if it is gone or is not one."""
        try:
            if self.dfd is None:
                return open_regular(str(self.path / name), None, f"{self.path}/{name}")
            return open_regular(name, self.dfd, f"{self.path}/{name}")
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
