"""Checksums, verify and faults, per backend and encoding, on real files (imgbench.bench.faults).

The fault battery: seconds per backend, so marked slow (the fast set is `-m "not slow"`)."""
import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from imgbench import backends
from imgbench.bench import faults
from imgbench.backends import checksums
from imgbench.backends.atomic import sweep as _sweep
from imgbench.backends.store import MANIFEST
from helpers import NAMES

pytestmark = pytest.mark.slow

BACKENDS = NAMES
# every encoding each container offers, and images of several shapes where a backend takes them
VARIANTS = BACKENDS + ["lmdb.png", "lmdb.jpeg", "lmdb.source", "hdf5.png", "hdf5.jpeg", "hdf5.source",
                       "tar.raw", "tar.jpeg", "tar.source", "parquet.raw", "parquet.jpeg", "parquet.source",
                       "disk.jpeg", "disk.source", "npy+ragged", "hdf5+ragged", "zarr+ragged", "lmdb+ragged",
                       "tar.raw+ragged", "parquet.raw+ragged", "disk+ragged"]


def _png(a) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def dataset(variant: str, n: int = 60):
    """(label, images, labels, sources, expected): what `variant` stores and must read back."""
    label, _, ragged = variant.partition("+")
    rng = np.random.default_rng(1)
    if ragged:
        images = [rng.integers(0, 256, (int(rng.integers(6, 20)), int(rng.integers(6, 20)), 3), np.uint8)
                  for _ in range(n)]
    else:
        # smooth images: JPEG then reads back close, and PNG is small
        yy, xx = np.mgrid[0:16, 0:16]
        images = np.stack([np.stack([(yy * 8 + i) % 256, (xx * 8 + 2 * i) % 256, (yy + xx + i) % 256], -1)
                           for i in range(n)]).astype(np.uint8)
    labels = rng.integers(0, 10, n)
    b = backends.variant(label)
    sources = [_png(a) for a in images] if b.encoding == "source" else None
    expected = images
    if b.encoding == "jpeg":  # what a JPEG store reads back: a decode of its bytes
        path = backends.variant(label).store_many(TMP[0] / f"ref-{variant}", images, labels)
        expected = b.read_many(path)[0]
    return label, images, labels, sources, expected


TMP = []


@pytest.fixture(autouse=True)
def _tmp(tmp_path):
    TMP[:] = [tmp_path]


@pytest.mark.parametrize("variant", VARIANTS)
def test_verify_finds_every_fault_and_a_verified_read_raises(tmp_path, variant):
    label, images, labels, sources, expected = dataset(variant)
    b = backends.variant(label)
    ok = b.store_many(tmp_path / "ok", images, labels, sources=sources)
    report = backends.verify(ok)
    assert report.ok and report.checked == len(images) and report.backend == b.name
    with b.reader(ok, verify=True) as r:
        got, got_labels = r.get_batch(np.arange(len(images)))
        assert faults._same(got, expected) and np.array_equal(got_labels, labels)
    for fault in faults.DAMAGE:
        row = faults.damage(label, {}, images, labels, tmp_path, fault, sources=sources)
        assert row["verify"].startswith("detected"), (fault, row)
        assert row["verified_read"].startswith("error:"), (fault, row)  # never wrong pixels or labels
        assert not row["read"].startswith(("crash", "hang")), (fault, row)
        if fault in ("flipped byte", "changed label") and row["verify"].startswith("detected: 1 image"):
            assert f"id {len(images) // 2} in " in row["verify"], row  # it names the id and its file


@pytest.mark.parametrize("name", ["lmdb", "article-lmdb"])
def test_a_label_is_changed_in_an_lmdb_store_larger_than_lmdbs_default_map(tmp_path, name):
    # 40 images of 300 x 300: 10.8 MB, over the 10 MiB map LMDB opens an environment with by default
    images = np.random.default_rng(0).integers(0, 256, (40, 300, 300, 3), np.uint8)
    labels = np.arange(40) % 7
    b = backends.get(name)
    b.store_many(tmp_path / "s", images, labels)
    assert (tmp_path / "s/data.mdb").stat().st_size > 10 * 2**20
    assert faults.change_label(tmp_path / "s", 20) == "data.mdb"
    got = b.read_many(tmp_path / "s")[1]
    assert got[20] == labels[20] + 1 and np.array_equal(np.delete(got, 20), np.delete(labels, 20))
    assert [i for i, _, _ in backends.verify(tmp_path / "s").bad] == [20]


def test_a_plain_read_shows_what_each_format_itself_notices(tmp_path):
    """The README's table of what happens without verify, measured here: formats without their own
    checksum return wrong pixels for a flipped byte; PNG files notice (zlib's and PNG's checks)."""
    images, labels = dataset("npy")[1:3]
    seen = {name: faults.damage(name, {}, images, labels, tmp_path, "flipped byte")["read"]
            for name in ("npy", "hdf5", "lmdb", "zarr", "disk", "tar")}
    assert seen["npy"] == seen["hdf5"] == seen["lmdb"] == seen["zarr"] == "wrong pixels"
    assert seen["disk"].startswith("error") and seen["tar"].startswith("error")


def test_zarr_reads_a_deleted_shard_as_black_images(tmp_path):
    images, labels = dataset("zarr")[1:3]
    row = faults.damage("zarr", {}, images, labels, tmp_path, "deleted file")
    assert row["read"] == "wrong pixels" and row["verify"].startswith("detected")
    path = backends.get("zarr").store_many(tmp_path / "z", images, labels)
    faults.delete_file(path, 0)
    got, _ = backends.get("zarr").read_many(path)
    assert not got.any()  # zarr's fill value for a missing chunk: silently black


def test_a_changed_checksum_or_manifest_field_is_damage(tmp_path):
    images, labels = dataset("npy")[1:3]
    b = backends.get("npy")
    path = b.store_many(tmp_path / "s", images, labels)
    sums = np.load(path / "checksums.npy")
    sums[3] ^= 1
    np.save(path / "checksums.npy", sums)
    report = b.verify(path)
    assert not report.ok and "disagrees" in report.errors[0] and [i for i, _, _ in report.bad] == [3]
    path = b.store_many(tmp_path / "t", images, labels)
    meta = json.loads((path / MANIFEST).read_text())
    meta["first_id"] = 5
    (path / MANIFEST).write_text(json.dumps(meta))
    assert "digest does not match" in backends.verify(path).errors[0]
    with pytest.raises(backends.NotAStoreError, match="disagrees"):
        b.reader(path, verify=True)[5]


def test_checksums_cover_the_stored_bytes_and_label(tmp_path):
    images, labels = dataset("lmdb.png")[1:3]
    b = backends.variant("lmdb.png")
    path = b.store_many(tmp_path / "s", images, labels)
    h = b._handle(b.open(path))
    data, label = h.stored(7)
    assert bytes(data).startswith(b"\x89PNG") and label == labels[7]
    assert b._sums(b.open(path))[7] == checksums.checksum(data, label) != checksums.checksum(data, label + 1)
    h.close()


def test_verify_command_prints_what_it_checked_and_names_damage(tmp_path):
    images, labels = dataset("tar")[1:3]
    b = backends.get("tar", shard_size=20)
    good = b.store_many(tmp_path / "good", images, labels)
    bad = b.store_many(tmp_path / "bad", images, labels)
    where = faults.flip_byte(bad, 45)
    cmd = [sys.executable, "-m", "imgbench.cli", "verify"]
    p = subprocess.run([*cmd, str(good)], capture_output=True, text=True)
    assert p.returncode == 0 and "60 of 60 images checked" in p.stdout and "OK" in p.stdout
    p = subprocess.run([*cmd, str(good), str(bad)], capture_output=True, text=True)
    assert p.returncode == 1 and f"id 45 in {where}" in p.stdout and where == "shard-000002.tar"
    p = subprocess.run([*cmd, str(tmp_path / "nothing")], capture_output=True, text=True)
    assert p.returncode == 1 and "not a store" in p.stdout
    assert subprocess.run([*cmd], capture_output=True).returncode == 2  # usage


def test_the_console_script_is_installed():
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="imgbench")] == ["imgbench.cli:main"]


def test_a_pickled_reader_keeps_verify_and_the_store_it_read(tmp_path):
    images, labels = dataset("hdf5")[1:3]
    b = backends.get("hdf5")
    path = b.store_many(tmp_path / "s", images, labels)
    r = b.reader(path, verify=True)
    r[0]
    copy = pickle.loads(pickle.dumps(r))
    assert copy.verify and np.array_equal(copy[3][0], images[3])
    b.store_many(path, images[::-1], labels[::-1], overwrite=True)
    with pytest.raises(backends.NotAStoreError, match="replaced"):
        pickle.loads(pickle.dumps(r))[0]  # a spawned worker's copy must not read the new store


@pytest.mark.parametrize("name", BACKENDS)
def test_a_killed_store_leaves_the_old_store_and_the_next_store_sweeps_up(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3000, 32, 32, 3), np.uint8)
    labels = rng.integers(0, 10, 3000)
    row = faults.killed_store(name, {}, images, labels, tmp_path)
    assert row["verify"] == "old store intact", row
    assert row["read"] == "1 leftover(s) beside it", row  # the killed writer's temporary ...
    assert row["verified_read"] == "stored again: verified, leftovers swept", row  # ... swept by the next store


def test_a_sweep_leaves_a_live_writers_temporary_alone(tmp_path):
    import fcntl

    path = tmp_path / "s"
    live, dead = tmp_path / ".s.tmp-live", tmp_path / ".s.old-dead"
    live.mkdir()
    dead.mkdir()
    (dead / "x").write_bytes(b"1")
    locked_r, locked_w = os.pipe()  # child -> test: it holds the lock
    done_r, done_w = os.pipe()  # test -> child: let go
    pid = os.fork()
    if pid == 0:  # another process holds the live one's lock, as a writer does
        fd = os.open(live, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(locked_w, b"x")
        os.read(done_r, 1)
        os._exit(0)
    try:
        assert os.read(locked_r, 1) == b"x"
        _sweep(path)
        assert live.exists() and not dead.exists()
    finally:
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        for fd in (locked_r, locked_w, done_r, done_w):
            os.close(fd)


@pytest.mark.parametrize("name", BACKENDS)
def test_a_reader_never_mixes_a_store_with_the_one_that_replaced_it(tmp_path, name):
    images, labels = dataset("npy", 300)[1:3]
    row = faults.concurrent_overwrite(name, {}, images, labels, tmp_path)
    assert row["read"] == "old images" or row["read"].startswith("error: NotAStoreError"), row
    assert "replaced" in row["read"] or row["read"] == "old images"
    assert row["verified_read"] == "a new reader: new images"


def test_a_forked_worker_of_a_replaced_store_refuses_to_read(tmp_path):
    images, labels = dataset("lmdb")[1:3]
    b = backends.get("lmdb")
    path = b.store_many(tmp_path / "s", images, labels)
    r = b.reader(path)
    r[0]
    b.store_many(path, images[::-1], labels[::-1], overwrite=True)
    assert np.array_equal(r[0][0], images[0])  # this process: the store it opened
    got = faults.in_child(lambda: r[0][1])  # a forked child reopens: it must not read the new store
    assert got.startswith("error: NotAStoreError") and "replaced" in got


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    return None


@pytest.mark.skipif(_can_mount() is not None, reason=str(_can_mount()))
@pytest.mark.parametrize("name", BACKENDS + ["lmdb.png", "tar.jpeg", "parquet.raw", "hdf5.png", "disk.jpeg"])
def test_a_full_disk_is_one_error_naming_the_path_and_the_old_store_survives(name):
    row = faults.disk_full(name, {})
    assert row["read"].startswith("DiskFullError:") and "the disk is full" in row["read"], row
    assert "/store:" in row["read"]  # names the path
    assert row["verify"] == "old store intact" and row["verified_read"] == "no temporary left", row
