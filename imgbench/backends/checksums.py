"""Checksums every store keeps.

An image's checksum is the 64-bit XXH3 of the bytes the store keeps for it (its raw pixels, its
PNG or JPEG bytes, the original file, or a member or file holding them), seeded with its label:
a changed byte or a changed label changes it. Each backend keeps the checksums in its own way
(a column, a dataset, a header field; see docs/formats.md). The manifest keeps a digest of its
own fields and of all checksums, so a manifest edited by hand, or checksums that changed, no
longer match. XXH3 is a non-cryptographic hash: it finds damage, not tampering.

Hashing uses python-xxhash's public API only, one call per image. Raw pixels hash at about the
speed they are written, so a store of many images hashes them in a forked process beside the
writer (`Hashing`) instead of before or after it.
"""
from __future__ import annotations

import json
import mmap
import os

import numpy as np
from xxhash import xxh3_64_intdigest, xxh3_128_hexdigest

ALGORITHM = "xxh3-64"
MASK = 2**64 - 1
DIGEST_FIELDS = ("backend", "format_version", "count", "shape", "first_id", "encoding", "uuid", "checksum")


def checksum(data, label: int) -> int:
    """The checksum of one image's stored bytes (any C-contiguous buffer) with its label."""
    return xxh3_64_intdigest(data, int(label) & MASK)


def _seeds(labels) -> list[int]:
    return np.asarray(labels, np.int64).astype(np.uint64).tolist()  # two's complement: label & MASK


def rows(images: np.ndarray, labels) -> np.ndarray:
    """Checksums (N,) uint64 of the rows of an array, one image per row."""
    n = len(images)
    flat = np.ascontiguousarray(images.reshape(n, int(np.prod(images.shape[1:]))))
    # every step in C still: numpy's row views are cheaper to make than memoryview slices
    # (100,000 CIFAR rows: 49 ms against 62 ms; one XXH3 call over all of them 33 ms)
    return np.fromiter(map(xxh3_64_intdigest, flat, _seeds(labels)), np.uint64, n)


def spans(data: np.ndarray, offsets, sizes, labels) -> np.ndarray:
    """Checksums of the byte ranges data[offset:offset + size] of a flat buffer."""
    data = np.ascontiguousarray(data)
    starts, sizes = np.asarray(offsets, np.int64), np.asarray(sizes, np.int64)
    if len(starts) and (starts.min() < 0 or (starts + sizes).max() > data.nbytes or sizes.min() < 0):
        raise ValueError(f"byte ranges outside the buffer of {data.nbytes:,} bytes")
    mv = memoryview(data).cast("B")
    cuts = map(mv.__getitem__, map(slice, starts.tolist(), (starts + sizes).tolist()))
    return np.fromiter(map(xxh3_64_intdigest, cuts, _seeds(labels)), np.uint64, len(starts))


BACKGROUND_MIN = 256  # fewer images: hashing them costs less than starting a process


def in_background(fn, n: int, *args):
    """Start fn(*args) -> (n,) checksums beside this process, which goes on writing the store;
    returns finish() -> the checksums.

    Raw pixels hash at about the speed they are written, so hashing them first would nearly
    double a fast store (measured: np.save of 100,000 CIFAR images 0.045-0.050 s, +0.04-0.07 s
    hashing first). The hashing holds the GIL (a Python call per image), and so do h5py's
    writes, so a thread would wait for the writer: the checksums are hashed in a forked process
    (forking a process holding 300 MB of images costs 3-4 ms) and written into shared memory.
    If that process fails they are computed here after all. Small batches, and systems without
    fork, hash here."""
    if n < BACKGROUND_MIN or not hasattr(os, "fork"):
        sums = fn(*args)
        return lambda: sums
    out = np.frombuffer(mmap.mmap(-1, 8 * n), np.uint64, n)
    pid = os.fork()
    if pid == 0:  # the child: hash, write into the shared array, leave without running any cleanup
        status = 1
        try:
            out[:] = fn(*args)
            status = 0
        finally:
            os._exit(status)

    done = {}

    def finish():  # the same answer however often it is asked (an error path asks again)
        if "status" not in done:
            done["status"] = os.waitpid(pid, 0)[1]
        if "sums" not in done:  # hashed here if the process failed: raises what it raised
            done["sums"] = out.copy() if done["status"] == 0 else fn(*args)
        return done["sums"]

    return finish


class Hashing:
    """Checksums computed by `in_background`, started by `start()` just before the bulk write:
    the writer's own Python work after a fork pays copy-on-write faults (forking at the start of a
    Zarr store, before zarr-python builds the group: +12 ms of 76 ms, measured; just before its
    shards are written: a fraction of that). As a context manager it waits for a started process
    on the way out, errors included, so none is left behind; `result()` waits (starting first if
    never started)."""

    def __init__(self, fn, n: int, *args):
        self._call, self._finish = (fn, n, args), None

    def start(self) -> None:
        if self._finish is None:
            fn, n, args = self._call
            self._finish = in_background(fn, n, *args)

    def result(self) -> np.ndarray:
        self.start()
        return self._finish()

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc) -> None:
        if self._finish is not None:
            try:
                self._finish()
            except Exception:
                if kind is None:  # on an error path the first error is the one to report
                    raise


def digest(meta: dict, sums: np.ndarray) -> str:
    """What the manifest records of itself and of the store's checksums."""
    core = json.dumps({k: meta.get(k) for k in DIGEST_FIELDS}, sort_keys=True).encode()
    return xxh3_128_hexdigest(core + np.ascontiguousarray(sums, "<u8").tobytes())


FILE = "checksums.npy"  # where a format with no place of its own for them keeps the checksums


def save(directory, sums: np.ndarray) -> np.ndarray:
    """Keep `sums` in `directory`/checksums.npy; returns them."""
    np.save(os.path.join(directory, FILE), sums, allow_pickle=False)
    return sums


def load(store) -> np.ndarray:
    """The checksums an opened store keeps in checksums.npy."""
    return store.load_npy(FILE, shape=(-1,), kinds="u")
