"""The zarr backend: round trips per compressor, both read paths, zarr's own reader, layouts it
must not read directly, file counts, and a Reader across fork and spawn."""
import json

import numpy as np
import pytest

from imgbench import backends
from helpers import assert_reads_back
from imgbench.backends import _zarr_shards, zarr_store
from imgbench.backends.store import MANIFEST
from helpers import images_and_labels
from helpers import survives_fork_and_spawn

zarr = pytest.importorskip("zarr")

COMPRESSORS = ["none", "zstd", "blosc-lz4"]


def both_paths_agree(b, path, images, labels):
    """The shard-map path (when the layout allows it) and zarr-python's API read the same."""
    store = b.open(path)
    direct, api = b._handle(store), b._handle(store, direct=False)
    assert isinstance(api, zarr_store._ApiHandle)
    try:
        rng = np.random.default_rng(5)
        n = len(images)
        for ids in (rng.permutation(n), rng.integers(0, n, 300), np.arange(n), np.arange(n)[::-1][:77],
                    np.array([n - 1, 0, 0, n // 2]), np.array([n // 3])):
            got = []
            for h in (direct, api):
                out = np.empty((len(ids), *images.shape[1:]), np.uint8)
                got.append((out, h.batch(ids, out)))
            for out, lab in got:
                np.testing.assert_array_equal(out, images[ids])
                np.testing.assert_array_equal(lab, labels[ids])
        for i in (0, n - 1, n // 2):
            for h in (direct, api):
                image, label = h.get(i)
                np.testing.assert_array_equal(image, images[i])
                assert label == labels[i] and isinstance(label, int)
    finally:
        direct.close()
        api.close()
    for direct_flag in (True, False):
        got, got_labels = b._read_all(store, direct=direct_flag)
        np.testing.assert_array_equal(got, images)
        np.testing.assert_array_equal(got_labels, labels)
    return type(b._handle(store))


@pytest.mark.parametrize("compressor", COMPRESSORS)
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip(tmp_path, channels, compressor):
    images, labels = images_and_labels(300, channels, size=(9, 7))
    b = backends.get("zarr", compressor=compressor)
    b.store_many(tmp_path / "s", images, labels)
    ids = np.random.default_rng(1).integers(0, 300, 500)  # shuffled, with repeats
    assert_reads_back(b, tmp_path / "s", images, labels, ids)


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_both_read_paths_identical_across_shards(tmp_path, compressor):
    # 4 shards of 5 chunks; the last shard holds one partial chunk; one chunk is all black.
    images, labels = images_and_labels(1000, size=(4, 5))
    images[64:128] = 0
    b = backends.get("zarr", chunk=64, shard=320, compressor=compressor)
    b.store_many(tmp_path / "s", images, labels)
    kind = both_paths_agree(b, tmp_path / "s", images, labels)
    expected = _zarr_shards.MappedHandle if compressor == "none" else zarr_store._ApiHandle
    assert kind is expected
    assert len(list((tmp_path / "s/images.zarr/images/c").iterdir())) == 4


def test_many_shards_with_few_maps(tmp_path, monkeypatch):
    # Readers keep at most MAX_MAPS shard files mapped (each map holds a file descriptor).
    monkeypatch.setattr(_zarr_shards, "MAX_MAPS", 3)
    images, labels = images_and_labels(1000, size=(4, 4))
    b = backends.get("zarr", chunk=16, shard=32)
    b.store_many(tmp_path / "s", images, labels)
    with b.reader(tmp_path / "s") as reader:
        for ids in np.random.default_rng(3).integers(0, 1000, (20, 100)):
            np.testing.assert_array_equal(reader.get_batch(ids)[0], images[ids])
            assert len(reader._h.maps) <= 3
    assert both_paths_agree(b, tmp_path / "s", images, labels) is _zarr_shards.MappedHandle


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_zarr_reads_the_store(tmp_path, compressor):
    images, labels = images_and_labels(200, 4, size=(6, 6))
    backends.get("zarr", chunk=16, shard=64, compressor=compressor).store_many(tmp_path / "s", images, labels)
    g = zarr.open(tmp_path / "s/images.zarr", mode="r")
    assert isinstance(g, zarr.Group) and sorted(g.keys()) == ["checksums", "images", "labels"]
    assert g.attrs["first_id"] == 0 and g.metadata.zarr_format == 3
    a = g["images"]
    assert a.dtype == np.uint8 and a.shape == images.shape
    assert a.chunks == (16, 6, 6, 4) and a.shards == (64, 6, 6, 4)
    assert [type(c).__name__ for c in a.compressors] == {"none": [], "zstd": ["ZstdCodec"],
                                                         "blosc-lz4": ["BloscCodec"]}[compressor]
    np.testing.assert_array_equal(a[:], images)
    np.testing.assert_array_equal(g["labels"][:], labels)
    assert g["labels"].dtype == np.int64


def test_store_of_one_image(tmp_path):
    images, labels = images_and_labels(1)
    b = backends.get("zarr")
    b.store_many(tmp_path / "many", images, labels)
    assert both_paths_agree(b, tmp_path / "many", images, labels) is _zarr_shards.MappedHandle
    b.store_single(tmp_path / "one", images[0], 77, 5)
    image, label = b.read_single(tmp_path / "one", 77)
    np.testing.assert_array_equal(image, images[0])
    assert label == 5
    assert zarr.open_group(tmp_path / "one/images.zarr", mode="r").attrs["first_id"] == 77


def test_few_files_for_many_images(tmp_path):
    b = backends.get("zarr")
    assert b.layout(100_000, 32 * 32 * 3) == (64, 16384)  # CIFAR: 7 shard files per 100,000 images
    assert b.layout(10, 32 * 32 * 3) == (10, 10)  # a small store is not padded to a whole chunk
    assert b.layout(1000, 32 * 32 * 3) == (64, 1024)
    # The same number of images per shard as CIFAR's default, at a size that writes quickly.
    images, labels = images_and_labels(20_000, size=(4, 4))
    b = backends.get("zarr", chunk=64, shard=16384)
    b.store_many(tmp_path / "s", images, labels)
    files = sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert files == ["images.zarr/checksums/c/0", "images.zarr/checksums/zarr.json",
                     "images.zarr/images/c/0/0/0/0", "images.zarr/images/c/1/0/0/0",
                     "images.zarr/images/zarr.json", "images.zarr/labels/c/0", "images.zarr/labels/zarr.json",
                     "images.zarr/zarr.json", MANIFEST]
    assert both_paths_agree(b, tmp_path / "s", images, labels) is _zarr_shards.MappedHandle
    # and with the automatic sizes, 20,000 such small images are a single shard
    backends.get("zarr").store_many(tmp_path / "auto", images, labels)
    assert len(list((tmp_path / "auto/images.zarr/images/c").iterdir())) == 1


def test_options_are_checked():
    for opts, message in ((dict(chunk=0), "chunk must be a positive"), (dict(shard=2.5), "shard must be"),
                          (dict(chunk=64, shard=100), "multiple of chunk"),
                          (dict(compressor="gzip"), "compressor must be one of")):
        with pytest.raises(ValueError, match=message):
            backends.get("zarr", **opts)
    assert backends.get("zarr", shard=96).layout(10_000, 3072) == (48, 96)  # automatic chunk divides it
    assert backends.get("zarr", shard=97).layout(10_000, 3072) == (1, 97)


# ------------------------------------------------------------------ layouts written by others


def foreign_store(path, images, labels, **array_opts):
    """A zarr group in the store layout, written by zarr-python with other array options."""
    g = zarr.create_group(store=str(path / "images.zarr"), zarr_format=3, attributes={"first_id": 0})
    a = g.create_array("images", shape=images.shape, dtype=np.uint8, fill_value=0, **array_opts)
    a[:] = images
    g.create_array("labels", shape=labels.shape, dtype=np.int64, chunks=labels.shape, compressors=None)[:] = labels
    meta = {"backend": "zarr", "format_version": 1, "count": len(images), "shape": list(images.shape[1:]),
            "first_id": 0}
    (path / MANIFEST).write_text(json.dumps(meta))


def test_index_at_start_is_read_directly(tmp_path):
    images, labels = images_and_labels(500, size=(4, 4))
    shape = images.shape[1:]
    foreign_store(tmp_path, images, labels, chunks=(32, *shape), compressors=None,
                  shards={"shape": (128, *shape), "index_location": "start"}, config={"write_empty_chunks": True})
    assert zarr.open_array(tmp_path / "images.zarr/images").metadata.codecs[0].index_location.value == "start"
    assert both_paths_agree(backends.get("zarr"), tmp_path, images, labels) is _zarr_shards.MappedHandle


@pytest.mark.parametrize("layout", ["unsharded", "missing chunks", "transposed"])
def test_other_layouts_go_through_zarr(tmp_path, layout):
    images, labels = images_and_labels(500, size=(4, 4))
    images[:100] = 0  # all-fill chunks, which zarr skips unless told to write them
    shape = images.shape[1:]
    opts = {"unsharded": dict(chunks=(50, *shape), compressors=None),
            "missing chunks": dict(chunks=(32, *shape), shards=(128, *shape), compressors=None),
            # pixels stored channel-first inside each chunk: same sizes and offsets, other bytes
            "transposed": dict(chunks=(128, *shape), compressors=None, serializer=zarr.codecs.ShardingCodec(
                chunk_shape=(32, *shape), codecs=[zarr.codecs.TransposeCodec(order=(0, 3, 1, 2)),
                                                  zarr.codecs.BytesCodec()]),
                               config={"write_empty_chunks": True})}[layout]
    foreign_store(tmp_path, images, labels, **opts)
    assert both_paths_agree(backends.get("zarr"), tmp_path, images, labels) is zarr_store._ApiHandle


def test_damaged_shard_index_is_not_a_store(tmp_path):
    images, labels = images_and_labels(100, size=(4, 4))
    b = backends.get("zarr")
    b.store_many(tmp_path / "s", images, labels)
    shard = tmp_path / "s/images.zarr/images/c/0/0/0/0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the index, before its crc32c
    shard.write_bytes(bytes(data))
    with pytest.raises(backends.NotAStoreError, match="crc32c"):
        b.read_many(tmp_path / "s")


def test_not_a_zarr_group(tmp_path):
    images, labels = images_and_labels(10, size=(4, 4))
    b = backends.get("zarr")
    b.store_many(tmp_path / "s", images, labels)
    (tmp_path / "s/images.zarr/labels/zarr.json").unlink()
    with pytest.raises(backends.NotAStoreError, match="not a readable zarr store"):
        b.read_many(tmp_path / "s")


# ------------------------------------------------------------------ Reader across processes


@pytest.mark.parametrize("compressor", ["none", "zstd"])  # the shard-map path and zarr-python's
def test_reader_in_forked_and_spawned_children(tmp_path, compressor):
    images, labels = images_and_labels(400, size=(8, 8))
    b = backends.get("zarr", chunk=32, shard=128, compressor=compressor)
    b.store_many(tmp_path / "s", images, labels)
    with b.reader(tmp_path / "s") as reader:
        survives_fork_and_spawn(reader, images, labels)


@pytest.mark.parametrize("n, chunk, shard", [(500, 32, 128), (128, 32, 128), (7, None, None)])
def test_direct_writer_writes_what_zarr_writes(tmp_path, monkeypatch, n, chunk, shard):
    """The shards written straight from the source are byte for byte zarr-python's (a last chunk
    padded with zeros, chunks past the end absent from the index)."""
    images, labels = images_and_labels(n, size=(5, 3))
    b = backends.get("zarr", chunk=chunk, shard=shard)
    calls = []
    real_write = _zarr_shards.write_shards
    monkeypatch.setattr(_zarr_shards, "write_shards", lambda *a: calls.append(1) or real_write(*a))
    ours = b.store_many(tmp_path / "ours", images, labels)
    assert calls, "the uncompressed store did not take the direct path"
    ch, sh = b.layout(n, images[0].nbytes)
    shape = images.shape[1:]
    theirs = tmp_path / "theirs"
    foreign_store(theirs, images, labels, chunks=(ch, *shape), compressors=None, config={"write_empty_chunks": True},
                  shards=(sh, *shape))
    shard_files = sorted(p.relative_to(ours) for p in (ours / "images.zarr/images").rglob("c/*/*/*/*"))
    assert shard_files == sorted(p.relative_to(theirs) for p in (theirs / "images.zarr/images").rglob("c/*/*/*/*"))
    for f in shard_files:
        assert (ours / f).read_bytes() == (theirs / f).read_bytes(), f
    assert np.array_equal(zarr.open_array(ours / "images.zarr/images", mode="r")[...], images)
    assert_reads_back(b, ours, images, labels)


def test_a_store_whose_chunks_are_all_fill_reads(tmp_path):
    """zarr writes no chunk that is all fill value (a single black image labelled 0): no chunk
    directory at all is a store's right, not damage (the checks of untrusted stores allow it)."""
    b = backends.get("zarr")
    b.store_single(tmp_path / "s", np.zeros((8, 8, 3), np.uint8), 0, 0)
    image, label = b.read_single(tmp_path / "s", 0)
    assert label == 0 and not image.any() and backends.verify(tmp_path / "s").ok
