#!/usr/bin/env python3
"""The store, read and verify paths of every backend, timed in one process, for comparing two
versions of imgbench (e.g. before and after a change to the checks a store goes through):

    python tools/read_paths.py OUT.json [--repo PATH] [--n 20000]

--repo: the imgbench checkout to import (default: this one; a `git worktree` of another commit
for a before/after). Per backend: store_many once, then three rounds of read_many, a Reader's
open and 20 shuffled batches of 256; verify once. Warm (the store was just written). Printed
and written to OUT.json: store seconds, the best read_many and open seconds, the best images/s
of the batches, verify seconds. Compare versions within one session: this machine is noisy.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    p.add_argument("--n", type=int, default=20_000)
    args = p.parse_args()
    sys.path.insert(0, args.repo)
    import numpy as np
    from imgbench import backends
    from imgbench.data.sample import make_images

    images, labels = make_images(args.n, 0)
    labels = labels % 10  # article-hdf5 keeps uint8 labels
    rng, n, out = np.random.default_rng(0), args.n, {}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for name in backends.names():
            b, path = backends.get(name), Path(tmp) / name
            t = time.perf_counter()
            b.store_many(path, images, labels)
            store = time.perf_counter() - t
            reads, opens, rates = [], [], []
            for _ in range(3):
                t = time.perf_counter()
                b.read_many(path)
                reads.append(time.perf_counter() - t)
                t = time.perf_counter()
                with b.reader(path) as r:
                    r.get_batch([0])
                    opens.append(time.perf_counter() - t)
                    ids = rng.permutation(n)[:256 * 20]
                    t = time.perf_counter()
                    for k in range(20):
                        r.get_batch(ids[k * 256:(k + 1) * 256])
                    rates.append(256 * 20 / (time.perf_counter() - t))
            t = time.perf_counter()
            ok = backends.verify(path).ok
            out[name] = dict(store_s=store, read_many_s=min(reads), open_s=min(opens), batch_images_per_s=max(rates),
                             verify_s=time.perf_counter() - t, verified=ok)
            print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in out[name].items()}, flush=True)
            shutil.rmtree(path)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
