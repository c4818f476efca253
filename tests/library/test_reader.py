"""Readers: a map-style dataset per backend that survives fork, spawn and a second open."""
import multiprocessing

import numpy as np
import pytest

from imgbench import backends
from imgbench.backends import NotAStoreError
from imgbench.bench.access import permutation
from imgbench.bench.loader import MIN_BATCHES, Loader
from helpers import NAMES, check_batches, photos, survives_fork_and_spawn


@pytest.fixture(params=NAMES)
def stored(request, tmp_path):
    """A store of 300 images (more than the disk backend's parallel threshold) and its source."""
    name = request.param
    images, labels = photos(300, seed=3)
    path = tmp_path / name
    backends.get(name).store_many(path, images, labels)
    return name, path, images, labels


def test_reader_round_trip(stored):
    name, path, images, labels = stored
    with backends.get(name).reader(path) as r:
        assert len(r) == len(images)
        for i in (0, 17, len(images) - 1, np.int64(5)):
            image, label = r[i]
            assert np.array_equal(image, images[i]) and label == labels[i] and isinstance(label, int)
        check_batches(r, images, labels, seed=1)
        got, got_labels = r.get_batch([])
        assert got.shape == (0, *images.shape[1:]) and got_labels.shape == (0,)
        got, got_labels = r[[5, 2, 5]]  # a list of ids reads a batch
        assert np.array_equal(got, images[[5, 2, 5]]) and np.array_equal(got_labels, labels[[5, 2, 5]])
        out = np.empty((3, *images.shape[1:]), np.uint8)
        got, _ = r.get_batch([2, 1, 2], out=out)
        assert got is out and np.array_equal(out, images[[2, 1, 2]])
        with pytest.raises(KeyError, match=f"image id 300 is not in {path}"):
            r[300]
        with pytest.raises(KeyError, match="image id -1"):
            r.get_batch([0, -1])
        with pytest.raises(ValueError, match="out must be"):
            r.get_batch([1, 2], out=np.empty((3, *images.shape[1:]), np.uint8))
        with pytest.raises(ValueError, match="image_id must be an integer"):
            r["7"]
    assert "reader(" in repr(r)


def test_reader_is_lazy_and_names_a_missing_store(tmp_path):
    for name in NAMES:
        r = backends.get(name).reader(tmp_path / "nothing")  # creating it opens nothing
        with pytest.raises(NotAStoreError, match="does not exist"):
            len(r)


def test_reader_used_in_parent_then_forked_and_spawned_children(stored):
    name, path, images, labels = stored
    with backends.get(name).reader(path) as r:
        survives_fork_and_spawn(r, images, labels)


def test_same_store_opened_twice_in_one_process(stored):
    name, path, images, labels = stored
    b = backends.get(name)
    with b.reader(path) as r1, b.reader(path) as r2:
        assert np.array_equal(r1[4][0], r2[4][0])
        image, label = b.read_single(path, 9)  # the documented calls while readers are open
        assert np.array_equal(image, images[9]) and label == labels[9]
        got, _ = b.read_many(path, [3, 1, 3])
        assert np.array_equal(got, images[[3, 1, 3]])
        r1.close()
        assert np.array_equal(r2[7][0], images[7])  # closing one leaves the other working
    got, got_labels = b.read_many(path)
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)


def test_lmdb_environment_opened_outside_imgbench_gets_a_clear_error(tmp_path):
    import lmdb

    images, labels = photos(5)
    backends.get("lmdb").store_many(tmp_path / "s", images, labels)
    env = lmdb.open(str(tmp_path / "s"), readonly=True, lock=False)
    try:
        with pytest.raises(NotAStoreError, match="already has the store's lmdb environment open outside imgbench"):
            backends.get("lmdb").read_single(tmp_path / "s", 1)
    finally:
        env.close()
    assert backends.get("lmdb").read_single(tmp_path / "s", 1)[1] == labels[1]


def _read_in_worker(args):
    path, ids = args
    return backends.get("disk").read_many(path, ids)


def test_disk_read_many_inside_a_daemonic_worker(tmp_path):
    images, labels = photos(600)
    backends.get("disk").store_many(tmp_path / "s", images, labels)
    ids = np.random.default_rng(0).permutation(600)[:400]  # above the parallel threshold
    with multiprocessing.get_context("fork").Pool(1) as pool:  # pool workers are daemonic
        got, got_labels = pool.map(_read_in_worker, [(tmp_path / "s", ids)])[0]
    assert np.array_equal(got, images[ids]) and np.array_equal(got_labels, labels[ids])


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_loader_delivers_verified_epochs(stored, workers):
    name, path, images, labels = stored
    with Loader(backends.get(name).reader(path), workers, batch_size=32) as loader:
        procs = list(loader.procs)
        for order, repeat in (("sequential", 0), ("shuffled", 1), ("shuffled", 2)):
            perm = permutation(order, len(images), 0, repeat)
            lat = loader.epoch(perm)
            assert len(lat) == 10 and (lat > 0).all()  # 300 images in batches of 32
            loader.check(images, labels, name)
            assert np.array_equal(loader.out, images[perm])
        loader.close_readers()
        loader.epoch(permutation("shuffled", len(images), 0, 3))  # readers reopen
        loader.check(images, labels, name)
    assert loader.procs == [] and not any(p.is_alive() for p in procs)


class _SlowReader:
    """A reader whose batches take 20 ms each."""

    def __init__(self, reader):
        self.reader, self.store = reader, reader.store

    def __len__(self):
        return len(self.reader)

    def get_batch(self, ids, out=None):
        import time

        time.sleep(0.02)
        return self.reader.get_batch(ids, out=out)

    def close(self):
        self.reader.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_pass_stops_at_its_time_limit_and_drains(tmp_path, workers):
    images, labels = photos(300)
    path = backends.get("npy").store_many(tmp_path / "s", images, labels)
    with Loader(_SlowReader(backends.get("npy").reader(path)), workers, batch_size=10) as loader:
        for repeat in (1, 2):  # the second pass starts clean after the first left batches in flight
            perm = permutation("shuffled", 300, 0, repeat)
            lat = loader.epoch(perm, seconds=0.05)  # 2-3 batches' time, but at least MIN_BATCHES count
            assert MIN_BATCHES <= len(lat) <= MIN_BATCHES + 4 and loader.counted == 10 * len(lat)
            assert bool(loader.pending) == (workers > 0)  # workers were already reading the next batches
            loader.drain()
            assert loader.pending == []
            loader.check(images, labels, "npy")
            assert np.array_equal(loader.out[:loader.counted], images[perm[:loader.counted]])
        assert len(loader.epoch(permutation("sequential", 300, 0, 0))) == 30 and loader.counted == 300
        loader.check(images, labels, "npy")


def test_loader_names_a_worker_failure(tmp_path):
    images, labels = photos(50)
    path = backends.get("disk").store_many(tmp_path / "s", images, labels)
    (path / "17.png").unlink()
    with Loader(backends.get("disk").reader(path), 2, batch_size=10) as loader:
        with pytest.raises(RuntimeError, match=r"epoch worker 1 failed on batch 1: NotAStoreError: .*17.png is missing"):
            loader.epoch(np.arange(50))


def test_shuffled_orders_differ_per_repeat_and_are_reproducible():
    a, b = permutation("shuffled", 1000, 0, 1), permutation("shuffled", 1000, 0, 2)
    assert sorted(a) == list(range(1000)) and not np.array_equal(a, b)
    assert np.array_equal(a, permutation("shuffled", 1000, 0, 1))
    assert not np.array_equal(a, permutation("shuffled", 1000, 1, 1))
    with pytest.raises(ValueError, match="order must be"):
        permutation("random", 10, 0, 1)


def test_reader_in_a_torch_dataloader(stored):
    torch = pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    name, path, images, labels = stored
    r = backends.get(name).reader(path)
    r[0]  # opened in the parent before the workers fork
    # a batch per call: r[list of ids] is r.get_batch(ids)
    batches = list(BatchSampler(RandomSampler(r, generator=torch.Generator().manual_seed(0)), 64, False))
    seen = []
    for batch_ids, (x, y) in zip(batches, DataLoader(r, sampler=batches, batch_size=None, num_workers=2)):
        assert np.array_equal(x.numpy(), images[batch_ids]) and np.array_equal(y.numpy(), labels[batch_ids])
        seen += batch_ids
    assert sorted(seen) == list(range(len(images)))
    # and one image at a time, through the default collate
    loader = DataLoader(r, batch_size=50, shuffle=False, num_workers=2)
    x, y = next(iter(loader))
    assert np.array_equal(x.numpy(), images[:50]) and np.array_equal(y.numpy(), labels[:50])


def _alive(pid: int) -> bool:
    """Running, not a zombie (PID 1 here may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def test_loader_workers_exit_when_the_parent_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO

    images, labels = photos(50)
    backends.get("hdf5").store_many(tmp_path / "s", images, labels)
    code = (f"import os, signal, sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from imgbench import backends\nfrom imgbench.bench.loader import Loader\n"
            f"L = Loader(backends.get('hdf5').reader({str(tmp_path / 's')!r}), 2, 10)\n"
            "print(' '.join(str(p.pid) for p in L.procs), flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == -signal.SIGKILL
    pids = [int(x) for x in p.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def test_get_batch_hands_out_a_buffer_again_only_once_dropped(tmp_path):
    """get_batch without out= reuses its batch buffers (fresh memory faults per page), but never
    one the caller, a view of it or a tensor made from it still refers to."""
    images, labels = photos(64, seed=5)
    backends.get("npy").store_many(tmp_path / "s", images, labels)
    r = backends.get("npy").reader(tmp_path / "s")
    a, _ = r.get_batch(np.arange(8))
    address = a.ctypes.data
    del a
    b, _ = r.get_batch(np.arange(8, 16))  # the first buffer, dropped: handed out again
    assert b.ctypes.data == address and np.array_equal(b, images[8:16])
    view = b[2:4]
    del b
    c, _ = r.get_batch(np.arange(16, 24))  # a view keeps the buffer: a new one
    assert c.ctypes.data != address and np.array_equal(view, images[10:12])
    held = [c]
    for s in range(24, 64, 8):  # batches kept by the caller are never written again
        held.append(r.get_batch(np.arange(s, s + 8))[0])
    assert np.array_equal(np.concatenate(held), images[16:64]) and np.array_equal(view, images[10:12])
    torch = pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")
    del held, c, view
    t = torch.as_tensor(r.get_batch(np.arange(8))[0])  # DataLoader's default_convert: shares the memory
    for s in range(8, 64, 8):
        r.get_batch(np.arange(s, s + 8))
    assert np.array_equal(t.numpy(), images[:8])
