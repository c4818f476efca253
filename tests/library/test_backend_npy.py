"""The npy backend: round trips and numpy's own reader (readers across processes: test_reader.py)."""

import numpy as np
import pytest

from imgbench import backends
from helpers import assert_reads_back, images_and_labels


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip(tmp_path, channels):
    images, labels = images_and_labels(300, channels, size=(9, 7))
    b = backends.get("npy")
    b.store_many(tmp_path / "s", images, labels)
    ids = np.random.default_rng(1).integers(0, 300, 500)  # shuffled, with repeats
    assert_reads_back(b, tmp_path / "s", images, labels, ids)


def test_store_of_one_image(tmp_path):
    images, labels = images_and_labels(1)
    b = backends.get("npy")
    b.store_many(tmp_path / "many", images, labels)
    np.testing.assert_array_equal(b.read_many(tmp_path / "many")[0], images)
    b.store_single(tmp_path / "one", images[0], 77, 5)
    image, label = b.read_single(tmp_path / "one", 77)
    np.testing.assert_array_equal(image, images[0])
    assert label == 5 and isinstance(label, int)


def test_np_load_reads_the_store(tmp_path):
    images, labels = images_and_labels(50, 4)
    backends.get("npy", fsync=True).store_many(tmp_path / "s", images, labels)
    got = np.load(tmp_path / "s/images.npy")
    assert got.dtype == np.uint8 and got.shape == images.shape
    np.testing.assert_array_equal(got, images)
    got_labels = np.load(tmp_path / "s/labels.npy")
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["checksums.npy", "images.npy", "imgbench.json", "labels.npy"]


def test_damaged_store_is_not_a_store(tmp_path):
    images, labels = images_and_labels(20)
    b = backends.get("npy")
    b.store_many(tmp_path / "s", images, labels)
    np.save(tmp_path / "s/images.npy", images[:10])  # fewer rows than the manifest says
    with pytest.raises(backends.NotAStoreError, match="damaged"):
        b.read_many(tmp_path / "s")
    b.store_many(tmp_path / "s", images, labels, overwrite=True)
    (tmp_path / "s/labels.npy").unlink()
    with pytest.raises(backends.NotAStoreError, match="labels.npy is missing"):
        b.read_single(tmp_path / "s", 0)
