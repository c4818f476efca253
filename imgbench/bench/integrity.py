"""What each backend does under faults (imgbench.bench.faults): one row per fault, not timed.

Damage (a flipped byte of an image's stored bytes, its file cut to half or deleted, its label
changed, the manifest's count edited) is done to a fresh store of `images` images each time,
then judged three ways: `verify`, a plain `read_many`, and a reader with verify=True. Then a
store killed part way over an existing one, a store replaced under an open reader, and a store
that fills a small private file system.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from ..backends import coding, variant
from . import faults
from .timing import machine

COLUMNS = ["dataset", "backend", "encoding", "fault", "images", "file", "verify", "read", "verified_read", "seconds"]


def integrity(name: str, options: dict, images, labels, root: Path, dataset: str, n_damage: int = 200,
              n_killed: int = 2000, log: Callable[[str], None] = print, sources=None, expected=None) -> list[dict]:
    """Rows of the fault battery for backend label `name`: damage on stores of the first
    `n_damage` images, a killed store of `n_killed`. `expected`: what a lossy store reads back."""
    b, root = variant(name, **options), Path(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    k, kk = min(n_damage, len(images)), min(n_killed, len(images))
    part = dict(sources=None if sources is None else sources[:k], expected=None if expected is None else expected[:k])
    where, rows = machine(root), []

    def add(row, n, t0):
        rows.append({"dataset": dataset, "backend": name, "encoding": coding(b), "images": n, **row,
                     "seconds": round(time.perf_counter() - t0, 3), **where})
        log(f"integrity {name}: {row['fault']}: verify {row['verify'][:70]!r}; read {row['read'][:70]!r}; "
            f"verified read {row['verified_read'][:70]!r}")

    try:
        for fault in faults.DAMAGE:
            t0 = time.perf_counter()
            add(faults.damage(name, options, images[:k], labels[:k], root, fault, **part), k, t0)
        t0 = time.perf_counter()
        add(faults.killed_store(name, options, images[:kk], labels[:kk], root,
                                sources=None if sources is None else sources[:kk]), kk, t0)
        t0 = time.perf_counter()
        add(faults.concurrent_overwrite(name, options, images[:k], labels[:k], root, **part), k, t0)
        t0 = time.perf_counter()
        add(faults.disk_full(name, options), 0, t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        try:
            root.parent.rmdir()  # the scratch directory of all backends, once the last is done
        except OSError:
            pass
    return rows
