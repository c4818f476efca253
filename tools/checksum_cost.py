#!/usr/bin/env python3
"""What keeping checksums adds to a store: the same `store_many` of N random CIFAR-sized images
with the checksums and without them (their hashing replaced by zeros), alternately in random
order within each round, a sync before each, in one process.

    python tools/checksum_cost.py npy hdf5 zarr article-hdf5 --n 100000 --rounds 15

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
from imgbench.backends import checksums  # noqa: E402


class _Zeros(checksums.Hashing):
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
    real, order = checksums.Hashing, random.Random(0)
    kinds = ["with", "without"]
    with tempfile.TemporaryDirectory(dir=args.dir or Path.cwd(), prefix=".checksum-cost-") as tmp:
        for name in args.backends:
            b = backends.get(name)
            times = {k: [] for k in kinds}
            for _ in range(args.rounds):
                for kind in order.sample(kinds, len(kinds)):
                    path = Path(tmp) / name
                    shutil.rmtree(path, ignore_errors=True)
                    os.sync()
                    checksums.Hashing = _Zeros if kind == "without" else real
                    try:
                        t = time.perf_counter()
                        b.store_many(path, images, labels)
                        times[kind].append(time.perf_counter() - t)
                    finally:
                        checksums.Hashing = real
            wo, lo = statistics.median(times["without"]), min(times["without"])
            print(f"{name}: without checksums {wo * 1e3:.1f} ms (min {lo * 1e3:.1f})" + "".join(
                f"; {k} checksums: {statistics.median(times[k]) * 1e3:.1f} ms (min {min(times[k]) * 1e3:.1f}), "
                f"{(statistics.median(times[k]) / wo - 1) * 100:+.0f}% (medians), {(min(times[k]) / lo - 1) * 100:+.0f}% (mins)"
                for k in kinds[:-1]), flush=True)


if __name__ == "__main__":
    main()
