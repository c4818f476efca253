"""Coding in forked worker processes: images encoded, decoded or checked a piece each.

The parent puts what the workers need in `job` just before forking; children inherit it, so
arrays are never pickled between processes. A worker opens the store once (`handle()`) and keeps
it for all its pieces. Results come back through the pool, or through shared memory the parent
allocated (`allocate(..., shared=True)`).
"""
from __future__ import annotations

import mmap
import multiprocessing
import os

import numpy as np

from .. import progress
from ..images import ImageList

PARALLEL_MIN = 256  # below this many images, starting processes costs more than it saves

# What a forked worker of `run` uses; set in the parent just before the fork.
job: dict = {}
_handles: dict = {}  # pid -> the handle opened in that process, for all its pieces


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def processes(n: int, configured: int | None = None) -> int:
    """Processes to code n images with (`configured`: a backend's `workers` option, None: every core)."""
    # A daemonic process (a DataLoader or Pool worker) may not start processes of its own.
    if (n < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods()
            or multiprocessing.current_process().daemon):
        return 1
    return max(1, min(configured or available_cores(), n // (PARALLEL_MIN // 2)))


def run(func, n: int, work: dict, workers: int) -> list:
    """func((lo, hi)) over pieces of range(n) in `workers` forked processes (children inherit
    `work` as `job`), or in this process with one; its results, in order."""
    job.update(work)
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
        job.clear()


def handle():
    """This process's handle of `job`'s store, opened once per process (opening costs
    milliseconds: an HDF5 file, an index), not per piece."""
    h = _handles.get(os.getpid())
    if h is None:
        h = _handles[os.getpid()] = job["backend"]._handle(job["store"])
    return h


def keep_handle(h) -> None:
    """Use `h` as this process's handle of `job`'s store (the parent's own, already open)."""
    _handles[os.getpid()] = h


def close_handle() -> None:
    """Close this process's handle, if it opened one (forked workers' go with them)."""
    h = _handles.pop(os.getpid(), None)
    if h is not None:
        h.close()


def encode_range(bounds) -> list[bytes]:
    images, codec = job["images"], job["codec"]
    return [codec.encode(images[i]) for i in range(*bounds)]


def decode_range(bounds) -> None:
    lo, hi = bounds
    handle().batch(np.arange(lo, hi), job["out"][lo:hi])


def allocate(shape, shapes, n: int, shared: bool):
    """Room for n images: (n, *shape) if `shape`, else an ImageList of `shapes`; in anonymous
    shared memory if forked workers fill it."""
    nbytes = n * int(np.prod(shape)) if shape is not None else int(np.asarray(shapes).prod(axis=1).sum())
    if shared:
        buf = np.frombuffer(mmap.mmap(-1, max(1, nbytes)), np.uint8, nbytes)
    else:
        buf = np.empty(nbytes, np.uint8)
    return buf.reshape(n, *shape) if shape is not None else ImageList.allocate(shapes, buf)
