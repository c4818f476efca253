#!/usr/bin/env python3
"""Time store_many / read_many of N images per backend, warm cache, median of repeats.

With --reference PATH (the article's published code, run as its own program, never imported),
the article's code is run first on this machine; its 100,000 images (it saves them as .npy)
are then the very images our backends store and read, so both sides time the same data in
the same run. Prints a table of medians and the article/ours ratios.

    python scripts/bench_backends.py --reference ../shared/anchors/seed_reference.py --n 100000
    python scripts/bench_backends.py --images data/sample/images_100000.npy --n 100000
"""
from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgbench import experiments  # noqa: E402
from imgbench.bench import machine, timed  # noqa: E402


def run_reference(ref: Path, work: Path, n: int, repeats: int) -> tuple[dict, Path]:
    """Median store/read seconds per method over `repeats` runs of the article's script.

    Each run gets a fresh directory and nothing is deleted until the end: on ext4 without a
    journal, creating files soon after deleting many is slow (inodes freed in the last minutes
    are skipped), which doubled the article's disk store time when a run reused the last one's
    directory.
    """
    runs: dict[str, dict[str, list]] = {}
    for r in range(repeats):
        out_dir = work / f"ref{r + 1}"
        out = subprocess.run([sys.executable, str(ref), str(out_dir), str(n)],
                             check=True, capture_output=True, text=True).stdout
        rows = csv.DictReader(io.StringIO("\n".join(x for x in out.splitlines() if not x.startswith("#"))))
        for row in rows:
            m = runs.setdefault(row["method"], {"store": [], "read": [], "bytes": []})
            m["store"].append(float(row["store_s"]))
            m["read"].append(float(row["read_s"]))
            m["bytes"].append(int(row["bytes"]))
        print(f"  article's code, run {r + 1}/{repeats}: "
              + ", ".join(f"{k} {v['store'][-1]:.2f}/{v['read'][-1]:.2f}s" for k, v in runs.items()), flush=True)
    return runs, out_dir


def bench_ours(name: str, opts: dict, images, labels, work: Path, repeats: int) -> dict:
    """The workflow's own method (warm-up store, sync, verified repeats, warm then cold reads)."""
    out = work / "ours" / (name + ("-" + "-".join(opts) if opts else ""))
    stores = experiments.store_many(name, opts, images, labels, out, repeats, "bench", log=_quiet,
                                    trash=work / "trash")
    reads = experiments.read_many(name, opts, out, images, labels, repeats, "bench", log=_quiet)
    store_s = [r["seconds"] for r in stores]
    warm = [r["seconds"] for r in reads if r["cache"] == "warm"]
    cold = [r["seconds"] for r in reads if r["cache"] == "cold"]
    print(f"  ours {name}{opts or ''}: store {spread(store_s)}s, read warm {spread(warm)}s, "
          f"cold {spread(cold) if cold else '-'}s", flush=True)
    return {"store": store_s, "read": warm, "cold": cold, "bytes": [stores[-1]["bytes_apparent"]]}


def _quiet(msg):
    pass


def bench_npload(images, work: Path, repeats: int) -> list[float]:
    f = work / "ours" / "npy" / "images.npy"
    f.parent.mkdir(parents=True, exist_ok=True)
    np.save(f, images)
    np.load(f)
    return [timed(np.load, f)[0] for _ in range(repeats)]


def med(xs):
    return statistics.median(xs)


def spread(xs):
    return f"{med(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--repeats", type=int, default=5, help="repeats of our code (median reported)")
    ap.add_argument("--reference-repeats", type=int, default=3, help="runs of the article's code")
    ap.add_argument("--reference", type=Path, help="the article's code (seed_reference.py), run as a program")
    ap.add_argument("--images", type=Path, help="an images .npy (with labels_*.npy beside it) when no reference")
    ap.add_argument("--workdir", type=Path, help="where stores go (default: a temporary directory)")
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="imgbench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# machine: {machine(work)}", flush=True)
    ref = None
    if args.reference:
        print(f"# running the article's code {args.reference_repeats}x at n={args.n}", flush=True)
        ref, last = run_reference(args.reference.resolve(), work, args.n, args.reference_repeats)
        src = last / "npy" / str(args.n)
        images, labels = np.load(src / "images.npy"), np.load(src / "labels.npy")
    elif args.images:
        images = np.load(args.images)[: args.n]
        labels = np.load(args.images.with_name(args.images.name.replace("images", "labels")))[: args.n]
    else:
        ap.error("give --reference or --images")
    images = np.ascontiguousarray(images)

    variants = [("disk", {}), ("lmdb", {}), ("lmdb", {"fsync": True}), ("hdf5", {})]
    ours = {}
    for name, opts in variants:
        key = name + ("+fsync" if opts else "")
        ours[key] = bench_ours(name, opts, images, labels, work, args.repeats)
    npload = bench_npload(images, work, args.repeats)

    print(f"\n## n = {args.n}, warm reads; seconds as median (min-max); "
          f"ours {args.repeats} repeats, article {args.reference_repeats} runs\n")
    print("| backend | article store | ours store | store ratio | article read | ours read | read ratio | MB ours / article |")
    print("|---|---|---|---|---|---|---|---|")
    for key, o in ours.items():
        r = ref.get(key.split("+")[0]) if ref else None
        if r:
            print(f"| {key} | {spread(r['store'])} | {spread(o['store'])} | {med(r['store']) / med(o['store']):.1f}x "
                  f"| {spread(r['read'])} | {spread(o['read'])} | {med(r['read']) / med(o['read']):.1f}x "
                  f"| {o['bytes'][0] / 1e6:.0f} / {r['bytes'][0] / 1e6:.0f} |")
        else:
            print(f"| {key} | | {spread(o['store'])} | | | {spread(o['read'])} | | {o['bytes'][0] / 1e6:.0f} |")
    print(f"\nnp.load of the same array: {spread(npload)} s; "
          f"hdf5 read / np.load = {med(ours['hdf5']['read']) / med(npload):.2f}")
    print("cold reads (ours): " + ", ".join(f"{k} {spread(o['cold'])}s" for k, o in ours.items() if o["cold"]))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(stores left in {work}; delete it when done)")


if __name__ == "__main__":
    main()
