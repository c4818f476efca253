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
the page cache, in one known state) and an untimed pass (a sequential one, whole or WARM_UP
times as long as a timed one, or the same k reads). Cold runs first close every reader (a mapped page cannot be
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
from ..clients.tar import BUFFER
from ..images import image_bytes
from .loader import Loader
from .shuffle import measures
from .rows import VerificationError, _check, _coding, _row, latency_columns
from .timing import disk_usage, evict, machine, settle, timed


def permutation(order: str, n: int, seed: int, repeat: int) -> np.ndarray:
    if order == "sequential":
        return np.arange(n, dtype=np.int64)
    if order == "shuffled":
        return np.random.default_rng([seed, repeat]).permutation(n).astype(np.int64)
    raise ValueError(f"order must be 'sequential' or 'shuffled', got {order!r}")


WARM_UP = 4  # an untimed warm-up pass lasts at most this many timed passes' time


class LeftOut(Exception):
    """A (client, loader) pair that cannot run here, and why."""


def _driver(client: str, kind: str, name: str, b, store: Path, n: int, workers: int, batch_size: int, order: str,
            seed: int, buffer: int, advice: str | None = None):
    """The loader of one (client, loader) pair over the store, its `len` checked against the source."""
    from .. import clients
    from .torch_loader import TorchLoader, available

    if kind.startswith("torch-") and available():
        raise LeftOut(available())
    if kind == "loop" and workers:
        raise LeftOut("a plain loop reads in the main process (0 workers) only")
    if kind == "loop" and client != "imgbench":
        raise LeftOut("it measures imgbench's get_batch without out= (the library in a loop: torch-batch, 0 workers)")
    ds = b.reader(store, advice=advice) if client == "imgbench" else clients.stock(name, store)
    if len(ds) != n:
        raise VerificationError(f"{store} holds {len(ds)} images, the source has {n}")
    shape = ds.store.shape if client == "imgbench" else ds.shape
    ds.close()  # nothing open when workers fork (py-lmdb refuses an environment inherited open)
    if kind == "torch-item" and shape is None:
        raise LeftOut("the default collate stacks a batch's images, and these differ in shape")
    if kind == "imgbench":
        if client != "imgbench":
            raise LeftOut("imgbench's loader reads through imgbench's reader")
        return Loader(ds, workers, batch_size)
    if client == "stock" and ds.streams:  # it orders itself: a pipeline per order
        stream = ds.stream(order == "shuffled", seed, batch_size if kind == "torch-batch" else None, buffer)
        return TorchLoader(stream, workers, batch_size, kind, first_id=ds.first_id, n=n, iterable=True)
    return TorchLoader(ds, workers, batch_size, kind, iterable=False)


def epoch(name: str, options: dict, store: Path, images, labels, workers: int, batch_size: int,
          orders, repeats: int, seed: int, dataset: str, log: Callable[[str], None] = print,
          seconds: float | None = None, expected=None, psnr: float | None = None, client: str = "imgbench",
          loaders=("imgbench",), shuffle_block: int = 10_000, buffer: int = BUFFER, tier=None,
          caches=("warm", "cold")) -> list[dict]:
    """Epochs over the store, each at most `seconds` long (None: whole), read by `client` through
    each of `loaders`: per order, `repeats` warm then `repeats` cold ones (those of `caches`), compared with `expected`
    (default `images`). A pair that cannot run (say PyTorch is missing) is left out with a line.
    In a storage tier (`tier`: a tiers.Session this process has entered) the passes are cold ones
    only, each with the tier's cache limit and its device counters."""
    b, n, store = variant(name, **options), len(images), Path(store)
    common = dict(columns=_coding(b, expected, psnr), pixels=image_bytes(images),
                  images=images if expected is None else expected, labels=labels, usage=disk_usage(store),
                  where=machine(store), name=name, n=n, store=store, dataset=dataset, options=options, log=log,
                  limit=float("inf") if seconds is None else float(seconds), shuffle_block=shuffle_block, tier=tier)
    if tier is None:  # before any reader maps it: a mapped page cannot be evicted (a tier reads cold only)
        settle(store)
    rows = []
    # The loop loader compares get_batch without out= with the imgbench loader's out= path: it reads
    # through that loader's reader right after its warm passes (mapped, warm), warm passes only.
    shared_loop = client == "imgbench" and workers == 0 and "imgbench" in loaders and "loop" in loaders
    for kind in loaders:
        if kind == "loop" and shared_loop:
            continue
        drivers = {}  # one for every order, or one per order for a dataset that orders itself
        def make(order, kind=kind, drivers=drivers):
            # a driver per order for a stock stream (it orders itself) and in a tier, where
            # imgbench's reader is advised how it reads (the store is larger than the cache)
            per_order = (client == "stock" and stock_streams(name)) or tier is not None
            key = order if per_order else None
            if key not in drivers:
                advice = "random" if tier is not None and order == "shuffled" else None
                drivers[key] = _driver(client, kind, name, b, store, n, workers, batch_size, order, seed, buffer,
                                       advice)
                # the sample buffer of a stream that shuffles in one (webdataset; LitData does not)
                buffered = client != "stock" or stock_buffered(name)
                drivers[key].buffer = buffer if key == "shuffled" and buffered else None
                drivers[key].warm = False
            return drivers[key]
        try:
            for cache in [c for c in ("warm", "cold") if c in caches] if tier is None else ("cold",):
                for order in orders:
                    rows += _passes(make(order), cache, order, repeats, seed, client, kind, workers, batch_size,
                                    **common)
                    if shared_loop and kind == "imgbench" and cache == "warm":
                        rows += _passes(_loop_on(make(order), batch_size), cache, order, repeats, seed, client,
                                        "loop", workers, batch_size, **common)
        except LeftOut as e:
            log(f"  epoch {name}: the {client} client through the {kind} loader is left out ({e})")
        finally:
            for d in drivers.values():
                d.close()
    return rows


def _loop_on(driver, batch_size: int):
    """The loop loader over the reader of imgbench's loader (0 workers), already warm; it is not
    closed on its own (the reader is the loader's)."""
    from .torch_loader import TorchLoader

    loop = TorchLoader(driver.reader, 0, batch_size, "loop", iterable=False)
    loop.warm, loop.buffer = True, driver.buffer
    return loop


def _stock(name: str, what: str) -> bool:
    from ..clients import reader_class

    return getattr(reader_class(name), what)


def stock_random_access(name: str) -> bool:
    """Whether the stock reader of backend `name` reads by id (False: it only streams)."""
    return _stock(name, "random_access")


def stock_buffered(name: str) -> bool:
    """Whether the stock reader of backend `name` shuffles its stream in a sample buffer."""
    return _stock(name, "buffered")


def stock_streams(name: str) -> bool:
    """Whether the stock reader of backend `name` reads epochs through its library's own stream."""
    return _stock(name, "streams")


def _passes(loader, cache, order, repeats, seed, client, kind, workers, batch_size, *, columns, pixels, images, labels,
            usage, where, name, n, store, dataset, options, log, limit, shuffle_block, tier=None) -> list[dict]:
    """`repeats` timed passes of one loader in one cache state and order, each verified."""
    rows = []
    if cache == "warm" and not loader.warm:  # untimed: readers open, workers start, code warm
        # and the store's pages mapped into the readers: the first touch of a mapped page costs
        # a fault (dear on a VM), so a warm-up no longer than a timed pass left the first warm
        # passes of fast memory-mapped formats faulting in pages (LMDB 117,000 -> 213,000 images/s
        # over three passes); a whole epoch, or WARM_UP timed passes' time, maps what they read
        if hasattr(loader, "expect"):  # checked as they arrive, as in the timed passes
            loader.expect(images, labels, f"{name} warm-up epoch")
        loader.epoch(permutation("sequential", n, seed, 0), WARM_UP * limit)
        loader.drain()
        loader.check(images, labels, f"{name} warm-up epoch")
        loader.warm = True
    for r in range(1, repeats + 1):
        perm = permutation(order, n, seed, r)
        if cache == "cold":
            loader.close_readers()
            if not (tier.evict if tier is not None else evict)(store):
                log("  this OS cannot evict files from the page cache; skipping cold epochs")
                return rows
        what = f"epoch {name} {client} {kind} workers={workers} {order} {cache} {r}/{repeats}"
        if hasattr(loader, "expect"):  # a DataLoader without workers checks each batch as it arrives
            loader.expect(images, labels, f"{name} {client} {kind} {order} {cache} epoch")
        if tier is not None:
            tier.pass_started(usage["bytes_apparent"])
        with progress.tracking(what, n, log):
            took, peak, before, lat = timed(loader.epoch, perm, limit)
        took -= getattr(loader, "paused", 0.0)  # those checks ran with the clock stopped
        in_tier = tier.pass_ended(took) if tier is not None else {}
        loader.drain()
        got = loader.counted
        shuffle = measures(loader.order[:got], n, shuffle_block)
        loader.check(images, labels, f"{name} {client} {kind} {order} {cache} epoch")
        log(f"{what}: {got:,} images in {took:.3f}s ({got / took:,.0f} images/s), batch p50 "
            f"{np.median(lat) * 1e3:.2f} ms, same block {shuffle['same_block']:.3f} (uniform "
            f"{shuffle['same_block_uniform']:.3f}), distance {shuffle['distance_ratio']:.2f}, verified")
        rows.append(_row("epoch", name, n, r, took, cache, peak, before, usage, True, dataset, options, where,
                         pixels, images=got, order=order, client=client, loader=kind, workers=workers,
                         batch_size=batch_size, shuffle_buffer=loader.buffer, **shuffle, **latency_columns(lat),
                         **columns, **in_tier))
    return rows


def random_read(name: str, options: dict, store: Path, images, labels, k: int, repeats: int, seed: int,
                dataset: str, log: Callable[[str], None] = print, expected=None,
                psnr: float | None = None, client: str = "imgbench", tier=None,
                seconds: float | None = None) -> list[dict]:
    """`k` single reads of random ids through one open reader of `client` (with `seconds`, those
    made in that long, at least RANDOM_LEAST): `repeats` warm, then `repeats` cold (in a tier,
    cold only), each compared with `expected` (default `images`). None for a stock client that
    only streams (it has no random access), with a line."""
    limit = None if seconds is None else float(seconds)
    from .. import clients

    b, n, store = variant(name, **options), len(images), Path(store)
    columns = _coding(b, expected, psnr)
    pixels = image_bytes(images)
    images = images if expected is None else expected
    usage, where, rows = disk_usage(store), machine(store), []
    if client == "stock" and not stock_random_access(name):
        log(f"  random_read {name}: the stock client is left out (its library streams: no random access by id)")
        return rows
    if tier is None:  # a tier's reads are cold only: warming the store would read it through the tier's limits
        settle(store)
    advice = "random" if tier is not None else None  # in a tier: only the pages touched
    with (b.reader(store, advice=advice) if client == "imgbench" else clients.stock(name, store)) as reader:
        if len(reader) != n:
            raise VerificationError(f"{store} holds {len(reader)} images, the source has {n}")
        for cache in ("warm", "cold") if tier is None else ("cold",):
            for r in range(1, repeats + 1):
                ids = np.random.default_rng([seed, r]).integers(0, n, k).tolist()
                if cache == "warm":
                    for i in ids:  # untimed: the same reads once, so the pages are cached
                        reader[i]
                else:
                    reader.close()
                    if not (tier.evict if tier is not None else evict)(store):
                        log("  this OS cannot evict files from the page cache; skipping cold reads")
                        break
                    len(reader)  # opened again, untimed: a training process opens once
                if tier is not None:
                    tier.pass_started(usage["bytes_apparent"])
                seconds, peak, before, (lat, got) = timed(_reads, reader, ids, limit)
                in_tier = tier.pass_ended(float(np.sum(lat))) if tier is not None else {}
                for i, (image, label) in zip(ids, got):
                    _check(f"{name} {client} random read of id {i}", image, images[i])
                    if label != labels[i]:
                        raise VerificationError(f"{name} {client} random read of id {i}: label {label}, "
                                                f"wrote {labels[i]}")
                del got
                stats = latency_columns(lat)
                log(f"random_read {name} {client} {cache} {r}/{repeats}: {len(lat)} reads, p50 "
                    f"{stats['p50_ms'] * 1e3:.1f} us, p99 {stats['p99_ms'] * 1e3:.1f} us, verified")
                rows.append(_row("random_read", name, n, r, float(np.sum(lat)), cache, peak, before, usage, True,
                                 dataset, options, where, pixels, images=len(lat), k=k, client=client, **stats, **columns,
                                 **in_tier))
    return rows


RANDOM_LEAST = 50  # a time-limited repeat of random reads still makes this many


def _reads(reader, ids, seconds: float | None = None) -> tuple[np.ndarray, list]:
    """reader[i] for each of `ids`, or (with `seconds`) those read in that long, at least RANDOM_LEAST."""
    lat, got, clock = np.empty(len(ids)), [], time.perf_counter
    start = clock()
    for j, i in enumerate(ids):
        t = clock()
        got.append(reader[i])
        lat[j] = clock() - t
        if seconds is not None and j + 1 >= RANDOM_LEAST and lat[j] + t - start >= seconds:
            return lat[:j + 1], got
    return lat, got
