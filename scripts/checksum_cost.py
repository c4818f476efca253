#!/usr/bin/env python3
"""What keeping checksums adds to a store: the same `store_many` of N random CIFAR-sized images
with the checksums and without them (their hashing replaced by zeros), alternately in random
order within each round, a sync before each, in one process.

    python scripts/checksum_cost.py npy hdf5 zarr --n 100000 --rounds 15

Printed per backend: median and min of each, and what the checksums add. The stores go to a
temporary directory under --dir (default: the working directory) and are deleted.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from imgbench import backends  # noqa: E402
from imgbench.backends import integrity  # noqa: E402


class _Zeros(integrity.Hashing):
    """Hashing that hashes nothing: the store's own writing alone."""

    def start(self) -> None:
        pass

    def result(self) -> np.ndarray:
        return np.zeros(self._call[1], np.uint64)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("backends", nargs="+")
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n)
    real, order = integrity.Hashing, random.Random(0)
    with tempfile.TemporaryDirectory(dir=args.dir or Path.cwd(), prefix=".checksum-cost-") as tmp:
        for name in args.backends:
            b = backends.get(name)
            times = {"with": [], "without": []}
            for _ in range(args.rounds):
                for kind in order.sample(list(times), 2):
                    path = Path(tmp) / name
                    shutil.rmtree(path, ignore_errors=True)
                    os.sync()
                    integrity.Hashing = real if kind == "with" else _Zeros
                    try:
                        t = time.perf_counter()
                        b.store_many(path, images, labels)
                        times[kind].append(time.perf_counter() - t)
                    finally:
                        integrity.Hashing = real
            w, wo = (statistics.median(times[k]) for k in ("with", "without"))
            print(f"{name}: with checksums {w * 1e3:.1f} ms (min {min(times['with']) * 1e3:.1f}), without "
                  f"{wo * 1e3:.1f} ms (min {min(times['without']) * 1e3:.1f}): the checksums add "
                  f"{(w / wo - 1) * 100:+.0f}% (medians), {(min(times['with']) / min(times['without']) - 1) * 100:+.0f}% (mins)")


if __name__ == "__main__":
    main()
