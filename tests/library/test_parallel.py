"""The forked workers that code images: results in order, a worker's error raised in the parent,
a worker that dies named instead of waited for, and no process left behind either way."""
import os
import time

import pytest

from imgbench.backends import parallel


def _children() -> list[int]:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
        return [int(x) for x in f.read().split()]


def _ids(bounds):
    return list(range(*bounds))


def _full_late(bounds):  # the disk fills in the second half, while other pieces still run
    if bounds[0] >= parallel.job["at"]:
        raise OSError(28, "No space left on device")
    time.sleep(0.005)
    return bounds


def _dies(bounds):
    if bounds[0] >= parallel.job["at"]:
        os._exit(3)
    return bounds


def test_results_in_order_from_every_worker():
    before = _children()  # an earlier test's helpers (a forkserver) may live on
    got = parallel.run(_ids, 1000, {}, 2)
    assert sum(got, []) == list(range(1000)) and len(got) == 8 and not parallel.job
    assert _children() == before


def test_a_workers_error_is_raised_and_no_child_is_left():
    before = _children()
    for _ in range(20):  # the Pool this replaced hung now and then in this case
        with pytest.raises(OSError) as e:
            parallel.run(_full_late, 1000, {"at": 500}, 2)
        assert e.value.errno == 28
    assert _children() == before


def test_a_worker_that_dies_is_an_error_not_a_wait():
    before, t = _children(), time.perf_counter()
    with pytest.raises(ChildProcessError, match="ended without an answer"):
        parallel.run(_dies, 1000, {"at": 300}, 2)
    assert time.perf_counter() - t < 30 and _children() == before
