"""PyTorch's own DataLoader over a store, as its users run it (the `torch-batch` and `torch-item`
loaders of an epoch; imgbench's own loader is loader.py), and the `loop` loader: a training loop
that asks for each batch itself, `x, y = ds[ids]`, with no DataLoader and no workers (imgbench's
reader then reads with `get_batch(ids)` without `out=`, beside its own loader's `out=` path).

`torch-batch` is the README's recipe: a map-style dataset that reads a whole batch per call
(`ds[ids]`), `DataLoader(ds, sampler=<batches of ids>, batch_size=None, num_workers=w)`.
`torch-item` is the usual one: `ds[i]` per image, `batch_size=256` and the default collate,
which stacks the images into one tensor. Both keep their workers between warm epochs
(`persistent_workers=True`, DataLoader's documented setting for more than one epoch); a cold
epoch is a new DataLoader, so its workers start and open the store as in a fresh training
process. The sampler gives the same order as imgbench's loader (a permutation per repeat), in
the lists of ints a BatchSampler yields. An iterable dataset (WebDataset) orders itself: its
batches carry their ids. Every batch is compared with the source off the clock: with workers,
after the pass (batches are kept as they arrive); without, as it arrives, the clock stopped, and
then dropped as a training step drops it (kept, it would be memory the next read could not
reuse). A batch's latency here is the time since the previous batch arrived (a DataLoader does
not say when it asked for one).
"""
from __future__ import annotations

import time

import numpy as np

from .. import progress
from ..images import ImageList
from .loader import MIN_BATCHES
from .rows import _check

LOADERS = ("imgbench", "loop", "torch-batch", "torch-item")


def available() -> str | None:
    """None if PyTorch imports, else why the torch-* loaders are left out."""
    try:
        import torch.utils.data
    except ImportError as e:
        return f"PyTorch is not installed ({e}); pip install torch (its CPU build) to add them"
    del torch
    return None


class _Order:
    """A sampler whose order the caller sets before each epoch: ids one by one, or in batches."""

    def __init__(self, batch_size: int | None):
        self.batch_size, self.order = batch_size, np.empty(0, np.int64)

    def __iter__(self):
        if self.batch_size is None:
            return iter(self.order.tolist())
        bs, o = self.batch_size, self.order
        return (o[s:s + bs].tolist() for s in range(0, len(o), bs))

    def __len__(self):
        return len(self.order) if self.batch_size is None else -(-len(self.order) // self.batch_size)


TIMEOUT = 600  # seconds a DataLoader waits for a worker's batch


def _enough_descriptors() -> None:
    """Every batch a worker sends holds a file descriptor while it is kept (PyTorch's default
    sharing strategy), and a pass keeps its batches until they are checked: raise the soft limit
    on open files to the hard one (1,024 is common on clusters, two per batch)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):  # the system's own ceiling is lower: keep what we have
            pass


def _ids_labels(batch):
    """A batch as it arrives: (images, labels) from a map-style dataset, (keys, images, labels)
    from WebDataset."""
    if len(batch) == 3:
        keys, images, labels = batch
        return np.array([int(k) for k in keys], np.int64), images, labels
    return None, batch[0], batch[1]


class _Loop:
    """The `loop` loader: no DataLoader, the training process itself asks for each batch
    (`ds[ids]`, a new array each time) or iterates a stream."""

    def __init__(self, dataset, sampler, iterable: bool):
        self.dataset, self.sampler, self.iterable = dataset, sampler, iterable

    def __iter__(self):
        if self.iterable:
            return iter(self.dataset)
        return (self.dataset[ids] for ids in self.sampler)


class TorchLoader:
    """Epochs of one dataset through torch.utils.data.DataLoader, or a plain loop (`loop`), with
    the interface of loader.Loader."""

    def __init__(self, dataset, workers: int, batch_size: int, kind: str = "torch-batch", first_id: int = 0,
                 n: int | None = None, iterable: bool | None = None):
        if kind not in ("loop", "torch-batch", "torch-item"):
            raise ValueError(f"a DataLoader loader is loop, torch-batch or torch-item, got {kind!r}")
        if kind == "loop" and workers:
            raise ValueError("the loop loader reads in the main process: workers must be 0")
        self.dataset, self.workers, self.batch_size, self.kind = dataset, workers, batch_size, kind
        self.first_id = first_id  # WebDataset keys are ids; positions are ids - first_id
        self.n = n  # a stream's whole pass must deliver every one of n ids once
        _enough_descriptors()
        if iterable is None:
            from torch.utils.data import IterableDataset

            iterable = isinstance(dataset, IterableDataset)
        self.iterable = iterable
        self.sampler = _Order(batch_size if kind in ("loop", "torch-batch") else None)
        self.loader, self.got, self.ids, self.counted, self.cut = None, [], np.empty(0, np.int64), 0, False
        self.expected, self.paused = None, 0.0

    def _make(self):
        if self.kind == "loop":
            return _Loop(self.dataset, self.sampler, self.iterable)
        from torch.utils.data import DataLoader

        persistent = self.workers > 0
        # a worker that hangs fails the pass after this long instead of stopping the run
        kw = {"timeout": TIMEOUT} if self.workers > 0 else {}
        if self.workers > 0 and getattr(self.dataset, "multiprocessing_context", None):
            kw["multiprocessing_context"] = self.dataset.multiprocessing_context  # what its library's docs ask
        if self.iterable and hasattr(self.dataset, "dataloader"):  # its library's own DataLoader (LitData's)
            return self.dataset.dataloader(batch_size=self.batch_size, num_workers=self.workers,
                                           persistent_workers=persistent, **kw)
        if self.iterable:  # torch-batch: it batches itself (WebDataset's .batched), as its docs show
            size = None if self.kind == "torch-batch" else self.batch_size
            return DataLoader(self.dataset, batch_size=size, num_workers=self.workers, persistent_workers=persistent,
                              **kw)
        if self.kind == "torch-batch":
            return DataLoader(self.dataset, sampler=self.sampler, batch_size=None, num_workers=self.workers,
                              persistent_workers=persistent, **kw)
        return DataLoader(self.dataset, sampler=self.sampler, batch_size=self.batch_size, num_workers=self.workers,
                          persistent_workers=persistent, **kw)

    def epoch(self, order: np.ndarray, seconds: float = float("inf")) -> np.ndarray:
        """Batches in `order` (an iterable dataset: its own) until all are read or `seconds` have
        passed and MIN_BATCHES arrived; the time between arrivals of each batch."""
        self.sampler.order = np.asarray(order, np.int64)
        if self.loader is None:
            self.loader = self._make()
        report, clock, got, lat, count, batches, ids = progress.current(), time.perf_counter, [], [], 0, 0, []
        # With no workers the batches are read in this process: one kept after its step is memory
        # the next read cannot reuse, which a training loop does not do. So each is checked as it
        # arrives, with the clock stopped, and dropped. Workers' batches are kept until the end.
        now_check = self.workers == 0 and self.expected is not None
        whole, paused = True, 0.0
        start = prev = clock()
        for batch in self.loader:
            now = clock()
            lat.append(now - prev)
            batches += 1
            count += len(batch[-1])
            if self.iterable:
                ids.append(_ids_labels(batch)[0] - self.first_id)
            if now_check:
                first = count - len(batch[-1])
                self._check_batch(batch, ids[-1] if self.iterable else self.sampler.order[first:count])
                after = clock()
                paused, now = paused + after - now, after
            else:
                got.append(batch)
            prev = now
            if report is not None:
                report.update(count)
            if now - start - paused >= seconds and batches >= MIN_BATCHES:
                whole = False
                break
        self.got, self.counted, self.cut, self.paused = got, count, not whole, paused
        if not batches:
            raise RuntimeError("the DataLoader delivered no batch")
        if self.iterable:
            self.ids = np.concatenate(ids)
            if whole and self.n is not None and not np.array_equal(np.sort(self.ids), np.arange(self.n)):
                raise RuntimeError(f"a whole pass of the stream delivered {len(self.ids):,} images, not each of "
                                   f"the store's {self.n:,} once")
        else:
            self.ids = self.sampler.order[:count]
        return np.asarray(lat)

    def drain(self) -> None:
        """After a pass cut short, let persistent workers finish what they were asked for, off the
        clock (the next pass would wait for it otherwise). Not for a stream: draining one would read
        the rest of its epoch, so its next pass waits for at most a batch per worker."""
        if not self.cut or self.loader is None or self.workers == 0 or self.iterable:
            return
        self.sampler.order = np.empty(0, np.int64)
        for _ in self.loader:  # an empty epoch: resetting the workers collects their last batches
            pass

    @property
    def order(self) -> np.ndarray:
        return self.ids

    def expect(self, images, labels, what: str) -> None:
        """What the next pass must deliver (so that batches read in this process can be checked as
        they arrive)."""
        self.expected = (images, labels, what)

    def _check_batch(self, batch, ids) -> None:
        images, labels, what = self.expected
        _, x, y = _ids_labels(batch)
        if isinstance(x, list):  # images of different shapes, a list per batch
            x = ImageList.from_arrays([np.asarray(i) for i in x])
        _check(what, x if isinstance(x, ImageList) else np.asarray(x), images[ids])
        _check(f"{what} labels", np.asarray(y).astype(np.int64), labels[ids])

    def check(self, images, labels, what: str) -> None:
        self.expected, s = (images, labels, what), 0
        for batch in self.got:
            n = len(batch[-1])
            self._check_batch(batch, self.ids[s:s + n])
            s += n
        self.got = []

    def close_readers(self) -> None:
        """The next epoch runs in a new DataLoader (new workers, the store opened anew)."""
        # persistent workers hold the store open (mapped pages cannot be evicted): stop them now
        # rather than when the collector gets to them
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader = None
        if not self.iterable:  # a stream (WebDataset) opens its shards as it reads them
            self.dataset.close()

    def close(self) -> None:
        self.close_readers()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
