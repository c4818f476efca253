"""parquet backend: round trips, the file read by pandas/pyarrow, the mapped and pyarrow read paths."""
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgbench import backends
from imgbench.backends import parquet_store
from helpers import assert_reads_back, images_and_labels, photos
from helpers import survives_fork_and_spawn


def _file(path):
    return path / "images.parquet"


@pytest.mark.parametrize("encoding", ["png", "raw"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_over_several_row_groups(tmp_path, encoding, channels):
    images, labels = photos(700, channels, seed=channels)
    b = backends.get("parquet", encoding=encoding, row_group=256, workers=2)
    b.store_many(tmp_path / "s", images, labels)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["images.parquet", "imgbench.json"]
    assert pq.ParquetFile(_file(tmp_path / "s")).metadata.num_row_groups == 3
    ids = np.random.default_rng(1).integers(0, 700, 200)
    ids[:5] = [699, 0, 0, 256, 255]  # row group edges and repeats
    assert_reads_back(b, tmp_path / "s", images, labels, ids)
    image, label = b.read_single(tmp_path / "s", 513)
    np.testing.assert_array_equal(image, images[513])
    assert label == labels[513]


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_store_of_one_image(tmp_path, encoding):
    images, labels = photos(1, 1, size=(5, 9))
    b = backends.get("parquet", encoding=encoding)
    b.store_single(tmp_path / "one", images[0], 77, int(labels[0]))
    image, label = b.read_single(tmp_path / "one", 77)
    np.testing.assert_array_equal(image, images[0])
    assert label == labels[0]
    np.testing.assert_array_equal(b.read_many(tmp_path / "one")[0], images)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_pandas_reads_ids_labels_and_pixels(tmp_path, encoding):
    import pandas as pd
    from PIL import Image

    images, labels = photos(60, 4)
    backends.get("parquet", encoding=encoding, row_group=25).store_many(tmp_path / "s", images, labels)
    df = pd.read_parquet(_file(tmp_path / "s"))
    assert list(df.columns) == ["id", "label", "image", "checksum"]
    assert df["id"].tolist() == list(range(60)) and df["label"].tolist() == labels.tolist()
    meta = json.loads(pq.read_schema(_file(tmp_path / "s")).metadata[b"imgbench"])
    assert meta == {"shape": [32, 32, 4], "encoding": encoding}
    if encoding == "png":
        got = np.stack([np.asarray(Image.open(io.BytesIO(v))) for v in df["image"]])
    else:
        got = np.stack([np.frombuffer(v, np.uint8).reshape(meta["shape"]) for v in df["image"]])
    np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_file_layout_is_what_the_mapped_reader_needs(tmp_path, encoding):
    images, labels = photos(300)
    backends.get("parquet", encoding=encoding, row_group=128).store_many(tmp_path / "s", images, labels)
    pf = pq.ParquetFile(_file(tmp_path / "s"))
    assert pf.schema.column(2).max_definition_level == 0  # non-nullable
    for g in range(pf.metadata.num_row_groups):
        chunk = pf.metadata.row_group(g).column(2)
        assert chunk.compression == "UNCOMPRESSED" and not chunk.has_dictionary_page
        assert "PLAIN" in chunk.encodings and not chunk.is_stats_set
    assert pf.metadata.row_group(0).column(0).is_stats_set  # ids keep statistics for filters
    assert pq.read_table(_file(tmp_path / "s"), filters=[("id", "in", [5, 200])])["label"].to_pylist() == \
        labels[[5, 200]].tolist()


def _both_handles(path):
    store = backends.get("parquet").open(path)
    f = parquet_store._File(store)
    assert f.spans is not None
    return parquet_store._MappedHandle(f), parquet_store._ArrowHandle(parquet_store._File(store))


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_mapped_and_pyarrow_paths_agree(tmp_path, encoding):
    images, labels = photos(500, 3)
    backends.get("parquet", encoding=encoding, row_group=64).store_many(tmp_path / "s", images, labels)
    mapped, arrow = _both_handles(tmp_path / "s")
    rng = np.random.default_rng(4)
    for pos in (rng.integers(0, 500, 256), np.arange(500), np.array([499, 0, 64, 63, 63])):
        a, b = np.empty((len(pos), 32, 32, 3), np.uint8), np.empty((len(pos), 32, 32, 3), np.uint8)
        np.testing.assert_array_equal(mapped.batch(pos, a), arrow.batch(pos, b))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, images[pos])
    assert len(arrow.cache) == parquet_store.CACHED_ROW_GROUPS
    image, label = mapped.get(130)
    np.testing.assert_array_equal(image, arrow.get(130)[0])
    assert label == arrow.get(130)[1] == labels[130]
    mapped.close()
    arrow.close()


@pytest.mark.parametrize("rewrite", [dict(compression="zstd"), dict(use_dictionary=True),
                                     dict(data_page_size=4096, write_batch_size=8), dict(nullable=True)],
                         ids=["compressed", "dictionary", "small-pages", "nullable"])
@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_other_layouts_are_read_through_pyarrow(tmp_path, encoding, rewrite):
    import pyarrow as pa

    rewrite = dict(rewrite)  # the parameter is shared between test cases
    images, labels = photos(200, 1)
    b = backends.get("parquet", encoding=encoding, row_group=50)
    b.store_many(tmp_path / "s", images, labels)
    table = pq.read_table(_file(tmp_path / "s"))
    if rewrite.pop("nullable", False):
        table = table.cast(pa.schema([f.with_nullable(True) for f in table.schema], metadata=table.schema.metadata))
    opts = dict(compression="none", use_dictionary=False, data_page_size=2**30, row_group_size=50) | rewrite
    pq.write_table(table, _file(tmp_path / "s"), **opts)
    with b.reader(tmp_path / "s") as r:
        ids = np.random.default_rng(2).integers(0, 200, 80)
        got, got_labels = r.get_batch(ids)
        assert type(r._h).__name__ == "_ArrowHandle"
    np.testing.assert_array_equal(got, images[ids])
    np.testing.assert_array_equal(got_labels, labels[ids])
    np.testing.assert_array_equal(b.read_many(tmp_path / "s")[0], images)


@pytest.mark.skipif(not parquet_store._ROWS_PER_PAGE, reason="this pyarrow cannot set rows per page")
def test_row_groups_beyond_pyarrows_page_row_limit_stay_mapped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (20_500, 2, 2, 1), dtype=np.uint8)
    b = backends.get("parquet", encoding="raw", row_group=20_500)
    b.store_many(tmp_path / "s", images, np.arange(20_500))
    with b.reader(tmp_path / "s") as r:
        got, _ = r.get_batch([20_499, 3, 20_000])
        assert type(r._h).__name__ == "_MappedHandle"
    np.testing.assert_array_equal(got, images[[20_499, 3, 20_000]])
    np.testing.assert_array_equal(b.read_many(tmp_path / "s")[0], images)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_reader_in_parent_then_forked_children_and_spawned(tmp_path, encoding):
    images, labels = photos(300, seed=3)
    b = backends.get("parquet", encoding=encoding, row_group=70)
    b.store_many(tmp_path / "s", images, labels)
    with b.reader(tmp_path / "s") as r:
        survives_fork_and_spawn(r, images, labels)


def test_damaged_stores_are_reported(tmp_path):
    images, labels = photos(50)
    b = backends.get("parquet")
    for name in ("short", "gone"):
        b.store_many(tmp_path / name, images, labels)
    with open(_file(tmp_path / "short"), "r+b") as f:
        f.truncate(5000)
    _file(tmp_path / "gone").unlink()
    with pytest.raises(backends.NotAStoreError, match="not a readable parquet store"):
        b.read_many(tmp_path / "short")
    with pytest.raises(backends.NotAStoreError, match="not a readable parquet store"):
        b.read_single(tmp_path / "gone", 3)


def test_options_are_checked():
    for opts, message in [(dict(encoding="gif"), "encoding must be one of 'raw', 'png', 'jpeg', 'webp'"),
                          (dict(quality=0), "quality must be 1..95"),
                          (dict(row_group=0), "row_group must be a positive number"),
                          (dict(compression="lzma"), "compression must be one of"),
                          (dict(compress_level=-1), "compress_level must be 0..9"),
                          (dict(workers=0), "workers must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            backends.get("parquet", **opts)
    assert repr(backends.get("parquet")) == ("backends.get('parquet', encoding='png', quality=90, row_group=1000, "
                                             "compression=None, compress_level=6, workers=None, fsync=False)")


def test_the_png_walk_reads_the_file_not_the_map(tmp_path):
    """A PNG row group's value lengths are walked from one read of its page: through the map a
    reader advises for random reads, the walk faulted a page at a time (an I/O per 4 KiB: the
    first shuffled batch of the default run's store in a cloud-ssd tier took 13 s)."""
    from imgbench.backends import _parquet_pages, parquet_store

    images, labels = images_and_labels(300)
    backends.get("parquet", encoding="png", row_group=100).store_many(tmp_path / "s", images, labels)
    store = backends.get("parquet").open(tmp_path / "s")
    f = parquet_store._File(store)
    f.pf.close()
    assert isinstance(f.pages, _parquet_pages.Pages)
    empty = memoryview(b"")  # a map with nothing in it: the walk must not need one
    for g in range(3):
        start, size = f.pages.locate(empty, g, 7)
        with open(tmp_path / "s/images.parquet", "rb") as fh:
            fh.seek(start)
            value = fh.read(size)
        assert value[:8] == b"\x89PNG\r\n\x1a\n"
