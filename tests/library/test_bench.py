"""The measuring tools themselves: cold caches really are cold."""
import shutil
import subprocess

import numpy as np
import pytest

from imgbench import backends
from imgbench.bench.timing import evict, rss, settle, timed, tree_digest
from helpers import photos


def _cached_pages(files) -> int:
    """Pages of `files` in the page cache, as util-linux's fincore counts them."""
    out = subprocess.run(["fincore", "--noheadings", "--raw", "--output", "PAGES", *map(str, files)],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(x) for x in out.split())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux's fincore is not installed")
@pytest.mark.parametrize("name, n", [("disk", 300), ("disk", 2500), ("lmdb", 300)])
def test_evict_leaves_no_page_of_a_store_cached(tmp_path, name, n):
    images, labels = photos(n)  # 2,502 files are dropped by a thread per core
    path = backends.get(name).store_many(tmp_path / "s", images, labels)  # freshly written: dirty pages
    files = [f for f in path.iterdir() if f.is_file()]
    backends.get(name).read_many(path)
    assert _cached_pages(files) > 0
    assert evict(path)
    assert _cached_pages(files) == 0
    got, _ = backends.get(name).read_many(path)  # and the store still reads back
    assert np.array_equal(got, images)


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux's fincore is not installed")
def test_settle_leaves_every_page_of_a_store_cached(tmp_path):
    images, labels = photos(300)
    path = backends.get("disk").store_many(tmp_path / "s", images, labels)
    files = [f for f in path.iterdir() if f.is_file()]
    total = sum(-(-f.stat().st_size // 4096) for f in files)
    assert evict(path) and _cached_pages(files) == 0
    settle(path)
    assert _cached_pages(files) == total


def test_tree_digest_tells_stores_apart_by_any_byte_or_name(tmp_path):
    images, labels = photos(50)
    a = backends.get("disk").store_many(tmp_path / "a", images, labels)
    b = backends.get("disk").store_many(tmp_path / "b", images, labels)
    assert tree_digest(a) == tree_digest(b)  # PNG encoding is deterministic
    data = bytearray((b / "7.png").read_bytes())
    data[-20] ^= 1
    (b / "7.png").write_bytes(bytes(data))
    assert tree_digest(a) != tree_digest(b)
    (b / "7.png").write_bytes((a / "7.png").read_bytes())
    assert tree_digest(a) == tree_digest(b)
    (b / "7.png").rename(b / "7b.png")
    assert tree_digest(a) != tree_digest(b)


def test_timed_resident_set_before_is_read_after_its_garbage_is_freed():
    """A CI run had a row whose peak was below the resident set before: the caller had read it
    before timed() collected an earlier repeat's garbage. Here 200 MB of cyclic garbage is
    freed by that collection; before and peak both come after it, and the peak counts the call."""
    cycle = [np.ones(200 * 2**20, np.uint8)]
    cycle.append(cycle)
    del cycle
    held = rss()
    seconds, peak, before, result = timed(lambda: np.ones(50 * 2**20, np.uint8))
    assert before < held - 150 * 2**20  # the garbage was freed before `before` was read
    assert peak >= before + 45 * 2**20 and result.sum() == 50 * 2**20 and seconds > 0
