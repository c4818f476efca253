#!/usr/bin/env python3
"""What hashing costs a store that writes raw pixels at memory speed, and why.

One process writes N CIFAR-sized images (np.save's single `tofile`, as the npy backend does)
under six conditions, alternately within each round so all see the same machine:

  alone       the write by itself
  spin        beside a process that only spins (a busy core that touches no memory)
  stream      beside a process that streams another array of the same size (memory traffic only)
  hashing     beside imgbench's own checksums (integrity.Hashing: per-image XXH3 in a thread by the
              compiled loop, or in a forked process in Python where it is not built)
  pieces      the same bytes in os.write calls of --piece bytes into a file preallocated first, as
              numpy's tofile preallocates (fallocate) before its one write: without it, the same
              one write from Python takes about 1.3x as long (ext4's delayed allocation per block)
  follow      `pieces`, with a forked process hashing each piece's images just behind the
              writer, told by a pipe how far it got: what a hasher reading the writer's bytes
              from the shared cache instead of memory would give

    python scripts/hash_beside_write.py --n 100000 --rounds 9

Printed: the median and min of each, and each median over `alone`'s. The file goes to --dir
(default: a temporary directory on the disk of the working directory) and is deleted; the page
cache is synced before each write so no write-back of the last one is timed.
"""
from __future__ import annotations

import argparse
import mmap
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from xxhash import xxh3_64_intdigest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from imgbench.backends import integrity  # noqa: E402
from imgbench.backends.base import preallocate  # noqa: E402


def beside(kind: str, other: np.ndarray) -> int:
    """A forked process that loads the other core: spinning, or streaming memory."""
    pid = os.fork()
    if pid == 0:
        if kind == "spin":
            while True:
                pass
        while True:
            xxh3_64_intdigest(other)  # one call per pass: memory bound, no per-image work
    time.sleep(0.02)  # let it start
    return pid


def _pieces(f, images: np.ndarray, piece: int, progress: int | None = None) -> None:
    mv = memoryview(images.reshape(-1))
    fd = f.fileno()
    preallocate(fd, 0, len(mv))  # as the HDF5 and Zarr stores do
    for a in range(0, len(mv), piece):
        b = min(a + piece, len(mv))
        while a < b:
            a += os.write(fd, mv[a:b])
        if progress is not None:
            os.write(progress, b.to_bytes(8, "little"))


def _follower(images: np.ndarray, labels: np.ndarray, r: int) -> np.ndarray:
    """Hash each image once the writer's progress (the last 8 bytes read from r) has passed it."""
    n, rb = len(images), images[0].nbytes
    out, done = np.empty(n, np.uint64), 0
    while done < n:
        msg = os.read(r, 1 << 16)
        upto = n if not msg else min(n, int.from_bytes(msg[-8:], "little") // rb)
        if upto > done:
            out[done:upto] = integrity.rows(images[done:upto], labels[done:upto])
            done = upto
    return out


def _follow(f, images: np.ndarray, labels: np.ndarray, piece: int) -> np.ndarray:
    r, w = os.pipe()
    out = np.frombuffer(mmap.mmap(-1, 8 * len(images)), np.uint64, len(images))
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(w)
            out[:] = _follower(images, labels, r)
            status = 0
        finally:
            os._exit(status)
    os.close(r)
    try:
        _pieces(f, images, piece, w)
    finally:
        os.close(w)
        _, status = os.waitpid(pid, 0)
    if status:
        raise RuntimeError("the follower failed")
    return out.copy()


def write(path: Path, images: np.ndarray, labels: np.ndarray, kind: str, piece: int, other: np.ndarray):
    """(seconds, checksums or None) of one write of `kind`."""
    path.unlink(missing_ok=True)
    os.sync()
    pid = beside(kind, other) if kind in ("spin", "stream") else None
    sums = None
    try:
        t = time.perf_counter()
        with integrity.Hashing(integrity.rows, len(images), images, labels) as hashing:
            if kind == "hashing":
                hashing.start()
            with open(path, "wb") as f:
                if kind == "pieces":
                    _pieces(f, images, piece)
                elif kind == "follow":
                    sums = _follow(f, images, labels, piece)
                else:
                    images.tofile(f)
            if kind == "hashing":
                sums = hashing.result()
        return time.perf_counter() - t, sums
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--piece", type=int, default=1 << 20, help="bytes per write for `pieces` and `follow`")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n)
    other = rng.integers(0, 256, images.nbytes, dtype=np.uint8)
    kinds = ["alone", "spin", "stream", "hashing", "pieces", "follow"]
    expected = integrity.rows(images, labels)
    times = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(dir=args.dir or Path.cwd(), prefix=".hash-beside-write-") as tmp:
        path = Path(tmp) / "images.bin"
        for _ in range(args.rounds):
            for k in kinds:
                seconds, sums = write(path, images, labels, k, args.piece, other)
                if sums is not None and not np.array_equal(sums, expected):
                    raise SystemExit(f"hash_beside_write: {k} computed other checksums than integrity.rows")
                times[k].append(seconds)
    base = statistics.median(times["alone"])
    print(f"{args.n:,} images, {images.nbytes / 1e6:.0f} MB, {args.rounds} rounds; "
          f"the checksums alone, in this process: ", end="")
    t = time.perf_counter()
    integrity.rows(images, labels)
    print(f"{(time.perf_counter() - t) * 1e3:.1f} ms")
    for k in kinds:
        med = statistics.median(times[k])
        print(f"{k:8s} median {med * 1e3:7.1f} ms  min {min(times[k]) * 1e3:7.1f} ms  x alone {med / base:5.2f}")


if __name__ == "__main__":
    main()
