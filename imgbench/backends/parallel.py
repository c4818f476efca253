"""Coding in forked worker processes: images encoded, decoded or checked a piece each.

The parent puts what the workers need in `job` just before forking; children inherit it, so
arrays are never pickled between processes. A worker opens the store once (`handle()`) and keeps
it for all its pieces. Results come back through the pool, or through shared memory the parent
allocated (`allocate(..., shared=True)`).
"""
from __future__ import annotations

import mmap
import multiprocessing
import os
import warnings
import pickle
import select
import signal

import numpy as np

from .. import progress
from ..images import ImageList

PARALLEL_MIN = 256  # below this many images, starting processes costs more than it saves

# What a forked worker of `run` uses; set in the parent just before the fork.
job: dict = {}
_handles: dict = {}  # pid -> the handle opened in that process, for all its pieces


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def processes(n: int, configured: int | None = None) -> int:
    """Processes to code n images with (`configured`: a backend's `workers` option, None: every core)."""
    # A daemonic process (a DataLoader or Pool worker) may not start processes of its own.
    if (n < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods()
            or multiprocessing.current_process().daemon):
        return 1
    return max(1, min(configured or available_cores(), n // (PARALLEL_MIN // 2)))


def run(func, n: int, work: dict, workers: int) -> list:
    """func((lo, hi)) over pieces of range(n) in `workers` forked processes (children inherit
    `work` as `job`), or in this process with one; its results, in order.

    The children are this module's own, not a multiprocessing.Pool: a Pool left waiting when an
    error stopped the parent mid-way (a full disk hit in several workers at once) hung twice in
    300 s probes, and a worker that dies leaves a Pool's result waiting forever. Here a child gets
    a piece at a time over its own pipe and answers on another; any error, or a child gone without
    an answer, stops the others at once (SIGKILL) and is raised in the parent."""
    job.update(work)
    try:
        if workers == 1:
            return [func((0, n))]
        # Several pieces per worker even out the load; contiguous pieces keep files in order.
        edges = np.linspace(0, n, workers * 4 + 1).astype(int)
        pieces = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
        return _Children(func, min(workers, len(pieces))).map(pieces)
    finally:
        job.clear()


class _Children:
    """Forked workers, each fed one piece at a time through a pipe of its own."""

    def __init__(self, func, workers: int):
        self.func, self.kids = func, []  # (pid, task write end, result read end)
        try:
            for _ in range(workers):
                self.kids.append(self._fork())
        except BaseException:
            self.stop()
            raise

    def _fork(self):
        task_r, task_w = os.pipe()
        res_r, res_w = os.pipe()
        with warnings.catch_warnings():  # the child codes what it inherited and calls no Lance code
            warnings.filterwarnings("ignore", message="lance is not fork-safe")
            pid = os.fork()
        if pid == 0:  # the child: answer pieces until told to stop, then leave without cleanup
            code = 0
            try:
                os.close(task_w)
                os.close(res_r)
                for _, w, r in self.kids:  # the pipes of the children forked before this one
                    os.close(w)
                    os.close(r)
                self._serve(task_r, res_w)
            except BaseException:  # the parent sees no answer and says so
                code = 1
            finally:
                os._exit(code)
        os.close(task_r)
        os.close(res_w)
        return pid, task_w, res_r

    def _serve(self, task_r: int, res_w: int) -> None:
        with os.fdopen(task_r, "rb") as tasks, os.fdopen(res_w, "wb") as results:
            while (line := tasks.readline().strip()) and line != b"stop":
                lo, hi = map(int, line.split())
                try:
                    answer = (True, self.func((lo, hi)))
                except BaseException as e:  # sent to the parent, which raises it
                    answer = (False, e)
                try:
                    data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # an error that cannot be pickled: its text
                    data = pickle.dumps((False, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
                results.write(len(data).to_bytes(8, "little") + data)
                results.flush()

    def map(self, pieces) -> list:
        results = [None] * len(pieces)
        todo = iter(enumerate(pieces))
        busy = {}  # result fd -> (piece index, task fd)
        readers = {}
        try:
            for pid, task_w, res_r in self.kids:
                readers[res_r] = os.fdopen(res_r, "rb", closefd=False)
                self._give(todo, busy, task_w, res_r)
            while busy:
                ready, _, _ = select.select(list(busy), [], [])
                for fd in ready:
                    k, task_w = busy.pop(fd)
                    head = readers[fd].read(8)
                    if len(head) < 8:
                        raise ChildProcessError("a worker process ended without an answer (killed?)")
                    ok, value = pickle.loads(readers[fd].read(int.from_bytes(head, "little")))
                    if not ok:
                        raise value
                    results[k] = value
                    progress.advance(pieces[k][1] - pieces[k][0])  # a line in a long job's log, now and then
                    self._give(todo, busy, task_w, fd)
            return results
        finally:
            for r in readers.values():
                r.close()
            self.stop(kill=bool(busy))

    @staticmethod
    def _give(todo, busy, task_w: int, res_r: int) -> None:
        nxt = next(todo, None)
        msg = b"stop\n" if nxt is None else f"{nxt[1][0]} {nxt[1][1]}\n".encode()
        try:
            os.write(task_w, msg)
        except BrokenPipeError:  # the child is gone: the read of its answer says so
            pass
        if nxt is not None:
            busy[res_r] = (nxt[0], task_w)

    def stop(self, kill: bool = True) -> None:
        """Every child ended and reaped (killed first when the work stopped on an error)."""
        for pid, task_w, res_r in self.kids:
            if kill:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for fd in (task_w, res_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
        for pid, _, _ in self.kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.kids = []


def handle():
    """This process's handle of `job`'s store, opened once per process (opening costs
    milliseconds: an HDF5 file, an index), not per piece."""
    h = _handles.get(os.getpid())
    if h is None:
        h = _handles[os.getpid()] = job["backend"]._handle(job["store"])
    return h


def keep_handle(h) -> None:
    """Use `h` as this process's handle of `job`'s store (the parent's own, already open)."""
    _handles[os.getpid()] = h


def close_handle() -> None:
    """Close this process's handle, if it opened one (forked workers' go with them)."""
    h = _handles.pop(os.getpid(), None)
    if h is not None:
        h.close()


def encode_range(bounds) -> list[bytes]:
    images, codec = job["images"], job["codec"]
    return [codec.encode(images[i]) for i in range(*bounds)]


def decode_range(bounds) -> None:
    lo, hi = bounds
    handle().batch(np.arange(lo, hi), job["out"][lo:hi])


def allocate(shape, shapes, n: int, shared: bool):
    """Room for n images: (n, *shape) if `shape`, else an ImageList of `shapes`; in anonymous
    shared memory if forked workers fill it."""
    nbytes = n * int(np.prod(shape)) if shape is not None else int(np.asarray(shapes).prod(axis=1).sum())
    if shared:
        buf = np.frombuffer(mmap.mmap(-1, max(1, nbytes)), np.uint8, nbytes)
    else:
        buf = np.empty(nbytes, np.uint8)
    return buf.reshape(n, *shape) if shape is not None else ImageList.allocate(shapes, buf)
