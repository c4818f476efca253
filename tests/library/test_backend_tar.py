"""tar (WebDataset) backend: round trips, its shards read by webdataset, tar and tarfile, readers."""
import io
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from imgbench import backends
from imgbench.backends import tar_store
from helpers import assert_reads_back, photos
from helpers import survives_fork_and_spawn


def _shards(path):
    return sorted(path.glob("shard-*.tar"))


@pytest.mark.parametrize("encoding", ["png", "raw"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_over_several_shards(tmp_path, encoding, channels):
    # 700 images in shards of 300, written by 2 processes whose pieces straddle shard starts.
    images, labels = photos(700, channels, seed=channels)
    b = backends.get("tar", shard_size=300, encoding=encoding, workers=2)
    b.store_many(tmp_path / "s", images, labels)
    assert [p.name for p in _shards(tmp_path / "s")] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not list((tmp_path / "s").glob(".*"))  # no part files left behind
    ids = np.random.default_rng(1).integers(0, 700, 200)
    ids[:5] = [699, 0, 0, 300, 299]  # shard edges and repeats
    assert_reads_back(b, tmp_path / "s", images, labels, ids)
    image, label = b.read_single(tmp_path / "s", 599)
    np.testing.assert_array_equal(image, images[599])
    assert label == labels[599]


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_store_of_one_image(tmp_path, encoding):
    images, labels = photos(1, 4, size=(5, 9))
    b = backends.get("tar", encoding=encoding)
    b.store_single(tmp_path / "one", images[0], 1234, int(labels[0]))
    image, label = b.read_single(tmp_path / "one", 1234)
    np.testing.assert_array_equal(image, images[0])
    assert label == labels[0]
    with tarfile.open(tmp_path / "one/shard-000000.tar") as t:
        assert t.getnames() == [f"0000001234.{'png' if encoding == 'png' else 'npy'}", "0000001234.cls"]


def test_parallel_and_serial_writes_are_identical(tmp_path):
    images, labels = photos(600)
    backends.get("tar", shard_size=250, workers=1).store_many(tmp_path / "serial", images, labels)
    backends.get("tar", shard_size=250, workers=2).store_many(tmp_path / "parallel", images, labels)
    for a, b in zip(_shards(tmp_path / "serial"), _shards(tmp_path / "parallel"), strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "serial/index.npy").read_bytes() == (tmp_path / "parallel/index.npy").read_bytes()
    with tarfile.open(_shards(tmp_path / "serial")[0]) as t:  # reproducible: no wall-clock time inside
        assert {m.mtime for m in t.getmembers()} == {tar_store.MTIME}
    got, _ = backends.get("tar", workers=1).read_many(tmp_path / "parallel")  # serial read of it
    np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize("chunk", [1000, 20_000])  # smaller than one member; a few members
@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_whole_read_streams_in_chunks(tmp_path, monkeypatch, encoding, chunk):
    monkeypatch.setattr(tar_store, "READ_CHUNK", chunk)
    images, labels = photos(400, 1)
    b = backends.get("tar", shard_size=150, encoding=encoding, workers=2)
    b.store_many(tmp_path / "s", images, labels)
    got, got_labels = b.read_many(tmp_path / "s")
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_index_matches_tarfile_and_members_are_real_files(tmp_path, encoding):
    images, labels = photos(120, 3)
    backends.get("tar", shard_size=50, encoding=encoding).store_many(tmp_path / "s", images, labels)
    index = np.load(tmp_path / "s/index.npy")
    rows = []
    for shard, path in enumerate(_shards(tmp_path / "s")):
        with tarfile.open(path) as t:
            members = t.getmembers()
            assert [m.name for m in members] == [f"{i:010d}.{ext}" for i in range(shard * 50, min(120, shard * 50 + 50))
                                                 for ext in (("png" if encoding == "png" else "npy"), "cls")]
            for m in members[::2]:
                rows.append((shard, m.offset_data, m.size))
            i = shard * 50
            data = t.extractfile(members[0]).read()
            if encoding == "raw":  # a real .npy file
                np.testing.assert_array_equal(np.load(io.BytesIO(data)), images[i])
            else:
                from PIL import Image

                np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), images[i])
            assert t.extractfile(members[1]).read() == str(labels[i]).encode()
    np.testing.assert_array_equal(index[:, :3], np.array(rows))
    np.testing.assert_array_equal(index[:, 3], labels)


@pytest.mark.parametrize("encoding,channels", [("png", 1), ("png", 3), ("png", 4), ("raw", 4)])
def test_webdataset_reads_the_shards(tmp_path, encoding, channels):
    wds = pytest.importorskip("webdataset")
    images, labels = photos(90, channels, seed=5)
    backends.get("tar", shard_size=40, encoding=encoding).store_many(tmp_path / "s", images, labels)
    urls = [str(p) for p in _shards(tmp_path / "s")]
    spec = {1: "l8", 3: "rgb8", 4: "rgba8"}[channels] if encoding == "png" else "rgb8"  # .npy: np.load
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode(spec))
    assert [s["__key__"] for s in samples] == [f"{i:010d}" for i in range(90)]
    got = np.stack([s["png" if encoding == "png" else "npy"] for s in samples])
    np.testing.assert_array_equal(got.reshape(images.shape), images)
    assert [s["cls"] for s in samples] == labels.tolist()


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar program")
def test_tar_lists_members_in_key_order(tmp_path):
    images, labels = photos(30)
    backends.get("tar", shard_size=12).store_many(tmp_path / "s", images, labels)
    listed = []
    for path in _shards(tmp_path / "s"):
        p = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True)
        assert p.stderr == ""
        listed += p.stdout.split()
    assert listed == [f"{i:010d}.{ext}" for i in range(30) for ext in ("png", "cls")]


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_reader_in_parent_then_forked_children_and_spawned(tmp_path, encoding):
    images, labels = photos(300, seed=3)
    b = backends.get("tar", shard_size=70, encoding=encoding)
    b.store_many(tmp_path / "s", images, labels)
    with b.reader(tmp_path / "s") as r:
        survives_fork_and_spawn(r, images, labels)


def test_damaged_stores_are_reported(tmp_path):
    images, labels = photos(50)
    b = backends.get("tar", shard_size=20)
    for name in ("short", "noindex", "gone"):
        b.store_many(tmp_path / name, images, labels)
    with open(tmp_path / "short/shard-000001.tar", "r+b") as f:
        f.truncate(5000)
    (tmp_path / "noindex/index.npy").unlink()
    (tmp_path / "gone/shard-000002.tar").unlink()
    with pytest.raises(backends.NotAStoreError, match="shard-000001.tar has 5000 bytes"):
        b.read_many(tmp_path / "short")
    with pytest.raises(backends.NotAStoreError, match="index.npy is missing"):
        b.read_many(tmp_path / "noindex", [1])
    with pytest.raises(backends.NotAStoreError, match="shard-000002.tar is missing; the store is damaged"):
        b.read_single(tmp_path / "gone", 3)


def test_options_are_checked():
    for opts, message in [(dict(shard_size=0), "shard_size must be a positive integer"),
                          (dict(encoding="webp"), "encoding must be one of 'raw', 'png', 'jpeg', 'source'"),
                          (dict(compress_level=10), "compress_level must be 0..9"),
                          (dict(workers=0), "workers must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            backends.get("tar", **opts)
    assert repr(backends.get("tar", encoding="raw")) == (
        "backends.get('tar', shard_size=10000, encoding='raw', quality=90, compress_level=6, workers=None, "
        "fsync=False)")
