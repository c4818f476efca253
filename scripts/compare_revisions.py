#!/usr/bin/env python3
"""Time the same backends with this checkout's code and with an earlier revision's, in one run:
rounds alternate the two (bench_backends.py of each, as its own process), so both see the same
machine, and each reports against np.save / np.load timed in the same process.

    python scripts/compare_revisions.py --baseline 3803414 --images data/sample/images_100000.npy \
        --backends npy hdf5 lmdb zarr tar:encoding=raw parquet:encoding=raw

The baseline is exported with `git archive` into a temporary directory (nothing of this checkout
changes). Printed: per backend, the median over rounds of each side's median store and warm read
seconds, and new / old (below 1: faster now).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| (\S+) \| ([\d.]+) \([^)]*\) \| [\d.]+ \| ([\d.]+) \(")


def export(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(HERE), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as t:
        t.extractall(into, filter="data")
    return into


def bench(tree: Path, args) -> dict[str, tuple[float, float]]:
    cmd = [sys.executable, str(tree / "scripts/bench_backends.py"), "--images", str(args.images.resolve()),
           "--n", str(args.n), "--repeats", str(args.repeats), "--no-epochs", "--backends", *args.backends]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tree).stdout
    rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in map(ROW.match, out.splitlines()) if m}
    if not rows:
        sys.exit(f"no results from {tree}:\n{out[-2000:]}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the earlier revision (any git rev)")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--backends", nargs="+", required=True)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imgbench-baseline-") as tmp:
        old = export(args.baseline, Path(tmp))
        runs = {"old": [], "new": []}
        for r in range(args.rounds):
            for side, tree in (("old", old), ("new", HERE)):
                runs[side].append(bench(tree, args))
                print(f"round {r + 1}/{args.rounds} {side}: "
                      + ", ".join(f"{k} {s:.3f}/{rd:.3f}s" for k, (s, rd) in runs[side][-1].items()), flush=True)
    print(f"\n## this checkout against {args.baseline}: n = {args.n}, medians of {args.rounds} rounds of "
          f"{args.repeats} repeats each\n")
    print("| backend | store old | store new | new / old | read warm old | read warm new | new / old |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in runs["new"][0]:
        o = [statistics.median(run[key][i] for run in runs["old"]) for i in (0, 1)]
        n = [statistics.median(run[key][i] for run in runs["new"]) for i in (0, 1)]
        print(f"| {key} | {o[0]:.3f} | {n[0]:.3f} | {n[0] / o[0]:.2f} | {o[1]:.3f} | {n[1]:.3f} | {n[1] / o[1]:.2f} |")


if __name__ == "__main__":
    main()
