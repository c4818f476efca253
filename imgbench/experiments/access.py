"""What training does with a store: epochs of batches from worker processes, and random single reads.

epoch: the images of a store in batches of `batch_size`, in `sequential` or `shuffled` order (a
fresh permutation of the whole store per repeat, from the seed and the repeat number), read by
`workers` processes that deliver batches to the parent as PyTorch DataLoader workers do; with 0
workers the parent reads them itself. A timed pass is the whole epoch, or as much of it as
`seconds` allows (the batch that crosses the limit is the last counted; the rate is images
counted / time), so formats that decode slowly are measured on a slice of the epoch instead of
costing minutes per pass. The clock runs from the first request to the arrival of the last
counted batch in the parent; each batch's latency runs from its request to its arrival.

Transport (chosen for speed; DataLoader's own is alike): the workers are forked once per job and
kept for every epoch (DataLoader's `persistent_workers=True`), each holding the Reader it
inherited, which opens the store again in the worker. Batch b goes to worker b % workers with
`PREFETCH` batches in flight per worker (DataLoader's `prefetch_factor`), requested by its
number over a pipe (one 8-byte message each way). The worker reads the batch straight into an anonymous shared-memory buffer
laid out in epoch order and answers with the number; the parent takes batches in order, and a
batch's pixels are in the parent the moment its answer arrives: nothing is pickled or copied
on the way. With 0 workers the parent reads into a buffer of its own. Every batch is compared
with the source after the clock stops.

random_read: `k` single images of random ids (from the seed and the repeat) read one at a time
through one open reader, each timed on its own.

Warm runs follow evicting the store and reading every byte of it (bench.settle: all of it in
the page cache, in one known state) and an untimed pass (a sequential one as long as a timed
one, or the same k reads). Cold runs first close every reader (a mapped page cannot be
evicted) and evict the store's files from the page cache; the readers then open again on their first read, which is part of the cold epoch (as in a fresh
training process) but not of the cold random reads (the reader is opened, untimed, first).
"""
from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

from .. import progress
from ..backends import variant
from ..bench import disk_usage, evict, machine, settle, timed
from ..images import ImageList, image_bytes
from .common import VerificationError, _check, _row, latency_columns
from .many import _coding

PREFETCH = 2
MIN_BATCHES = 8  # a time-limited pass still counts this many batches, so filling the pipeline is a small part of it
CHECK_ROWS = 8192  # rows compared at a time, so verification needs no second copy of the store


def _shared(shape, dtype) -> np.ndarray:
    """An array in anonymous shared memory: a forked child writes it, the parent sees it."""
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype, int(np.prod(shape))).reshape(shape)


# Messages are one signed 64-bit number each way over a pair of pipes per worker: a batch number
# (request, and its answer once read), or one of these. One system call per message.
MSG = struct.Struct("<q")
STOP, CLOSE, ERROR = -1, -2, -3


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = os.read(fd, n - len(data))
        if not more:
            raise EOFError("the other end of the pipe closed")
        data += more
    return data


class _Room:
    """Where batches go: rows of an (n, H, W, C) array, or for images of different shapes, places
    in one flat buffer laid out in the epoch's order (offsets and shapes set per epoch)."""

    def __init__(self, out: np.ndarray, offsets: np.ndarray | None = None, shapes: np.ndarray | None = None):
        self.out, self.offsets, self.shapes = out, offsets, shapes

    def __getitem__(self, s: slice):
        if self.offsets is None:
            return self.out[s]
        return ImageList(self.out, self.offsets[s], self.shapes[s])


def _work(reader, req: int, ans: int, out, labels, order, batch_size) -> None:
    """A worker's loop: read the batches it is asked for into the shared buffers."""
    while True:
        try:
            b = MSG.unpack(_read_exact(req, MSG.size))[0]
        except EOFError:  # the parent is gone
            break
        if b == STOP:
            break
        try:
            if b == CLOSE:
                reader.close()
            else:
                s = b * batch_size
                e = min(s + batch_size, len(order))
                labels[s:e] = reader.get_batch(order[s:e], out=out[s:e])[1]
            os.write(ans, MSG.pack(b))
        except BaseException as exc:  # the parent raises it, naming the batch
            text = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}".encode()
            os.write(ans, MSG.pack(ERROR) + MSG.pack(len(text)) + text)
    reader.close()


class Loader:
    """Batches of one store, read by `workers` forked processes (or the caller with 0)."""

    def __init__(self, reader, workers: int, batch_size: int):
        self.reader, self.workers, self.batch_size = reader, workers, batch_size
        n, shape = len(reader), reader.store.shape
        self.n = n
        self.batches = -(-n // batch_size)
        shared = workers > 0
        alloc = _shared if shared else (lambda shape, dtype: np.empty(shape, dtype))
        self.shapes = None
        if shape is None:  # images of different shapes: one flat buffer, laid out per epoch
            self.shapes = reader._open().shapes_of(np.arange(n))
            self.sizes = self.shapes.prod(axis=1)
            self.out = alloc((int(self.sizes.sum()),), np.uint8)
            self.room = _Room(self.out, alloc((n,), np.int64), alloc((n, 3), np.int64))
        else:
            self.out = alloc((n, *shape), np.uint8)
            self.room = _Room(self.out)
        self.labels = alloc((n,), np.int64)
        self.order = alloc((n,), np.int64)
        self.req, self.ans, self.procs = [], [], []
        self.counted, self.pending = 0, []  # images the last epoch counted; batches it left in flight
        # Every page of the buffers mapped now, off the clock: a time-limited pass reaches parts of
        # them no earlier pass touched, and a first touch (a host fault per page on a VM) is not a read.
        for a in (self.out, self.labels, self.order, self.room.offsets, self.room.shapes):
            if a is not None:
                a.reshape(-1).view(np.uint8)[::mmap.PAGESIZE] = 0
        if shared:
            reader.close()  # forked children open their own; the parent keeps nothing mapped
            pipes = [(os.pipe(), os.pipe()) for _ in range(workers)]
            ctx = multiprocessing.get_context("fork")
            for w, ((req_r, req_w), (ans_r, ans_w)) in enumerate(pipes):
                # every end but the worker's own two is closed in it, so it sees EOF if the parent dies
                others = [fd for pair in pipes for fds in pair for fd in fds if fd not in (req_r, ans_w)]
                p = ctx.Process(target=_child, args=(others, reader, req_r, ans_w, self.room, self.labels, self.order,
                                                     batch_size), daemon=True)
                p.start()
                self.procs.append(p)
            for (req_r, req_w), (ans_r, ans_w) in pipes:
                os.close(req_r)
                os.close(ans_w)
                self.req.append(req_w)
                self.ans.append(ans_r)

    def _send(self, w: int, msg: int) -> None:
        os.write(self.req[w], MSG.pack(msg))

    def _answer(self, w: int, expected: int) -> None:
        got = MSG.unpack(_read_exact(self.ans[w], MSG.size))[0]
        if got != expected:
            err = "an unexpected answer"
            if got == ERROR:
                size = MSG.unpack(_read_exact(self.ans[w], MSG.size))[0]
                err = _read_exact(self.ans[w], size).decode(errors="replace")
            what = f"batch {expected}" if expected >= 0 else "closing its reader"
            raise RuntimeError(f"epoch worker {w} failed on {what}: {err}")

    def epoch(self, order: np.ndarray, seconds: float = float("inf")) -> np.ndarray:
        """Read the images in `order` in batches until all are read or `seconds` have passed and
        at least MIN_BATCHES were counted (the batch that crosses the limit counts); the latency
        of each batch counted, in seconds.
        Batches still in flight at the limit are left for `drain` (after the clock stops)."""
        self.order[:] = order
        if self.shapes is not None:  # each image's place in the flat buffer, in this order
            sizes = self.sizes[order]
            self.room.offsets[:] = np.cumsum(sizes) - sizes
            self.room.shapes[:] = self.shapes[order]
        bs, nb, W = self.batch_size, self.batches, self.workers
        lat = np.empty(nb)
        report = progress.current()  # a line every few seconds of a long epoch, if tracked
        clock = time.perf_counter
        start = clock()
        if W == 0:
            r, out, labels = self.reader, self.room, self.labels
            for b in range(nb):
                t = clock()
                s, e = b * bs, min(b * bs + bs, self.n)
                labels[s:e] = r.get_batch(self.order[s:e], out=out[s:e])[1]
                lat[b] = clock() - t
                if report is not None:
                    report.update(e)
                if lat[b] + t - start >= seconds and b + 1 >= MIN_BATCHES:
                    nb = b + 1
                    break
            self.counted = min(nb * bs, self.n)
            return lat[:nb]
        sent = np.empty(nb)
        ahead = min(nb, W * PREFETCH)
        for b in range(ahead):
            sent[b] = clock()
            self._send(b % W, b)
        last = ahead - 1
        for b in range(nb):
            self._answer(b % W, b)
            now = clock()
            lat[b] = now - sent[b]
            if report is not None:
                report.update(min(b * bs + bs, self.n))
            if now - start >= seconds and b + 1 >= MIN_BATCHES:  # later requests are read but not counted
                self.pending = list(range(b + 1, last + 1))
                nb = b + 1
                break
            nxt = b + ahead
            if nxt < nb:  # the worker that just delivered takes the next batch in its turn
                sent[nxt] = clock()
                self._send(nxt % W, nxt)
                last = nxt
        self.counted = min(nb * bs, self.n)
        return lat[:nb]

    def drain(self) -> None:
        """Take the answers to batches requested but not counted, so the next epoch starts clean."""
        for b in self.pending:
            self._answer(b % self.workers, b)
        self.pending = []

    def close_readers(self) -> None:
        """Every process closes its reader (they reopen on the next batch)."""
        self.reader.close()
        for w in range(self.workers):
            self._send(w, CLOSE)
        for w in range(self.workers):
            self._answer(w, CLOSE)

    def check(self, images, labels, what: str) -> None:
        """Compare the images the last epoch counted with the source."""
        ragged = isinstance(images, ImageList)
        if not ragged:
            expected = np.empty((min(CHECK_ROWS, self.n), *images.shape[1:]), images.dtype)
        for s in range(0, self.counted, CHECK_ROWS):
            e = min(s + CHECK_ROWS, self.counted)
            idx = self.order[s:e]
            if ragged:
                _check(what, self.room[s:e], images[idx])
            else:
                np.take(images, idx, axis=0, out=expected[:e - s])
                _check(what, self.out[s:e], expected[:e - s])
            _check(f"{what} labels", self.labels[s:e], labels[idx])

    def close(self) -> None:
        for fd in self.req:
            try:
                os.write(fd, MSG.pack(STOP))
            except OSError:
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        for fd in self.req + self.ans:
            os.close(fd)
        self.req, self.ans, self.procs = [], [], []
        self.reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _child(others, *args) -> None:
    for fd in others:
        os.close(fd)
    _work(*args)


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
