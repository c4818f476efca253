"""What training does with a store: epochs of batches from worker processes, and random single reads.

epoch: the images of a store in batches of `batch_size`, in `sequential` or `shuffled` order (a
fresh permutation of the whole store per repeat, from the seed and the repeat number), read by
`workers` processes that deliver batches to the parent as PyTorch DataLoader workers do; with 0
workers the parent reads them itself. A timed pass is the whole epoch, or as much of it as
`seconds` allows (the batch that crosses the limit is the last counted; the rate is images
counted / time), so formats that decode slowly are measured on a slice of the epoch instead of
costing minutes per pass. The clock runs from the first request to the arrival of the last
counted batch in the parent; each batch's latency runs from its request to its arrival.

The batches go through imgbench's own loader (loader.py: forked workers, pipes, preallocated
shared buffers), not PyTorch's DataLoader. Every batch is compared with the source after the
clock stops.

random_read: `k` single images of random ids (from the seed and the repeat) read one at a time
through one open reader, each timed on its own.

Warm runs follow evicting the store and reading every byte of it (bench.settle: all of it in
the page cache, in one known state) and an untimed pass (a sequential one as long as a timed
one, or the same k reads). Cold runs first close every reader (a mapped page cannot be
evicted) and evict the store's files from the page cache; the readers then open again on their first read, which is part of the cold epoch (as in a fresh
training process) but not of the cold random reads (the reader is opened, untimed, first).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import progress
from ..backends import variant
from ..images import image_bytes
from .loader import Loader
from .rows import VerificationError, _check, _coding, _row, latency_columns
from .timing import disk_usage, evict, machine, settle, timed


def permutation(order: str, n: int, seed: int, repeat: int) -> np.ndarray:
    if order == "sequential":
        return np.arange(n, dtype=np.int64)
    if order == "shuffled":
        return np.random.default_rng([seed, repeat]).permutation(n).astype(np.int64)
    raise ValueError(f"order must be 'sequential' or 'shuffled', got {order!r}")


def epoch(name: str, options: dict, store: Path, images, labels, workers: int, batch_size: int,
          orders, repeats: int, seed: int, dataset: str, log: Callable[[str], None] = print,
          seconds: float | None = None, expected=None, psnr: float | None = None) -> list[dict]:
    """Epochs over the store, each at most `seconds` long (None: whole): per order, `repeats`
    warm then `repeats` cold ones, compared with `expected` (default `images`)."""
    limit = float("inf") if seconds is None else float(seconds)
    b, n, store = variant(name, **options), len(images), Path(store)
    columns = _coding(b, expected, psnr)
    pixels = image_bytes(images)
    images = images if expected is None else expected
    usage, where, rows = disk_usage(store), machine(store), []
    settle(store)  # before any reader maps it: a mapped page cannot be evicted
    reader = b.reader(store)
    if len(reader) != n:
        raise VerificationError(f"{store} holds {len(reader)} images, the source has {n}")
    extra = dict(workers=workers, batch_size=batch_size)
    with Loader(reader, workers, batch_size) as loader:
        loader.epoch(permutation("sequential", n, seed, 0), limit)  # untimed: readers open, code warm
        loader.drain()
        loader.check(images, labels, f"{name} warm-up epoch")
        for cache in ("warm", "cold"):
            for order in orders:
                for r in range(1, repeats + 1):
                    perm = permutation(order, n, seed, r)
                    if cache == "cold":
                        loader.close_readers()
                        if not evict(store):
                            log("  this OS cannot evict files from the page cache; skipping cold epochs")
                            return rows
                    with progress.tracking(f"epoch {name} workers={workers} {order} {cache} {r}/{repeats}", n, log):
                        took, peak, before, lat = timed(loader.epoch, perm, limit)
                    loader.drain()
                    got = loader.counted
                    loader.check(images, labels, f"{name} {order} {cache} epoch")
                    log(f"epoch {name} workers={workers} {order} {cache} {r}/{repeats}: {got:,} images in "
                        f"{took:.3f}s ({got / took:,.0f} images/s), batch p50 {np.median(lat) * 1e3:.2f} ms, verified")
                    rows.append(_row("epoch", name, n, r, took, cache, peak, before, usage, True, dataset,
                                     options, where, pixels, images=got, order=order, **extra,
                                     **latency_columns(lat), **columns))
    return rows


def random_read(name: str, options: dict, store: Path, images, labels, k: int, repeats: int, seed: int,
                dataset: str, log: Callable[[str], None] = print, expected=None,
                psnr: float | None = None) -> list[dict]:
    """`k` single reads of random ids through one open reader: `repeats` warm, then `repeats` cold,
    each compared with `expected` (default `images`)."""
    b, n, store = variant(name, **options), len(images), Path(store)
    columns = _coding(b, expected, psnr)
    pixels = image_bytes(images)
    images = images if expected is None else expected
    usage, where, rows = disk_usage(store), machine(store), []
    settle(store)
    with b.reader(store) as reader:
        if len(reader) != n:
            raise VerificationError(f"{store} holds {len(reader)} images, the source has {n}")
        for cache in ("warm", "cold"):
            for r in range(1, repeats + 1):
                ids = np.random.default_rng([seed, r]).integers(0, n, k).tolist()
                if cache == "warm":
                    for i in ids:  # untimed: the same reads once, so the pages are cached
                        reader[i]
                else:
                    reader.close()
                    if not evict(store):
                        log("  this OS cannot evict files from the page cache; skipping cold reads")
                        break
                    len(reader)  # opened again, untimed: a training process opens once
                seconds, peak, before, (lat, got) = timed(_reads, reader, ids)
                for i, (image, label) in zip(ids, got):
                    _check(f"{name} random read of id {i}", image, images[i])
                    if label != labels[i]:
                        raise VerificationError(f"{name} random read of id {i}: label {label}, wrote {labels[i]}")
                del got
                stats = latency_columns(lat)
                log(f"random_read {name} {cache} {r}/{repeats}: {k} reads, p50 {stats['p50_ms'] * 1e3:.1f} us, "
                    f"p99 {stats['p99_ms'] * 1e3:.1f} us, verified")
                rows.append(_row("random_read", name, n, r, float(np.sum(lat)), cache, peak, before, usage, True,
                                 dataset, options, where, pixels, images=k, k=k, **stats, **columns))
    return rows


def _reads(reader, ids) -> tuple[np.ndarray, list]:
    lat, got, clock = np.empty(len(ids)), [], time.perf_counter
    for j, i in enumerate(ids):
        t = clock()
        got.append(reader[i])
        lat[j] = clock() - t
    return lat, got
