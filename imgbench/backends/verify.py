"""Checking a whole store (`backends.verify`, `Backend.verify`): the manifest against the
checksums, and every image's stored bytes and label against its checksum; the Report."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import checksums, parallel
from . import errors as _errors
from .errors import NotAStoreError

# Raw rows are read for checking through a buffer of about this size: it stays in the CPU's cache
# while its rows are hashed (measured: 100,000 CIFAR rows read in 16 ms through 3 MB, 66 ms
# through 48 MB).
VERIFY_BUFFER = 2 * 2**20


def printable(text) -> str:
    """`text` with every character a terminal would act on (escape sequences, newlines, other
    controls) shown as a Python escape, e.g. \\x1b; letters of any script are kept."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


@dataclass
class Report:
    """What `verify` checked and found: `ok` when nothing is wrong."""

    path: str
    backend: str | None = None
    count: int = 0  # images the manifest says the store holds
    checked: int = 0  # images whose bytes were read and checked
    bad: list = field(default_factory=list)  # (image id, file, what is wrong), in id order
    errors: list = field(default_factory=list)  # what is wrong with the store as a whole
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.bad and not self.errors and self.checked == self.count

    def summary(self, limit: int = 5) -> str:
        """A few lines for a person: what was checked, then the first damaged ids and files."""
        what = (f"{printable(self.path)}: {printable(self.backend or 'unknown')} store, {self.checked:,} of "
                f"{self.count:,} images checked")
        lines = [f"{what} in {self.seconds:.2f}s"]
        if self.ok:
            lines.append(f"OK: every image's bytes and label match its {checksums.ALGORITHM} checksum, and the "
                         "manifest matches the checksums")
            return "\n".join(lines)
        lines += [f"DAMAGED: {printable(e)}" for e in self.errors]
        if self.bad:
            lines.append(f"DAMAGED: {len(self.bad):,} image(s); the first: "
                         + "; ".join(f"id {i} in {printable(f)} ({printable(why)})" for i, f, why in self.bad[:limit]))
        return "\n".join(lines)


def verify(backend, path, log=None) -> Report:
    """Check the store at `path` with `backend`. Never raises for damage: it is in the report."""
    t0 = time.perf_counter()
    report = Report(str(path), backend.name)
    try:
        store = backend.open(path)
        report.count = store.count
        sums = backend._checked_sums(store, report.errors)
        h = backend._handle(store)  # a store that does not open is one error, not one per image
    except (NotAStoreError, OSError, *_errors.LIBRARY_ERRORS) as e:
        report.errors.append(str(e) if isinstance(e, (NotAStoreError, OSError)) else str(_errors.from_library(e, path)))
        report.seconds = time.perf_counter() - t0
        return report
    work = dict(backend=backend, store=store, sums=sums)
    try:
        if h.spans is not None:  # raw rows: bound by copying them, as a read is; no processes to start
            parallel.keep_handle(h)
            parts = parallel.run(_verify_range, store.count, work, 1)
        else:  # records: pieces in forked workers, each with its own handle
            h.close()
            parts = backend._parallel(_verify_range, store.count, work)
    finally:
        parallel.close_handle()
    for bad, errors in parts:
        report.bad += bad
        report.errors += errors
    report.checked = store.count
    report.seconds = time.perf_counter() - t0
    if log is not None:
        log(f"  verify {printable(store.path)}: {store.count:,} images checked in {report.seconds:.2f}s")
    return report


def _verify_range(bounds) -> tuple[list, list]:
    """Check images lo..hi-1 of the job's store against its checksums, a block at a time (an error
    in a block is pinned on its images one by one): (damaged (id, file, why), store-level errors)."""
    lo, hi = bounds
    store, sums = parallel.job["store"], parallel.job["sums"]
    h = parallel.handle()
    first, block, bad, errors = store.first_id, 4096, [], []
    check, mask = checksums.xxh3_64_intdigest, checksums.MASK  # per image: no call in between
    buf = None
    if h.spans is not None:
        block = max(16, VERIFY_BUFFER // max(1, h.row_bytes))
    for a in range(lo, hi, block):
        b = min(hi, a + block)
        expect = sums[a:b].tolist()
        try:
            if h.spans is not None:  # raw rows in files: one read per block, hashed as rows
                buf, rb, labels = h.rows(a, b, buf)
                got = checksums.rows(np.frombuffer(buf, np.uint8, (b - a) * rb).reshape(b - a, rb), labels).tolist()
            else:
                got = [check(data, lab & mask) for data, lab in h.stored_range(a, b)]
            if got != expect:
                bad += [(first + a + k, h.where(a + k), "bytes or label changed")
                        for k, (x, want) in enumerate(zip(got, expect)) if x != want]
        except (NotAStoreError, OSError, ValueError, *_errors.LIBRARY_ERRORS) as e:
            found = 0
            for p in range(a, b):
                try:
                    data, label = h.stored(p)
                    ok = checksums.checksum(data, label) == sums[p]
                    why = "bytes or label changed"
                except (NotAStoreError, OSError, ValueError, *_errors.LIBRARY_ERRORS) as e2:
                    ok, why = False, str(e2) or type(e2).__name__
                if not ok:
                    bad.append((first + p, h.where(p), why))
                    found += 1
            if not found:
                errors.append(str(e))
    return bad, errors
