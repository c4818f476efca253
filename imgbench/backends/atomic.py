"""Creating a store atomically.

A store is a directory the backend owns. It is built in a hidden temporary sibling and renamed
into place only when complete, with the manifest written last, so a crash or an exception half
way never leaves a directory that reads as a valid store. The sibling is locked (flock) while it
is written; a later store to the same path deletes siblings whose writer died (killed: nothing
else would). A full disk ends the store with DiskFullError, the sibling deleted and any store
already at the path untouched.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from .errors import DiskFullError, StoreExistsError, disk_full, no_room
from .store import MANIFEST


def create(path: Path, overwrite: bool, fsync: bool, fill: Callable[[Path, str], None], what: str) -> Path:
    """Make the store at `path`: `fill(tmp, tag)` writes every file, the manifest last, into a
    temporary sibling `tmp` (`tag`: a fresh uuid for the manifest), which then replaces whatever
    is at `path` in one rename. `what` names the work in a disk-full error."""
    check_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path)
    tag = uuid.uuid4().hex
    tmp = path.parent / f".{path.name}.tmp-{tag[:8]}"
    tmp.mkdir()
    lock = _lock(tmp)  # held (by forked writers too) until written: a sweep leaves it alone
    try:
        fill(tmp, tag)
        if fsync:
            _fsync_tree(tmp)
        if path.exists():  # an empty directory, or a store the caller allowed us to replace
            old = path.parent / f".{path.name}.old-{tag[:8]}"
            path.rename(old)
            tmp.rename(path)
            _remove(old)
        else:
            tmp.rename(path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException as e:
        full = isinstance(e, Exception) and (disk_full(e) or no_room(tmp))  # before tmp's space is freed
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            kept = " (the store that was there is unchanged)" if (path / MANIFEST).exists() else ""
            raise DiskFullError(errno.ENOSPC, f"{path}: the disk is full (no space left on device) while "
                                f"{what}; nothing was written{kept}: free space there or store elsewhere") from None
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return path


def check_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an empty directory, or a store when `overwrite`."""
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


def leftovers(path) -> list[str]:
    """Hidden siblings a store to `path` leaves while it writes (temporary, replaced)."""
    path = Path(path)
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*") if p.name.split(".")[-1][:4] in ("tmp-", "old-"))


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


def sweep(path: Path) -> None:
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
