"""Progress lines for long jobs: at most one every few seconds, so the log of a store of
100,000 PNGs or of a whole epoch shows that the job is alive and how far it got, without
growing with the work.

    with progress.tracking("store_many disk n=100000", 100000, log):
        backend.store_many(...)            # its parallel pieces call progress.advance(k)

Code deep inside (the backends' worker pools, the epoch loop) reports to the innermost
`tracking` of this process, if there is one; otherwise reporting costs a list lookup.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

EVERY = 5.0  # seconds between lines, at most


class Progress:
    def __init__(self, what: str, total: int, log: Callable[[str], None], every: float = EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.log, self.every, self.clock = what, max(1, int(total)), log, every, clock
        self.done = 0
        self.start = clock()
        self.next = self.start + every

    def update(self, done: int) -> None:
        """`done` of `total` are finished; a line if `every` seconds passed since the last."""
        self.done = done
        now = self.clock()
        if now < self.next:
            return
        self.next = now + self.every
        took = now - self.start
        rate = done / took if took > 0 else 0.0
        left = f", about {(self.total - done) / rate:.0f} s left" if 0 < rate and done < self.total else ""
        self.log(f"  {self.what}: {done:,} of {self.total:,} ({100 * done / self.total:.0f}%) in {took:.0f} s, "
                 f"{rate:,.0f}/s{left}")

    def advance(self, k: int) -> None:
        self.update(self.done + k)


_current: list[Progress] = []


@contextmanager
def tracking(what: str, total: int, log: Callable[[str], None], every: float = EVERY):
    p = Progress(what, total, log, every)
    _current.append(p)
    try:
        yield p
    finally:
        _current.remove(p)


def current() -> Progress | None:
    return _current[-1] if _current else None


def advance(k: int) -> None:
    if _current:
        _current[-1].advance(k)
