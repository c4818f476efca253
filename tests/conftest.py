"""Fixtures; what the tests share otherwise is in helpers.py."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helpers
from helpers import REPO, ArchiveServer  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_collection_modifyitems(items):
    """Every test under tests/workflow runs Snakemake (seconds to minutes): marked slow."""
    for item in items:
        if "workflow" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def http_server():
    s = ArchiveServer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CIFAR-format archive of 5 x 20 known images, and the arrays it must decode to."""
    from imgbench.data import cifar

    rng = np.random.default_rng(7)
    train = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 100).astype(np.uint8)
    test = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz"
    cifar.write_archive(path, train, labels, test, labels[:20], [f"class{i}" for i in range(10)])
    return path, train, labels
