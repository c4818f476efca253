"""What a store can go wrong with, as exceptions every backend raises the same way."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from ..errors import UserError


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


# What a format's library raises for data it finds damaged (lmdb.CorruptedError...): each backend
# module adds its library's; reads and verify turn them into one NotAStoreError line.
LIBRARY_ERRORS: tuple = ()


def register_library_errors(*types: type) -> None:
    global LIBRARY_ERRORS
    LIBRARY_ERRORS += tuple(t for t in types if t not in LIBRARY_ERRORS)


def from_library(e: BaseException, path) -> NotAStoreError:
    lib = type(e).__module__.partition(".")[0]
    return NotAStoreError(f"{path}: {lib} cannot read it ({e}); the store is damaged")


class StoreExistsError(UserError, FileExistsError):
    """The target path already holds something that store_* would replace."""


class DamagedImageError(NotAStoreError):
    """An image's stored bytes or label do not match its checksum (a reader with verify=True)."""


class DiskFullError(UserError, OSError):
    """The file system filled up while a store was written; nothing was left behind."""


def disk_full(e: BaseException | None) -> bool:
    """Whether an error (or one it was raised from) says the disk is full."""
    # Libraries report it their own way: OSError errno 28 (numpy, zarr, tar), an errno in the
    # message (h5py, pyarrow), an lmdb.Error naming it, sqlite3's "database or disk is full".
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(e) for t in ("No space left on device", "Disk quota exceeded", "errno = 28",
                                     "database or disk is full")):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def no_room(path: Path) -> bool:
    """Whether the file system holding `path` is (all but) full."""
    # LMDB reports a short write on a full disk as EIO, numpy's tofile as a bare OSError: ask the
    # file system whether it is
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 2**10
