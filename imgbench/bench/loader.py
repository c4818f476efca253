"""imgbench's own loader: batches of one store read by forked worker processes (or the caller).

It does what PyTorch's DataLoader does with `persistent_workers=True` and a batch sampler, with
its own transport, chosen for speed: the workers are forked once and kept for every epoch, each
holding the Reader it inherited, which opens the store again in the worker. Batch b goes to
worker b % workers with `PREFETCH` batches in flight per worker (DataLoader's
`prefetch_factor`), requested by its number over a pipe (one 8-byte message each way). The
worker reads the batch straight into an anonymous shared-memory buffer laid out in epoch order
(a preallocated `out=` for `Reader.get_batch`) and answers with the number; the parent takes
batches in order, and a batch's pixels are in the parent the moment its answer arrives: nothing
is pickled or copied on the way. With 0 workers the parent reads into a buffer of its own.

Its figures are what a tuned loader reaches, not what PyTorch's DataLoader gives.
"""
from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import time
import traceback

import numpy as np

from .. import progress
from ..images import ImageList
from .rows import _check

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
