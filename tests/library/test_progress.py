"""Progress lines of long jobs: how often, what they say, and that the 100,000-PNG store's
worker pool and the epoch loop report through them."""
import re

import numpy as np
import pytest

from imgbench import backends, progress
from imgbench.backends import parallel
from imgbench.bench.loader import Loader


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_at_most_a_line_every_few_seconds():
    clock, lines = Clock(), []
    p = progress.Progress("store_many disk n=1000", 1000, lines.append, every=5.0, clock=clock)
    for done in range(1, 1001):  # 20 s of work in 20 ms steps
        clock.t = 100.0 + done / 50
        p.update(done)
    assert len(lines) == 4  # at 5, 10, 15 and 20 s
    assert lines[0] == "  store_many disk n=1000: 250 of 1,000 (25%) in 5 s, 50/s, about 15 s left"
    assert lines[-1].startswith("  store_many disk n=1000: 1,000 of 1,000 (100%) in 20 s, 50/s")
    assert "left" not in lines[-1]


def test_nothing_is_reported_outside_tracking():
    assert progress.current() is None
    progress.advance(10)  # no tracker: nothing happens, nothing fails
    lines = []
    with progress.tracking("outer", 10, lines.append, every=0.0):
        with progress.tracking("inner", 5, lines.append, every=0.0):
            progress.advance(5)
        progress.advance(10)
    assert [line.split(":")[0].strip() for line in lines] == ["inner", "outer"]
    assert progress.current() is None


def _pieces(lines, what):
    return [int(m.group(1).replace(",", "")) for m in
            (re.match(rf"  {re.escape(what)}: ([\d,]+) of", line) for line in lines) if m]


def test_a_parallel_png_store_reports_each_finished_piece(tmp_path):
    n = 4 * parallel.PARALLEL_MIN
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    b = backends.get("disk", workers=2)
    lines = []
    with progress.tracking("store_many disk", n, lines.append, every=0.0):
        b.store_many(tmp_path / "s", images, np.zeros(n, np.int64))
    done = _pieces(lines, "store_many disk")
    assert len(done) == 8 and done == sorted(done) and done[-1] == n  # 4 pieces per worker, in order
    assert backends.verify(tmp_path / "s").ok


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_reports_its_batches(tmp_path, workers):
    n = 300
    images = np.random.default_rng(1).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    backends.get("npy").store_many(tmp_path / "s", images, np.arange(n))
    lines = []
    with Loader(backends.get("npy").reader(tmp_path / "s"), workers, 64) as loader:
        with progress.tracking("epoch", n, lines.append, every=0.0):
            loader.epoch(np.arange(n))
        loader.drain()
        loader.check(images, np.arange(n), "epoch")
    assert _pieces(lines, "epoch") == [64, 128, 192, 256, 300]
