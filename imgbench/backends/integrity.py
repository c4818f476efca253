"""Checksums every store keeps, and the report of checking a store (`backends.verify`).

An image's checksum is the 64-bit XXH3 of the bytes the store keeps for it (its raw pixels, its
PNG or JPEG bytes, the original file, or a member or file holding them), seeded with its label:
a changed byte or a changed label changes it. Each backend keeps the checksums in its own way
(a column, a dataset, a header field; see the README's format table). The manifest keeps a
digest of its own fields and of all checksums, so a manifest edited by hand, or checksums that
changed, no longer match. XXH3 is a non-cryptographic hash: it finds damage, not tampering.
"""
from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass, field

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
    flat = np.ascontiguousarray(images.reshape(n, -1))
    # every step in C: numpy's row views are cheaper to make than memoryview slices (100,000
    # CIFAR rows: 49 ms against 62 ms, one call over all of them 33 ms); a Python loop costs more
    return np.fromiter(map(xxh3_64_intdigest, flat, _seeds(labels)), np.uint64, n)


def spans(data: np.ndarray, offsets, sizes, labels) -> np.ndarray:
    """Checksums of the byte ranges data[offset:offset + size] of a flat buffer."""
    mv = memoryview(np.ascontiguousarray(data)).cast("B")
    starts = np.asarray(offsets, np.int64)
    cuts = map(mv.__getitem__, map(slice, starts.tolist(), (starts + np.asarray(sizes, np.int64)).tolist()))
    return np.fromiter(map(xxh3_64_intdigest, cuts, _seeds(labels)), np.uint64, len(starts))


BACKGROUND_MIN = 256  # fewer images: hashing them costs less than starting a process


def in_background(fn, n: int, *args):
    """Start fn(*args) -> (n,) checksums in a forked process, beside this one, which goes on writing
    the store: raw pixels hash at about the speed they are written, so hashing them first would
    nearly double a fast store (measured: np.save of 100,000 CIFAR images 0.045-0.050 s, +0.04-0.07
    s hashing first, +0-0.005 s beside it). Returns finish() -> the checksums (computed here
    after all if the process failed). Small batches, and systems without fork, hash here."""
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

    done = []

    def finish():  # the same answer however often it is asked (an error path asks again)
        if not done:
            _, status = os.waitpid(pid, 0)
            done.append(out.copy() if status == 0 else fn(*args))
        return done[0]

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

    def __exit__(self, *exc) -> None:
        if self._finish is not None:
            self._finish()


def digest(meta: dict, sums: np.ndarray) -> str:
    """What the manifest records of itself and of the store's checksums."""
    core = json.dumps({k: meta.get(k) for k in DIGEST_FIELDS}, sort_keys=True).encode()
    return xxh3_128_hexdigest(core + np.ascontiguousarray(sums, "<u8").tobytes())


@dataclass
class Report:
    """What `verify` checked and found: `ok` when nothing is wrong."""

    path: str
    backend: str | None = None
    count: int = 0  # images the manifest says the store holds
    checked: int = 0  # images whose bytes were read and checked
    bad: list = field(default_factory=list)  # (image id, file, what is wrong), in id order
    errors: list = field(default_factory=list)  # what is wrong with the store as a whole
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad and not self.errors and self.checked == self.count

    def summary(self, limit: int = 5) -> str:
        """A few lines for a person: what was checked, then the first damaged ids and files."""
        what = f"{self.path}: {self.backend or 'unknown'} store, {self.checked:,} of {self.count:,} images checked"
        lines = [f"{what} in {self.seconds:.2f}s"]
        if self.ok:
            lines.append(f"OK: every image's bytes and label match its {ALGORITHM} checksum, and the manifest "
                         "matches the checksums")
            return "\n".join(lines)
        lines += [f"DAMAGED: {e}" for e in self.errors]
        if self.bad:
            lines.append(f"DAMAGED: {len(self.bad):,} image(s); the first: "
                         + "; ".join(f"id {i} in {f} ({why})" for i, f, why in self.bad[:limit]))
        return "\n".join(lines)
