"""The article's experiments, measured honestly; each returns tidy rows, one per timed repeat.

- Every store repeat writes a fresh store, after one untimed warm-up store; os.sync() runs
  before each timed repeat so that writeback of the previous one does not compete with it.
  Stores count as written when their files are closed (no fsync, for every backend alike,
  unless the backend's fsync option is on). Every stored repeat is read back and compared.
- Warm reads follow one untimed read; cold reads follow evicting the store's files from the page
  cache (fsync + POSIX_FADV_DONTNEED). Directory entries and inodes stay cached either way.
- Every read is compared with the source after the clock stops; a mismatch stops the job.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..backends import get as get_backend
from ..bench import disk_usage, evict, machine, timed
from .common import VerificationError, _check, _row, _rss

def store_many(name: str, options: dict, images, labels, out: Path, repeats: int, dataset: str,
               log: Callable[[str], None] = print, trash: Path | None = None) -> list[dict]:
    """Store `images` `repeats` times, each into a fresh store; the last becomes `out`.

    One untimed store comes first (page cache and allocator warm, as for reads). Nothing is
    deleted between timed repeats: on ext4 without a journal, inodes freed in the last 60-300 s
    are skipped when files are created, so creating many files soon after deleting many is
    several times slower. With `trash`, the extra stores are moved there (a rename frees no
    inodes) for a later step to delete; without it they are deleted at the end.
    """
    b, n, out = get_backend(name, **options), len(images), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    where = machine(out.parent)
    warmup = out.parent / f".{out.name}.warmup"
    paths = [out.parent / f".{out.name}.repeat{r}" for r in range(1, repeats + 1)]
    for p in [warmup, *paths]:
        shutil.rmtree(p, ignore_errors=True)  # left over from an interrupted run
    log(f"store_many {name} n={n}: untimed warm-up store ...")
    seconds, _, _ = timed(b.store_many, warmup, images, labels)
    log(f"  warm-up took {seconds:.3f}s")
    rows = []
    for r, path in enumerate(paths, 1):
        os.sync()
        log(f"store_many {name} n={n}: repeat {r}/{repeats} ...")
        before = _rss()
        seconds, peak, _ = timed(b.store_many, path, images, labels)
        usage = disk_usage(path)
        got, got_labels = b.read_many(path)
        _check(f"{name} store of {n}", got, images)
        _check(f"{name} labels of {n}", got_labels, labels)
        del got, got_labels
        log(f"  stored in {seconds:.3f}s, {usage['bytes_apparent'] / 1e6:.1f} MB in {usage['files']} files, verified")
        rows.append(_row("store_many", name, n, r, seconds, "none", peak, before, usage, True, dataset,
                         options, where, images[0]))
    _discard([out], trash)
    paths[-1].rename(out)
    _discard([warmup, *paths[:-1]], trash)
    return rows


def _discard(paths, trash: Path | None) -> None:
    for p in paths:
        if not p.exists():
            continue
        if trash is None:
            shutil.rmtree(p)
        else:
            trash.mkdir(parents=True, exist_ok=True)
            p.rename(trash / f"{p.parent.name}-{p.name.lstrip('.')}-{os.getpid()}")


def empty_trash(trash: Path) -> None:
    shutil.rmtree(trash, ignore_errors=True)


def read_many(name: str, options: dict, store: Path, images, labels, repeats: int, dataset: str,
              log: Callable[[str], None] = print) -> list[dict]:
    """read_many of a whole store: `repeats` warm reads, then `repeats` cold ones."""
    b, n = get_backend(name, **options), len(images)
    usage, where, rows = disk_usage(store), machine(store), []
    b.read_many(store)  # untimed: warms the page cache and this process's allocator
    for cache in ("warm", "cold"):
        for r in range(1, repeats + 1):
            if cache == "cold" and not evict(store):
                log("  this OS cannot evict files from the page cache; skipping cold reads")
                break
            before = _rss()
            seconds, peak, (got, got_labels) = timed(b.read_many, store)
            _check(f"{name} read of {n}", got, images)
            _check(f"{name} labels of {n}", got_labels, labels)
            del got, got_labels
            log(f"read_many {name} n={n} {cache} {r}/{repeats}: {seconds:.3f}s, verified")
            rows.append(_row("read_many", name, n, r, seconds, cache, peak, before, usage, True, dataset,
                             options, where, images[0]))
    return rows


def single(name: str, options: dict, image, image_id: int, label: int, store: Path, repeats: int,
           dataset: str, log: Callable[[str], None] = print) -> list[dict]:
    """The article's single-image experiment: store one image in a new store, read it back."""
    b, store, rows = get_backend(name, **options), Path(store), []
    where = machine(store.parent)
    for r in range(1, repeats + 1):
        shutil.rmtree(store, ignore_errors=True)
        os.sync()
        before = _rss()
        seconds, peak, _ = timed(b.store_single, store, image, image_id, label)
        _check_single(name, b, store, image_id, image, label)
        rows.append(_row("store_single", name, 1, r, seconds, "none", peak, before, disk_usage(store), True,
                         dataset, options, where, image))
        log(f"store_single {name} {r}/{repeats}: {seconds * 1e3:.2f} ms, verified")
    usage = disk_usage(store)
    b.read_single(store, image_id)
    for cache in ("warm", "cold"):
        for r in range(1, repeats + 1):
            if cache == "cold" and not evict(store):
                break
            before = _rss()
            seconds, peak, result = timed(b.read_single, store, image_id)
            _check_single(name, b, store, image_id, image, label, result)
            rows.append(_row("read_single", name, 1, r, seconds, cache, peak, before, usage, True, dataset,
                             options, where, image))
            log(f"read_single {name} {cache} {r}/{repeats}: {seconds * 1e3:.2f} ms, verified")
    return rows


def _check_single(name, b, store, image_id, image, label, result=None) -> None:
    got, got_label = result if result is not None else b.read_single(store, image_id)
    _check(f"{name} single image", got, image)
    if got_label != label:
        raise VerificationError(f"{name} single label: read {got_label}, wrote {label}")
