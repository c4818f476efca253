"""What every backend shares: input checks, the store manifest, atomic creation, id handling,
checksums and checking a store.

A store is a directory the backend owns. It is built in a hidden temporary sibling and renamed
into place only when complete, with ``imgbench.json`` (the manifest) written last, so a crash
or an exception half way never leaves a directory that reads as a valid store. The sibling is
locked (flock) while it is written; a later store to the same path deletes siblings whose
writer died (killed: nothing else would). A full disk ends the store with DiskFullError, the
sibling deleted and any store already at the path untouched.

An opened store keeps its directory open and reads every file through it (on Linux, libraries
that take a path get /proc/self/fd/N/name), so a reader keeps reading the store it opened while
another process replaces it: the old images, or an error once the old files are deleted; never
some of each. A Reader that reopens (in a forked worker) checks that the store is still the
one it first opened (the manifest's uuid).
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import mmap
import multiprocessing
import os
import re
import shutil
import time
import uuid
import weakref
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..images import Blobs, Codec, DecodeError, ImageList, check_images
from .. import progress
from . import integrity

MANIFEST = "imgbench.json"
MAX_ID = 10**10 - 1  # ids are written as 10 zero-padded digits
PARALLEL_MIN = 256  # below this many images, starting processes costs more than it saves

# What a forked worker of `Backend._parallel` uses; set in the parent just before the fork.
_job: dict = {}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class NotAStoreError(UserError, ValueError):
    """The directory is not a store of the backend that was asked to read it (or it is damaged)."""

    def __init__(self, message="", *args):
        if isinstance(message, str):  # name files by the store's path, not the /proc/self/fd/N they are read through
            message = re.sub(r"/proc/self/fd/(\d+)", _fd_path, message)
        super().__init__(message, *args)


def _fd_path(m) -> str:
    try:
        return os.readlink(m.group(0))
    except OSError:
        return m.group(0)


class StoreExistsError(UserError, FileExistsError):
    """The target path already holds something that store_* would replace."""


class DamagedImageError(NotAStoreError):
    """An image's stored bytes or label do not match its checksum (a reader with verify=True)."""


class DiskFullError(UserError, OSError):
    """The file system filled up while a store was written; nothing was left behind."""


def _disk_full(e: BaseException | None) -> bool:
    # Libraries report it their own way: OSError errno 28 (numpy, zarr, tar), an errno in the
    # message (h5py, pyarrow), an lmdb.Error naming it.
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(e) for t in ("No space left on device", "Disk quota exceeded", "errno = 28")):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _no_room(path: Path) -> bool:
    # LMDB reports a short write on a full disk as EIO, numpy's tofile as a bare OSError: ask the
    # file system whether it is (all but) full
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 2**10


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


class Backend:
    """One storage format. Subclasses set `name` and implement the `_write`/`_read_*` hooks."""

    name = "?"
    format_version = 1
    ENCODINGS = ("raw",)  # what the store keeps per image; `encoding` is one of them
    RAGGED = True  # stores images of different shapes
    encoding = "raw"
    workers = None  # processes for coding (None: this process's cores)

    def __init__(self, *, fsync: bool = False):
        # Off by default for every backend alike: a store counts as written once its files are
        # closed (in the OS page cache). True adds fsync of every file, as a durability cost.
        self.fsync = bool(fsync)

    def __repr__(self):
        from . import options  # the options only, not state such as map_grown

        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in options(self.name))
        return f"backends.get({self.name!r}{', ' if opts else ''}{opts})"

    # ------------------------------------------------------------------ public interface

    def store_many(self, path, images, labels, *, sources=None, overwrite: bool = False) -> Path:
        """Store images with labels (N,) as ids 0..N-1 in a new store at `path`.

        `images`: a uint8 array (N, H, W, C), or a sequence of (H, W, C) uint8 arrays of different
        shapes (stored as such, read back as an ImageList; a sequence of one shape is stored as an
        array). `sources`: with encoding "source", the original files' bytes, one per image (the
        images are then what those files decode to; the store keeps only the bytes)."""
        images = check_images(images)
        self._check_support(images)
        labels = check_labels(labels, len(images))
        return self._create(Path(path), images, labels, 0, overwrite, self._check_sources(sources, len(images)))

    def _check_support(self, images) -> None:
        if isinstance(images, ImageList) and not self.RAGGED:
            raise ValueError(f"{self.name} stores only images of one shape (as the article does); these have "
                             f"{len(np.unique(images.shapes, axis=0))} shapes: use "
                             f"{self.name.removeprefix('article-')}, or resize them to one shape")

    def _check_sources(self, sources, n: int):
        if self.encoding != "source":
            return None
        if sources is None:
            raise ValueError(f"{self.name} with encoding 'source' keeps the original files' bytes: pass them as "
                             "sources= (a folder dataset's files), or choose another encoding")
        if len(sources) != n:
            raise ValueError(f"sources must hold one file's bytes per image: {len(sources)} for {n} images")
        return sources

    def read_many(self, path, ids=None):
        """All images and labels in id order, or those of `ids` in the order given: images as a
        uint8 array (N, H, W, C), or an ImageList if the store's images differ in shape."""
        if ids is None:
            return self._read_all(self.open(path))
        with self.reader(path) as r:
            return r.get_batch(ids)

    def store_single(self, path, image, image_id, label, *, source=None, overwrite: bool = False) -> Path:
        """Store one image (H, W, C) uint8 with its id and label in a new store at `path`
        (`source`: its file's bytes, with encoding "source")."""
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ValueError(f"image must be a numpy array (H, W, C), got "
                             f"{getattr(image, 'shape', type(image).__name__)}; for a batch use store_many")
        image_id = check_id(image_id)
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"label must be an integer, got {label!r}")
        images = check_images(image[None])
        sources = self._check_sources(None if source is None else [source], 1)
        return self._create(Path(path), images, np.array([label], np.int64), image_id, overwrite, sources)

    def read_single(self, path, image_id) -> tuple[np.ndarray, int]:
        check_id(image_id)
        with self.reader(path) as r:
            return r[image_id]

    def reader(self, path, *, verify: bool = False) -> "Reader":
        """A map-style dataset over the store at `path`: `len(r)`, `r[id]`, `r.get_batch(ids)`.

        Nothing is opened until the first use; it reopens itself in a forked child and pickles
        as backend, options and path (for spawned workers). verify: check every image it returns
        against its checksum (DamagedImageError naming the id, instead of wrong pixels)."""
        return Reader(self, path, verify=verify)

    def verify(self, path, log=None) -> integrity.Report:
        """Check a whole store: the manifest against the checksums, and every image's stored bytes
        and label against its checksum. Never raises for damage: it is in the report."""
        t0 = time.perf_counter()
        report = integrity.Report(str(path), self.name)
        try:
            store = self.open(path)
            report.count = store.count
            sums = self._checked_sums(store, report.errors)
            h = self._handle(store)  # a store that does not open is one error, not one per image
        except (NotAStoreError, OSError) as e:
            report.errors.append(str(e))
            report.seconds = time.perf_counter() - t0
            return report
        job = dict(backend=self, store=store, sums=sums)
        try:
            if h.spans is not None:  # raw rows: bound by copying them, as a read is; no processes to start
                _handles[os.getpid()] = h
                _job.update(job)
                parts = [_verify_range((0, store.count))]
            else:  # records: pieces in forked workers, each with its own handle
                h.close()
                parts = self._parallel(_verify_range, store.count, job)
        finally:
            _job.clear()
            h = _handles.pop(os.getpid(), None)
            if h is not None:
                h.close()
        for bad, errors in parts:
            report.bad += bad
            report.errors += errors
        report.checked = store.count
        report.seconds = time.perf_counter() - t0
        if log is not None:
            log(f"  verify {store.path}: {store.count:,} images checked in {report.seconds:.2f}s")
        return report

    def _checked_sums(self, store: Store, errors: list | None = None) -> np.ndarray:
        """The store's checksums, checked against the manifest's digest; a mismatch raises, or
        with `errors` is added to it."""
        try:
            sums = np.asarray(self._sums(store), np.uint64)
        except NotAStoreError:
            raise
        except (KeyError, IndexError, ValueError) as e:
            raise NotAStoreError(f"{store.path}: its checksums are unreadable ({e}); the store is damaged") from None
        problem = None
        if sums.shape != (store.count,):
            problem = f"it holds {sums.size} checksums for the manifest's {store.count} images"
        elif store.meta.get("digest") != integrity.digest(store.meta, sums):
            problem = "the manifest's digest does not match its fields and the store's checksums"
        if problem:
            msg = f"{store.path}/{MANIFEST} disagrees with the store's data: {problem}; the store is damaged"
            if errors is None:
                raise NotAStoreError(msg)
            errors.append(msg)
        return sums

    def open(self, path) -> Store:
        path = Path(path)
        try:
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise NotAStoreError(f"{path} is not a {self.name} store (it does not exist)") from None
        except OSError as e:
            raise NotAStoreError(f"{path} is not a {self.name} store ({e.strerror})") from None
        try:
            meta = _read_manifest(path, dfd, self.name)
        except BaseException:
            os.close(dfd)
            raise
        store = Store(path, meta, dfd)
        if meta.get("backend") != self.name:
            raise NotAStoreError(f"{path} is a {meta.get('backend')!r} store, not a {self.name} store; "
                                 f"read it with backends.get({meta.get('backend')!r})")
        if meta.get("format_version") != self.format_version:
            raise NotAStoreError(f"{path}: {self.name} store format {meta.get('format_version')} "
                                 f"is not the supported {self.format_version}; store the images again")
        if type(meta.get("count")) is not int or type(meta.get("first_id")) is not int or meta["count"] < 0:
            raise NotAStoreError(f"{path}/{MANIFEST} has no valid count and first_id; the store is damaged")
        return store

    # ------------------------------------------------------------------ hooks

    def _write(self, tmp: Path, images, labels: np.ndarray, first_id: int, sources) -> np.ndarray:
        """Write the store's files into `tmp`: `images` a 4-D array or an ImageList; `sources` the
        files' bytes with encoding "source", else None. Keep every image's checksum (see
        integrity.py) in the format, and return them, (N,) uint64."""
        raise NotImplementedError

    def _read_all(self, store: Store) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _handle(self, store: Store) -> "Handle":
        """An open store for a Reader (see Handle)."""
        raise NotImplementedError

    def _sums(self, store: Store) -> np.ndarray:
        """Every image's checksum (N,) uint64, as `_write` kept them."""
        raise NotImplementedError

    # ------------------------------------------------------------------ coding, in parallel

    def codec(self) -> Codec:
        return Codec(self.encoding, getattr(self, "quality", 90), getattr(self, "compress_level", 6))

    def read_processes(self, n: int) -> int:
        """Processes a whole-store read of n images decodes with (raw stores copy in one)."""
        return self._workers(n) if self.encoding != "raw" else 1

    def _workers(self, n: int) -> int:
        # A daemonic process (a DataLoader or Pool worker) may not start processes of its own.
        if (n < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods()
                or multiprocessing.current_process().daemon):
            return 1
        return max(1, min(self.workers or available_cores(), n // (PARALLEL_MIN // 2)))

    def _parallel(self, func, n: int, job: dict):
        """func((lo, hi)) over pieces of range(n) in forked workers (children inherit `job` as
        base._job, so arrays are never pickled), or in this process for few images; its results."""
        workers = self._workers(n)
        _job.update(job)
        try:
            if workers == 1:
                return [func((0, n))]
            # Several pieces per worker even out the load; contiguous pieces keep files in order.
            edges = np.linspace(0, n, workers * 4 + 1).astype(int)
            pieces = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = []
                for (lo, hi), result in zip(pieces, pool.imap(func, pieces, chunksize=1)):
                    results.append(result)
                    progress.advance(hi - lo)  # a line in a long job's log, at most every few seconds
                return results
        finally:
            _job.clear()

    def _encode_all(self, images, sources):
        """Every image's stored bytes as Blobs (encoded in parallel), or `sources` as they are."""
        if self.encoding == "source":
            return sources
        parts = self._parallel(_encode_range, len(images), dict(images=images, codec=self.codec()))
        return Blobs.from_bytes([x for part in parts for x in part])

    def _decode_all(self, store: Store, labels: np.ndarray, shapes=None):
        """A whole store of records (encoded, or raw of several shapes) decoded by this backend's
        handles, in parallel workers that each open the store; (images, labels)."""
        n = store.count
        out = allocate(store.shape, shapes, n, self._workers(n) > 1)
        try:
            self._parallel(_decode_range, n, dict(backend=self, store=store, out=out))
        finally:  # this process's handle (forked workers' go with them)
            h = _handles.pop(os.getpid(), None)
            if h is not None:
                h.close()
        return out, labels

    # ------------------------------------------------------------------ creation

    def _create(self, path: Path, images, labels, first_id: int, overwrite: bool, sources=None) -> Path:
        self._check_target(path, overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep(path)
        tag = uuid.uuid4().hex
        tmp = path.parent / f".{path.name}.tmp-{tag[:8]}"
        tmp.mkdir()
        lock = _lock(tmp)  # held (by forked writers too) until written: a sweep leaves it alone
        try:
            sums = self._write(tmp, images, labels, first_id, sources)
            ragged = isinstance(images, ImageList)
            meta = {"backend": self.name, "format_version": self.format_version, "count": len(images),
                    "shape": None if ragged else list(images.shape[1:]), "first_id": first_id,
                    "encoding": self.encoding, "uuid": tag, "checksum": integrity.ALGORITHM}
            meta["digest"] = integrity.digest(meta, sums)
            (tmp / MANIFEST).write_text(json.dumps(meta) + "\n")
            if self.fsync:
                _fsync_tree(tmp)
            if path.exists():  # an empty directory, or a store the caller allowed us to replace
                old = path.parent / f".{path.name}.old-{tag[:8]}"
                path.rename(old)
                tmp.rename(path)
                _remove(old)
            else:
                tmp.rename(path)
            if self.fsync:
                _fsync_dir(path.parent)
        except BaseException as e:
            full = isinstance(e, Exception) and (_disk_full(e) or _no_room(tmp))  # before tmp's space is freed
            shutil.rmtree(tmp, ignore_errors=True)
            if full:
                kept = " (the store that was there is unchanged)" if (path / MANIFEST).exists() else ""
                raise DiskFullError(errno.ENOSPC, f"{path}: the disk is full (no space left on device) while "
                                    f"storing {len(images):,} images; nothing was written{kept}: free space "
                                    "there or store elsewhere") from None
            raise
        finally:
            if lock is not None:
                os.close(lock)
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


def _lock(path: Path) -> int | None:
    """An exclusive flock on directory `path`, held while the returned descriptor is open; None
    where the file system has no locks (a sweep then leaves the directory alone)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _remove(path: Path) -> None:
    lock = _lock(path)
    try:
        shutil.rmtree(path, ignore_errors=True)  # a sweep of a dead writer's copy may race us
    finally:
        if lock is not None:
            os.close(lock)


def _sweep(path: Path) -> None:
    """Delete what killed stores to `path` left behind: its hidden siblings no process holds."""
    pattern = f".{glob.escape(path.name)}.%s-*"
    for p in [*path.parent.glob(pattern % "tmp"), *path.parent.glob(pattern % "old")]:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken: its writer is gone
        except OSError:
            os.close(fd)
            continue
        try:
            shutil.rmtree(p, ignore_errors=True)
        finally:
            os.close(fd)


# Raw rows are read for checking through a buffer of about this size: it stays in the CPU's cache
# while its rows are hashed (measured: 100,000 CIFAR rows read in 16 ms through 3 MB, 66 ms
# through 48 MB).
VERIFY_BUFFER = 2 * 2**20


def _verify_range(bounds) -> tuple[list, list]:
    """Check images lo..hi-1 of `_job`'s store against its checksums, a block at a time (an error in
    a block is pinned on its images one by one): (damaged (id, file, why), store-level errors)."""
    lo, hi = bounds
    store, sums = _job["store"], _job["sums"]
    h = _handles.get(os.getpid())
    if h is None:
        h = _handles[os.getpid()] = _job["backend"]._handle(store)
    first, block, bad, errors = store.first_id, 4096, [], []
    check, mask = integrity.xxh3_64_intdigest, integrity.MASK
    buf = None
    if h.spans is not None:
        block = max(16, VERIFY_BUFFER // max(1, h.row_bytes))
    for a in range(lo, hi, block):
        b = min(hi, a + block)
        expect = sums[a:b].tolist()
        try:
            if h.spans is not None:  # raw rows in files: one read per block, hashed as rows
                buf, rb, labels = h.rows(a, b, buf)
                got = integrity.rows(np.frombuffer(buf, np.uint8, (b - a) * rb).reshape(b - a, rb), labels).tolist()
            else:
                got = [check(data, lab & mask) for data, lab in h.stored_range(a, b)]
            if got != expect:
                bad += [(first + a + k, h.where(a + k), "bytes or label changed")
                        for k, (x, want) in enumerate(zip(got, expect)) if x != want]
        except (NotAStoreError, OSError, ValueError) as e:
            found = 0
            for p in range(a, b):
                try:
                    data, label = h.stored(p)
                    ok = integrity.checksum(data, label) == sums[p]
                    why = "bytes or label changed"
                except (NotAStoreError, OSError, ValueError) as e2:
                    ok, why = False, str(e2) or type(e2).__name__
                if not ok:
                    bad.append((first + p, h.where(p), why))
                    found += 1
            if not found:
                errors.append(str(e))
    return bad, errors


def check_coding(b: Backend, encoding, quality, compress_level, workers, option: str = "encoding") -> None:
    """Check and set the coding options every encoded backend takes (`option`: what the backend
    calls its encoding)."""
    if encoding not in b.ENCODINGS:
        raise ValueError(f"{b.name} option {option} must be one of {', '.join(map(repr, b.ENCODINGS))}, "
                         f"got {encoding!r}")
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 95:
        raise ValueError(f"{b.name} option quality must be 1..95 (JPEG), got {quality!r}")
    if not isinstance(compress_level, int) or isinstance(compress_level, bool) or not 0 <= compress_level <= 9:
        raise ValueError(f"{b.name} option compress_level must be 0..9, got {compress_level!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"{b.name} option workers must be a positive integer or None, got {workers!r}")
    b.encoding, b.quality, b.compress_level, b.workers = encoding, quality, compress_level, workers


def _encode_range(bounds) -> list[bytes]:
    images, codec = _job["images"], _job["codec"]
    return [codec.encode(images[i]) for i in range(*bounds)]


_handles: dict = {}  # pid -> the handle `_decode_range` (or `_verify_range`) opened in that process, for all its pieces


def _decode_range(bounds) -> None:
    lo, hi = bounds
    h = _handles.get(os.getpid())
    if h is None:  # once per process, not per piece: opening costs milliseconds (an HDF5 file, an index)
        h = _handles[os.getpid()] = _job["backend"]._handle(_job["store"])
    h.batch(np.arange(lo, hi), _job["out"][lo:hi])


def allocate(shape, shapes, n: int, shared: bool):
    """Room for n images: (n, *shape) if `shape`, else an ImageList of `shapes`; in anonymous
    shared memory if forked workers fill it."""
    nbytes = n * int(np.prod(shape)) if shape is not None else int(np.asarray(shapes).prod(axis=1).sum())
    if shared:
        buf = np.frombuffer(mmap.mmap(-1, max(1, nbytes)), np.uint8, nbytes)
    else:
        buf = np.empty(nbytes, np.uint8)
    return buf.reshape(n, *shape) if shape is not None else ImageList.allocate(shapes, buf)


def _read_into(fd: int, buf: memoryview, offset: int, where: str) -> None:
    """Fill `buf` from file offset `offset` (pread, finishing short reads)."""
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], offset + done)
        if not got:
            raise NotAStoreError(f"{where} ends early; the store is damaged")
        done += got


def preallocate(fd: int, offset: int, size: int) -> None:
    """Reserve a file's blocks before one big write into them, as numpy's tofile does: the same
    write into a file without them took about 1.3x as long (ext4 allocates each block as the
    write reaches it; 300 MB of CIFAR pixels, measured). A full disk says so here, before any
    byte is written; file systems without fallocate just write."""
    try:
        os.posix_fallocate(fd, offset, size)
    except (AttributeError, OSError) as e:
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise


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

    def stored(self, pos: int) -> tuple:
        """The bytes the store keeps for row `pos` (a buffer) and its label: what its checksum covers."""
        raise NotImplementedError

    def stored_range(self, lo: int, hi: int):
        """stored(p) for rows lo..hi-1, in order (handles with a faster way to read many override it)."""
        for p in range(lo, hi):
            yield self.stored(p)

    def where(self, pos: int) -> str:
        """The file (in the store) that holds row `pos`'s bytes, for messages."""
        return self.file

    file = "the store's data"
    # Where raw rows lie in files, for reading many (verify): [(path, byte offset, rows)] in row
    # order, rows of `row_bytes` each; None when they do not (records, compressed chunks).
    spans = None
    row_bytes = 0

    def rows(self, lo: int, hi: int, buf: bytearray | None = None) -> tuple:
        """Rows lo..hi-1 read from `spans` into `buf` (reused when large enough): (buffer, bytes
        per row, labels as a list). pread into one buffer: no page faults of a fresh array or a
        memory map, so checking a store costs about what copying it does."""
        rb, need = self.row_bytes, (hi - lo) * self.row_bytes
        if buf is None or len(buf) < need:
            buf = bytearray(need)
        mv, done, start = memoryview(buf), 0, 0
        for path, offset, count in self.spans:
            a, b = max(lo, start), min(hi, start + count)
            if a < b:
                fd = os.open(path, os.O_RDONLY)
                try:
                    _read_into(fd, mv[done:done + (b - a) * rb], offset + (a - start) * rb, path)
                finally:
                    os.close(fd)
                done += (b - a) * rb
            start += count
        return buf, rb, self.labels[lo:hi].tolist()

    def close(self) -> None:
        pass


class RecordHandle(Handle):
    """A store of records: each image's stored bytes (`_payload(pos)`, a buffer) decoded by the
    store's codec (a copy for raw pixels) into the caller's array. `shapes` (N, 3) is every
    image's shape, or None when the store has one shape; `shapes_of` may read them lazily."""

    def __init__(self, store: Store, labels: np.ndarray, codec: Codec, shapes: np.ndarray | None = None):
        self.store, self.labels, self.codec, self.shapes = store, labels, codec, shapes

    def _payload(self, pos: int):
        raise NotImplementedError

    def shapes_of(self, pos: np.ndarray) -> np.ndarray:
        return self.shapes[pos]

    def stored(self, pos):
        return self._payload(pos), int(self.labels[pos])

    def _into(self, dst: np.ndarray, pos: int) -> None:
        try:
            self.codec.decode_into(dst, self._payload(pos), f"{self.store.path}: image id {self.store.first_id + pos}")
        except DecodeError as e:
            raise NotAStoreError(str(e)) from None

    def get(self, pos):
        shape = self.store.shape or tuple(self.shapes_of(np.array([pos]))[0])
        out = np.empty(shape, np.uint8)
        self._into(out, pos)
        return out, int(self.labels[pos])

    def batch(self, pos, out):
        order = np.argsort(pos, kind="stable")  # storage order: neighbouring pages, fewer seeks when cold
        for k, p in zip(order.tolist(), pos[order].tolist()):
            self._into(out[k], p)
        return self.labels[pos]


class ArrayHandle(Handle):
    """Rows of an array in memory or mapped from a file (npy, a contiguous HDF5 dataset): a row is
    a memory copy, no library call."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        if isinstance(images, np.memmap) and images.filename and images.flags.c_contiguous:
            self.spans, self.row_bytes = [(images.filename, images.offset, len(images))], images[0].nbytes if len(
                images) else 0
        # a plain ndarray view: indexing a np.memmap costs a subclass instance per result
        self.images, self.labels = np.asarray(images), labels

    def get(self, pos):
        return np.array(self.images[pos]), int(self.labels[pos])

    def batch(self, pos, out):
        np.take(self.images, pos, axis=0, out=out)
        return self.labels[pos]

    def stored(self, pos):
        return self.images[pos], int(self.labels[pos])

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

    def __init__(self, backend: Backend, path, verify: bool = False, uuid: str | None = None):
        self.backend = backend
        self.path = Path(path)
        self.verify = bool(verify)
        self._uuid = uuid  # the store this reader reads (its manifest's uuid), once opened
        self._gen = None  # the process generation the handle was opened in (None: not open)
        self._store: Store | None = None
        self._h: Handle | None = None
        self._sums = None

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
            self._store, self._gen, self._uuid = store, _generation, uid
        return self._h

    def _check(self, h: Handle, pos) -> None:
        s = self._store
        for p in np.unique(pos).tolist():
            data, label = h.stored(p)
            if integrity.checksum(data, label) != self._sums[p]:
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
        """`r[id]`: (image, label); `r[ids]` with a list, range or 1-D array of ids: get_batch(ids),
        so a DataLoader with a BatchSampler and batch_size=None reads a batch per call."""
        h = self._h if self._gen == _generation else self._open()
        s = self._store
        if isinstance(image_id, (int, np.integer)) and not isinstance(image_id, (bool, np.bool_)):
            pos = int(image_id) - s.first_id
            if 0 <= pos < s.count:
                got = h.get(pos)
                if self._sums is not None:
                    self._check(h, [pos])
                return got
        elif isinstance(image_id, (list, range, np.ndarray)):
            return self.get_batch(image_id)
        pos = int(s.positions([check_id(image_id)])[0])  # raises the KeyError naming the id
        got = h.get(pos)
        if self._sums is not None:
            self._check(h, [pos])
        return got

    def get_batch(self, ids, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Images (len(ids), H, W, C) and labels (len(ids),) int64 of `ids`, in the order given;
        an ImageList of the images if the store's images differ in shape.

        `out`, if given, is a C-contiguous uint8 array of that shape to read into (or an
        ImageList of the images' shapes)."""
        h = self._open()
        pos = self._store.positions(ids)
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
            out = np.empty(shape, np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, "
                             f"got {out.dtype} {out.shape}")
        if len(pos) == 0:
            return out, np.empty(0, np.int64)
        labels = h.batch(pos, out)
        if self._sums is not None:
            self._check(h, pos)
        return out, labels

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

        return {"backend": self.backend.name, "path": str(self.path), "verify": self.verify, "uuid": self._uuid,
                "options": {k: getattr(self.backend, k) for k in options(self.backend.name)}}

    def __setstate__(self, state):
        from . import get

        self.__init__(get(state["backend"], **state["options"]), state["path"], state.get("verify", False),
                      state.get("uuid"))

    def __repr__(self):
        v = ", verify=True" if self.verify else ""
        return f"{self.backend!r}.reader({str(self.path)!r}{v})"
