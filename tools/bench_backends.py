#!/usr/bin/env python3
"""Time every backend on the same N images against the limits, in one run: store_many /
read_many (warm and cold), np.save / np.load of the same array, and one epoch in the main
process (batches of 256, sequential and shuffled, warm), medians of repeats.

With --reference PATH (the article's published code, run as its own program, never imported),
the article's code is run first on this machine; its 100,000 images (it saves them as .npy)
are then the very images our backends store and read, so both sides time the same data in
the same run, and the article-* backends are compared with the code they reproduce.

    python tools/bench_backends.py --reference ../shared/anchors/seed_reference.py --n 100000
    python tools/bench_backends.py --images data/sample/images_100000.npy --n 100000
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

from imgbench import backends  # noqa: E402
from imgbench.bench import access, many  # noqa: E402
from imgbench.bench.timing import machine, timed  # noqa: E402


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


def _store_dir(work: Path, name: str, opts: dict) -> Path:
    return work / "ours" / (name + "".join(f"-{k}={v}" for k, v in opts.items()))


def bench_ours(name: str, opts: dict, images, labels, work: Path, repeats: int) -> dict:
    """The workflow's own method (warm-up store, sync, verified repeats, warm then cold reads)."""
    out = _store_dir(work, name, opts)
    stores = many.store_many(name, opts, images, labels, out, repeats, "bench", log=_quiet,
                             trash=work / "trash")
    reads = many.read_many(name, opts, out, images, labels, repeats, "bench", log=_quiet)
    store_s = [r["seconds"] for r in stores]
    warm = [r["seconds"] for r in reads if r["cache"] == "warm"]
    cold = [r["seconds"] for r in reads if r["cache"] == "cold"]
    print(f"  ours {name}{opts or ''}: store {spread(store_s)}s, read warm {spread(warm)}s, "
          f"cold {spread(cold) if cold else '-'}s", flush=True)
    return {"store": store_s, "read": warm, "cold": cold, "bytes": [stores[-1]["bytes_apparent"]]}


def bench_epochs(name: str, opts: dict, images, labels, work: Path, repeats: int) -> dict:
    """One epoch in the main process (workers 0, batch 256), sequential and shuffled, warm."""
    out = _store_dir(work, name, opts)
    rows = access.epoch(name, opts, out, images, labels, 0, 256, ["sequential", "shuffled"], repeats, 0,
                        "bench", log=_quiet)
    got = {o: [len(images) / r["seconds"] for r in rows if r["order"] == o and r["cache"] == "warm"]
           for o in ("sequential", "shuffled")}
    print(f"  epoch {name}{opts or ''}: sequential {med(got['sequential']):,.0f}, "
          f"shuffled {med(got['shuffled']):,.0f} images/s", flush=True)
    return got


def _quiet(msg):
    pass


def bench_np(images, work: Path, repeats: int) -> tuple[list[float], list[float]]:
    """np.save into fresh files (after one untimed save, with sync before each) and warm np.load."""
    import os

    d = work / "ours" / "np"
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "warmup.npy", images)
    saves = []
    for r in range(repeats):  # into recycled page cache, as the workflow's stores of few files
        (d / ("warmup.npy" if r == 0 else f"images{r - 1}.npy")).unlink()
        os.sync()
        saves.append(timed(np.save, d / f"images{r}.npy", images)[0])
    last = d / f"images{repeats - 1}.npy"
    np.load(last)
    return saves, [timed(np.load, last)[0] for _ in range(repeats)]


def _variant(text: str) -> tuple[str, dict]:
    """'parquet:encoding=raw,row_group=500' -> ('parquet', {'encoding': 'raw', 'row_group': 500})."""
    import yaml

    name, _, rest = text.partition(":")
    opts = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        opts[key] = yaml.safe_load(value)
    return name, opts


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
    ap.add_argument("--backends", nargs="*", help="backends to time, each NAME or NAME:KEY=VALUE,… "
                    "(e.g. parquet:encoding=raw; default: every one, and a few variants)")
    ap.add_argument("--no-epochs", action="store_true", help="skip the epochs")
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

    variants = [_variant(b) for b in (args.backends or backends.names())]
    if not args.backends:
        variants += [("lmdb", {"fsync": True}), ("parquet", {"encoding": "raw"}), ("tar", {"encoding": "raw"})]
    ours, epochs = {}, {}
    for name, opts in variants:
        key = name + "".join(f"+{k}={v}" for k, v in opts.items())
        ours[key] = bench_ours(name, opts, images, labels, work, args.repeats)
        if not args.no_epochs and "fsync" not in opts:
            epochs[key] = bench_epochs(name, opts, images, labels, work, args.repeats)
    saves, loads = bench_np(images, work, args.repeats)

    print(f"\n## n = {args.n}; seconds as median (min-max); ours {args.repeats} repeats, "
          f"article {args.reference_repeats} runs\n")
    print(f"np.save of the same array: {spread(saves)} s; np.load: {spread(loads)} s\n")
    print("| backend | store | store / np.save | read warm | read / np.load | read cold | MB | "
          "epoch seq. img/s | epoch shuffled img/s | shuffled / seq. |")
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|")
    for key, o in ours.items():
        e = epochs.get(key)
        ep = (f"{med(e['sequential']):,.0f} | {med(e['shuffled']):,.0f} | "
              f"{med(e['shuffled']) / med(e['sequential']):.2f}") if e else " | | "
        print(f"| {key} | {spread(o['store'])} | {med(o['store']) / med(saves):.2f} | {spread(o['read'])} | "
              f"{med(o['read']) / med(loads):.2f} | {spread(o['cold']) if o['cold'] else '-'} | "
              f"{o['bytes'][0] / 1e6:.0f} | {ep} |")
    if "tar" in ours and "disk" in ours:
        print(f"\ntar (PNG) against disk (PNG, same compress level): store {med(ours['disk']['store']) / med(ours['tar']['store']):.2f}x "
              f"faster, cold read {med(ours['disk']['cold']) / med(ours['tar']['cold']):.2f}x faster")
    if ref:
        print("\n| method | article's code store | ours | store ratio | article's code read | ours | read ratio |")
        print("|---|---|---|---:|---|---|---:|")
        for key, o in ours.items():
            name = key.split("+")[0]
            r = ref.get(name.removeprefix("article-"))
            if r and (name.startswith("article-") or name in ("disk", "lmdb", "hdf5")) and "+" not in key:
                print(f"| {key} | {spread(r['store'])} | {spread(o['store'])} | {med(r['store']) / med(o['store']):.2f} "
                      f"| {spread(r['read'])} | {spread(o['read'])} | {med(r['read']) / med(o['read']):.2f} |")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(stores left in {work}; delete it when done)")


if __name__ == "__main__":
    main()
