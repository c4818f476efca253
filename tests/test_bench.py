"""The measuring tools themselves: cold caches really are cold."""
import shutil
import subprocess

import numpy as np
import pytest

from imgbench import backends
from imgbench.bench import evict
from test_backends import photos


def _cached_pages(files) -> int:
    """Pages of `files` in the page cache, as util-linux's fincore counts them."""
    out = subprocess.run(["fincore", "--noheadings", "--raw", "--output", "PAGES", *map(str, files)],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(x) for x in out.split())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux's fincore is not installed")
@pytest.mark.parametrize("name", ["disk", "lmdb"])
def test_evict_leaves_no_page_of_a_store_cached(tmp_path, name):
    images, labels = photos(300)
    path = backends.get(name).store_many(tmp_path / "s", images, labels)  # freshly written: dirty pages
    files = [f for f in path.iterdir() if f.is_file()]
    backends.get(name).read_many(path)
    assert _cached_pages(files) > 0
    assert evict(path)
    assert _cached_pages(files) == 0
    got, _ = backends.get(name).read_many(path)  # and the store still reads back
    assert np.array_equal(got, images)
