"""Telling the kernel how a store's memory maps will be read (madvise), so a shuffled read of a
mapped store does not drag read-ahead through the page cache for every image.

A fault on a mapped file reads around it: up to the device's read-ahead (8 MiB on this kind of
machine). In memory that costs little; where a dataset is larger than the page cache, each
random image then reads megabytes (a shuffled epoch of a 20 MB npy store through a 2 MB cache
read 262 times its bytes). MADV_RANDOM reads only the pages touched. The maps are found in
/proc/self/maps by the store's path, so one rule covers every format that maps files, whether
numpy, h5py's data found by offset, Zarr shards or LMDB's own map.
"""
from __future__ import annotations

import ctypes
import os

MADV_NORMAL, MADV_RANDOM = 0, 1
_libc = None


def _madvise():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return _libc.madvise


def maps_under(root: str) -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of files under `root`."""
    root = os.path.realpath(root).rstrip("/") + "/"
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith(root):
                    lo, hi = parts[0].split("-")
                    out.append((int(lo, 16), int(hi, 16)))
    except OSError:  # not Linux: no advice
        pass
    return out


def advise(root, pattern: str) -> int:
    """Advise every map of a file under `root`: 'random' (read only what is touched) or
    'sequential' (the kernel's default read-ahead). Returns how many maps were advised."""
    flag = MADV_RANDOM if pattern == "random" else MADV_NORMAL
    fn, done = _madvise(), 0
    for lo, hi in maps_under(os.fspath(root)):
        if fn(lo, hi - lo, flag) == 0:
            done += 1
    return done


def advise_map(array, pattern: str) -> None:
    """Advise the map under an np.memmap (a map opened after the reader advised its store's)."""
    m = getattr(array, "_mmap", None)
    if m is not None and hasattr(m, "madvise"):
        m.madvise(MADV_RANDOM if pattern == "random" else MADV_NORMAL)
