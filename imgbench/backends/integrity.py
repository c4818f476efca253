"""Checksums every store keeps, and the report of checking a store (`backends.verify`).

An image's checksum is the 64-bit XXH3 of the bytes the store keeps for it (its raw pixels, its
PNG or JPEG bytes, the original file, or a member or file holding them), seeded with its label:
a changed byte or a changed label changes it. Each backend keeps the checksums in its own way
(a column, a dataset, a header field; see the README's format table). The manifest keeps a
digest of its own fields and of all checksums, so a manifest edited by hand, or checksums that
changed, no longer match. XXH3 is a non-cryptographic hash: it finds damage, not tampering.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import mmap
import os
import threading
from dataclasses import dataclass, field

import numpy as np
from xxhash import xxh3_64_intdigest, xxh3_128_hexdigest

ALGORITHM = "xxh3-64"
MASK = 2**64 - 1
DIGEST_FIELDS = ("backend", "format_version", "count", "shape", "first_id", "encoding", "uuid", "checksum")


def checksum(data, label: int) -> int:
    """The checksum of one image's stored bytes (any C-contiguous buffer) with its label."""
    return xxh3_64_intdigest(data, int(label) & MASK)


def _seeds(labels) -> np.ndarray:
    return np.asarray(labels, np.int64).astype(np.uint64)  # two's complement: label & MASK


def _compiled():
    """The compiled loop (_xxh3.c) and the address of an XXH3-64 it calls, or None.

    The function is python-xxhash's own (its extension module exports it; the `_dispatch` one
    picks AVX2 where the CPU has it), else the system's libxxhash. It is used only if it gives
    python-xxhash's answers on inputs of every length XXH3 treats differently, with seeds up to
    2**64 - 1: a mismatch or anything missing means hashing in Python, the same checksums."""
    if os.environ.get("IMGBENCH_HASH") == "python":
        return None
    try:
        from . import _xxh3
    except ImportError:  # built without a C compiler
        return None
    try:
        from xxhash import _xxhash
        libs = [_xxhash.__file__]
    except (ImportError, AttributeError):
        libs = []
    rng = np.random.default_rng(0)
    sizes = np.array([0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 3072, 70_000], np.int64)
    data = rng.integers(0, 256, int(sizes.sum()), np.uint8)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    seeds = np.array([0, 1, 9, 2**63 + 5, MASK] * 3, np.uint64)
    want = np.array([xxh3_64_intdigest(data[o:o + n], int(s)) for o, n, s in zip(offsets, sizes, seeds)], np.uint64)
    for lib in [*libs, ctypes.util.find_library("xxhash")]:
        for name in ("XXH3_64bits_withSeed_dispatch", "XXH3_64bits_withSeed"):
            try:
                fn = ctypes.cast(getattr(ctypes.CDLL(lib), name), ctypes.c_void_p).value
            except (OSError, AttributeError, TypeError):
                continue
            got = np.empty(len(sizes), np.uint64)
            _xxh3.spans(fn, data, offsets, sizes, seeds, got)
            if np.array_equal(got, want):
                return _xxh3, fn
    return None


COMPILED = _compiled()


def rows(images: np.ndarray, labels) -> np.ndarray:
    """Checksums (N,) uint64 of the rows of an array, one image per row."""
    n = len(images)
    flat = np.ascontiguousarray(images.reshape(n, int(np.prod(images.shape[1:]))))
    if COMPILED:
        row = flat.shape[1]
        return spans(flat.reshape(-1), np.arange(0, n * row, row, dtype=np.int64), np.full(n, row, np.int64), labels)
    # in Python every step in C still: numpy's row views are cheaper to make than memoryview
    # slices (100,000 CIFAR rows: 49 ms against 62 ms; one XXH3 call over all of them 33 ms)
    return np.fromiter(map(xxh3_64_intdigest, flat, _seeds(labels).tolist()), np.uint64, n)


def spans(data: np.ndarray, offsets, sizes, labels) -> np.ndarray:
    """Checksums of the byte ranges data[offset:offset + size] of a flat buffer."""
    data = np.ascontiguousarray(data)
    starts, sizes = np.asarray(offsets, np.int64), np.asarray(sizes, np.int64)
    if COMPILED:
        out = np.empty(len(starts), np.uint64)
        COMPILED[0].spans(COMPILED[1], data.reshape(-1).view(np.uint8), np.ascontiguousarray(starts),
                          np.ascontiguousarray(sizes), _seeds(labels), out)
        return out
    mv = memoryview(data).cast("B")
    cuts = map(mv.__getitem__, map(slice, starts.tolist(), (starts + sizes).tolist()))
    return np.fromiter(map(xxh3_64_intdigest, cuts, _seeds(labels).tolist()), np.uint64, len(starts))


BACKGROUND_MIN = 256  # fewer images: hashing them costs less than starting a thread or process


def in_background(fn, n: int, *args):
    """Start fn(*args) -> (n,) checksums beside this thread, which goes on writing the store: raw
    pixels hash at about the speed they are written, so hashing them first would nearly double a
    fast store (measured: np.save of 100,000 CIFAR images 0.045-0.050 s, +0.04-0.07 s hashing
    first, +0-0.005 s beside it). Returns finish() -> the checksums.

    With the compiled loop the hashing runs in a thread (it does not hold the GIL); in Python it
    would hold the GIL, which h5py's writes hold too, so it runs in a forked process (forking a
    process holding 300 MB of images costs 3-4 ms, and its copy-on-write faults more) and is
    computed here after all if that process failed. Small batches, and systems without fork when
    not compiled, hash here."""
    if n < BACKGROUND_MIN or not (COMPILED or hasattr(os, "fork")):
        sums = fn(*args)
        return lambda: sums
    if COMPILED:
        box = []
        worker = threading.Thread(target=lambda: box.append(_outcome(fn, args)), name="imgbench-checksums")
        worker.start()

        def joined():
            worker.join()
            ok, value = box[0]
            if not ok:
                raise value
            return value

        return joined
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


def _outcome(fn, args):
    try:
        return True, fn(*args)
    except BaseException as e:  # raised again by whoever asks for the checksums
        return False, e


class Hashing:
    """Checksums computed by `in_background`, started by `start()` just before the bulk write:
    the writer's own Python work after a fork pays copy-on-write faults (forking at the start of a
    Zarr store, before zarr-python builds the group: +12 ms of 76 ms, measured; just before its
    shards are written: a fraction of that). As a context manager it waits for a started thread or
    process on the way out, errors included, so none is left behind; `result()` waits (starting first if
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
