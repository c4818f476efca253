"""The npy backend: round trips, numpy's own reader, and a Reader across fork and spawn."""
import multiprocessing
import pickle

import numpy as np
import pytest

from imgbench import backends


def images_and_labels(n, channels=3, size=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size, channels), dtype=np.uint8)
    return images, rng.integers(-5, 1000, n)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip(tmp_path, channels):
    images, labels = images_and_labels(300, channels, size=(9, 7))
    b = backends.get("npy")
    b.store_many(tmp_path / "s", images, labels)
    got, got_labels = b.read_many(tmp_path / "s")
    assert got.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_labels, labels)
    ids = np.random.default_rng(1).integers(0, 300, 500)  # shuffled, with repeats
    got, got_labels = b.read_many(tmp_path / "s", ids)
    np.testing.assert_array_equal(got, images[ids])
    np.testing.assert_array_equal(got_labels, labels[ids])


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
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["images.npy", "imgbench.json", "labels.npy"]


def test_damaged_store_is_not_a_store(tmp_path):
    images, labels = images_and_labels(20)
    b = backends.get("npy")
    b.store_many(tmp_path / "s", images, labels)
    np.save(tmp_path / "s/images.npy", images[:10])  # fewer rows than the manifest says
    with pytest.raises(backends.NotAStoreError, match="damaged"):
        b.read_many(tmp_path / "s")
    (tmp_path / "s/labels.npy").unlink()
    with pytest.raises(backends.NotAStoreError, match="not a readable npy store"):
        b.read_single(tmp_path / "s", 0)


# ------------------------------------------------------------------ Reader across processes


def check_reader(reader, images, labels, seed):
    """Batches (shuffled with repeats, and sequential) and single images, as a worker reads."""
    rng = np.random.default_rng(seed)
    for _ in range(4):
        ids = rng.integers(0, len(images), 64)
        got, got_labels = reader.get_batch(ids)
        np.testing.assert_array_equal(got, images[ids])
        np.testing.assert_array_equal(got_labels, labels[ids])
    out = np.empty((32, *images.shape[1:]), np.uint8)
    got, got_labels = reader.get_batch(np.arange(10, 42), out=out)
    assert got is out
    np.testing.assert_array_equal(out, images[10:42])
    image, label = reader[len(images) - 1]
    np.testing.assert_array_equal(image, images[-1])
    assert label == labels[-1]


def check_reader_in_processes(reader, images, labels):
    check_reader(reader, images, labels, 0)  # the parent opens it first
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=check_reader, args=(reader, images, labels, seed)) for seed in (1, 2)]
    for c in children:
        c.start()
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    check_reader(reader, images, labels, 3)  # the parent's handle still works
    spawned = multiprocessing.get_context("spawn").Process(
        target=check_reader, args=(pickle.loads(pickle.dumps(reader)), images, labels, 4))
    spawned.start()
    spawned.join(120)
    assert spawned.exitcode == 0


def test_reader_in_forked_and_spawned_children(tmp_path):
    images, labels = images_and_labels(400, size=(8, 8))
    b = backends.get("npy")
    b.store_many(tmp_path / "s", images, labels)
    with b.reader(tmp_path / "s") as reader:
        check_reader_in_processes(reader, images, labels)
