import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import NAMES, REPO, STORE_UNDER_LIMIT, photos
from imgbench import backends
from imgbench.backends.store import MANIFEST


@pytest.fixture(params=NAMES)
def backend(request):
    return backends.get(request.param)


def valid_stores(root):
    return [d for d in root.rglob(MANIFEST)]


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_store_many_read_many_round_trip(tmp_path, backend, channels):
    images, labels = photos(300, channels)
    backend.store_many(tmp_path / "s", images, labels)
    got, got_labels = backend.read_many(tmp_path / "s")
    assert got.dtype == np.uint8 and got.shape == images.shape
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64


def test_read_many_by_ids_any_order_with_repeats(tmp_path, backend):
    images, labels = photos(700)
    backend.store_many(tmp_path / "s", images, labels)
    rng = np.random.default_rng(1)
    for ids in (rng.permutation(700), rng.integers(0, 700, 50), [699, 0, 0, 350], [5],
                np.arange(100, 400)[::-1], rng.permutation(700)[:20]):
        got, got_labels = backend.read_many(tmp_path / "s", ids)
        np.testing.assert_array_equal(got, images[np.asarray(ids)])
        np.testing.assert_array_equal(got_labels, labels[np.asarray(ids)])
    empty, empty_labels = backend.read_many(tmp_path / "s", [])
    assert empty.shape == (0, 32, 32, 3) and empty_labels.shape == (0,)


def test_store_of_one_image_and_odd_shapes(tmp_path, backend):
    images, labels = photos(1, size=(7, 13))
    backend.store_many(tmp_path / "one", images, labels)
    got, got_labels = backend.read_many(tmp_path / "one")
    np.testing.assert_array_equal(got, images)
    assert got_labels.tolist() == labels.tolist()


def test_wide_labels_round_trip(tmp_path, backend):
    images, _ = photos(20)
    labels = np.array([-5, 0, 255, 256, 10**6, -(2**40), 2**62] + list(range(13)))
    if backend.name == "article-hdf5":  # the article's U8BE labels: refused, never clipped
        with pytest.raises(ValueError, match="0..255"):
            backend.store_many(tmp_path / "s", images, labels)
        return
    backend.store_many(tmp_path / "s", images, labels)
    np.testing.assert_array_equal(backend.read_many(tmp_path / "s")[1], labels)
    assert backend.read_single(tmp_path / "s", 6)[1] == 2**62


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_store_single_read_single(tmp_path, backend, channels):
    images, labels = photos(1, channels)
    backend.store_single(tmp_path / "single", images[0], 4242, int(labels[0]))
    image, label = backend.read_single(tmp_path / "single", 4242)
    np.testing.assert_array_equal(image, images[0])
    assert label == labels[0] and isinstance(label, int)
    got, _ = backend.read_many(tmp_path / "single", [4242])
    np.testing.assert_array_equal(got[0], images[0])


def test_read_single_from_a_many_store(tmp_path, backend):
    images, labels = photos(400)
    backend.store_many(tmp_path / "s", images, labels)
    for i in (0, 123, 399):
        image, label = backend.read_single(tmp_path / "s", i)
        np.testing.assert_array_equal(image, images[i])
        assert label == labels[i]


def test_disk_parallel_and_serial_write_identical_files(tmp_path):
    images, labels = photos(600)
    backends.get("disk", workers=1).store_many(tmp_path / "serial", images, labels)
    backends.get("disk", workers=2).store_many(tmp_path / "parallel", images, labels)
    for i in (0, 299, 599):
        assert (tmp_path / f"serial/{i}.png").read_bytes() == (tmp_path / f"parallel/{i}.png").read_bytes()
    got, _ = backends.get("disk", workers=2).read_many(tmp_path / "serial")
    np.testing.assert_array_equal(got, images)
    assert len(list((tmp_path / "parallel").glob("*.png"))) == 600


def test_disk_compress_level_and_per_image_labels(tmp_path):
    images, labels = photos(50)
    backends.get("disk", compress_level=0).store_many(tmp_path / "raw", images, labels)
    b = backends.get("disk", compress_level=9, per_image_labels=True)
    b.store_many(tmp_path / "small", images, labels)
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.png"))
    assert size(tmp_path / "small") < 0.9 * size(tmp_path / "raw")
    assert (tmp_path / "small/7.csv").read_text().strip() == str(labels[7])
    assert b.read_single(tmp_path / "small", 7)[1] == labels[7]
    np.testing.assert_array_equal(b.read_many(tmp_path / "raw")[0], images)


@pytest.mark.parametrize("opts", [dict(chunks=64), dict(compression="gzip"), dict(chunks=10, compression="lzf"),
                                  dict(compression="gzip", compression_opts=9)])
def test_hdf5_chunking_and_compression(tmp_path, opts):
    import h5py

    images, labels = photos(300)
    b = backends.get("hdf5", **opts)
    b.store_many(tmp_path / "s", images, labels)
    with h5py.File(tmp_path / "s/images.h5") as f:
        ds = f["images"]
        assert ds.dtype == np.dtype("u1") and ds.dtype.byteorder in "|="  # native, not big-endian
        assert ds.chunks is not None and ds.compression == opts.get("compression")
    ids = np.random.default_rng(2).permutation(300)[:77]
    np.testing.assert_array_equal(b.read_many(tmp_path / "s", ids)[0], images[ids])
    np.testing.assert_array_equal(b.read_many(tmp_path / "s")[0], images)


def test_hdf5_default_is_contiguous_native_uint8(tmp_path):
    import h5py

    images, labels = photos(20)
    backends.get("hdf5").store_many(tmp_path / "s", images, labels)
    with h5py.File(tmp_path / "s/images.h5") as f:
        assert f["images"].chunks is None and f["images"].dtype.str == "|u1"


def test_lmdb_values_are_raw_pixels_not_pickles(tmp_path):
    import lmdb

    images, labels = photos(3)
    backends.get("lmdb").store_many(tmp_path / "s", images, labels)
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False) as env, env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        value = txn.get(b"0000000001")
    assert keys == [b"0000000000", b"0000000001", b"0000000002"]
    assert value[24:] == images[1].tobytes() and len(value) == 24 + images[1].nbytes
    assert not value.startswith(b"\x80")  # no pickle protocol marker


def test_lmdb_grows_a_tiny_map(tmp_path):
    images, labels = photos(500)
    b = backends.get("lmdb", map_size=8 * 4096)
    b.store_many(tmp_path / "s", images, labels)
    assert b.map_grown >= 3
    assert repr(b) == ("backends.get('lmdb', encoding='raw', quality=90, compress_level=6, map_size=32768, "
                       "readahead=True, workers=None, fsync=False)")
    np.testing.assert_array_equal(b.read_many(tmp_path / "s")[0], images)


# ------------------------------------------------------------------ bad input


BAD = [
    (lambda im, lab: (im.astype(np.float32), lab), "must be uint8, got float32"),
    (lambda im, lab: (im[0], lab), r"shape \(N, H, W, C\)"),
    (lambda im, lab: (im[:, :, :, :2], lab), "1, 3 or 4 channels"),
    (lambda im, lab: (im, lab[:-1]), "labels must be a 1-D array of 10"),
    (lambda im, lab: (im[:0], lab[:0]), "empty batch"),
    (lambda im, lab: (im, lab.astype(float)), "labels must be integers"),
    (lambda im, lab: (im.tolist(), lab), r"images\[0\] must be an \(H, W, C\) uint8 array"),
    (lambda im, lab: (iter(im), lab), "must be a numpy array"),
    (lambda im, lab: ([im[0], im[1, :5].astype(np.int16)], lab[:2]), r"images\[1\] must be an \(H, W, C\) uint8"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, backend, make, message):
    images, labels = make(*photos(10))
    with pytest.raises(ValueError, match=message):
        backend.store_many(tmp_path / "s", images, labels)
    assert list(tmp_path.iterdir()) == []


def test_bad_single_input(tmp_path, backend):
    images, _ = photos(1)
    with pytest.raises(ValueError, match="image must be"):
        backend.store_single(tmp_path / "s", images, 0, 1)
    with pytest.raises(ValueError, match="image_id must"):
        backend.store_single(tmp_path / "s", images[0], -1, 1)
    with pytest.raises(ValueError, match="label must be an integer"):
        backend.store_single(tmp_path / "s", images[0], 0, "cat")
    assert list(tmp_path.iterdir()) == []


def test_existing_store_needs_overwrite(tmp_path, backend):
    images, labels = photos(20)
    backend.store_many(tmp_path / "s", images, labels)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        backend.store_many(tmp_path / "s", images[:5], labels[:5])
    np.testing.assert_array_equal(backend.read_many(tmp_path / "s")[0], images)
    backend.store_many(tmp_path / "s", images[:5], labels[:5], overwrite=True)
    np.testing.assert_array_equal(backend.read_many(tmp_path / "s")[0], images[:5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_foreign_directory_is_never_replaced(tmp_path, backend):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/thesis.tex").write_text("precious")
    images, labels = photos(5)
    with pytest.raises(FileExistsError, match="not an imgbench store"):
        backend.store_many(tmp_path / "mine", images, labels, overwrite=True)
    assert (tmp_path / "mine/thesis.tex").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    backend.store_many(tmp_path / "empty", images, labels)  # an empty directory is fine
    assert backend.read_many(tmp_path / "empty")[0].shape == images.shape


def test_missing_id_is_a_key_error_naming_id_and_store(tmp_path, backend):
    images, labels = photos(10)
    backend.store_many(tmp_path / "s", images, labels)
    with pytest.raises(KeyError, match=r"image id 10 is not in .*s \(it holds ids 0\.\.9\)"):
        backend.read_single(tmp_path / "s", 10)
    with pytest.raises(KeyError, match="image id 99"):
        backend.read_many(tmp_path / "s", [1, 99, 2])


def test_reading_what_is_not_a_store(tmp_path, backend):
    other = [n for n in NAMES if n != backend.name][0]
    images, labels = photos(5)
    backends.get(other).store_many(tmp_path / "other", images, labels)
    with pytest.raises(backends.NotAStoreError, match=f"is a '{other}' store, not a {backend.name} store"):
        backend.read_many(tmp_path / "other")
    (tmp_path / "plain").mkdir()
    with pytest.raises(backends.NotAStoreError, match=f"not a {backend.name} store"):
        backend.read_many(tmp_path / "plain")
    with pytest.raises(backends.NotAStoreError, match="does not exist"):
        backend.read_single(tmp_path / "nowhere", 0)


def test_registry_errors():
    with pytest.raises(ValueError, match=f"unknown backend 'jpeg-files'; known backends: {', '.join(NAMES)}"):
        backends.get("jpeg-files")
    with pytest.raises(ValueError, match="unknown option 'level' for backend 'disk'; options: format, compress_level"):
        backends.get("disk", level=3)
    with pytest.raises(ValueError, match="compression must be"):
        backends.get("hdf5", compression="zstd")


# ------------------------------------------------------------------ failures half way

@pytest.mark.slow  # a store in its own process under a file-size limit
def test_write_failure_half_way_leaves_no_valid_store(tmp_path, backend):
    # A real I/O failure part way through: no file may grow past about half of what it needs
    # (3000 images: PNG files of ~3 kB pass but the 24 kB labels CSV at the end fails; LMDB's
    # 12 MB and HDF5's 9 MB single file fail in the middle).
    limit = {"disk": 10_000, "lmdb": 6_000_000, "hdf5": 4_500_000, "npy": 4_500_000, "zarr": 4_500_000,
             "tar": 5_000_000, "parquet": 2_500_000, "sqlite": 6_000_000, "lance": 4_500_000, "hfdatasets": 4_500_000, "litdata": 4_500_000,
             "article-disk": 5_000, "article-lmdb": 6_000_000, "article-hdf5": 4_500_000}[backend.name]
    code = STORE_UNDER_LIMIT.format(repo=str(REPO), n=3000, limit=limit, name=backend.name,
                                     path=str(tmp_path / "s"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0, p.stdout
    assert not (tmp_path / "s").exists()
    assert valid_stores(tmp_path) == [] and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a 30,000-image store killed part way
def test_killed_store_leaves_nothing_that_reads_as_valid(tmp_path):
    code = STORE_UNDER_LIMIT.replace("resource.setrlimit", "# ").format(
        repo=str(REPO), n=30000, limit=0, name="disk", path=str(tmp_path / "s"))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".png") for d in tmp_path.glob(".s.tmp-*") for p in d.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "s").exists() and valid_stores(tmp_path) == []
    with pytest.raises(backends.NotAStoreError):
        backends.get("disk").read_many(tmp_path / "s")


def test_config_schema_knows_every_backend_and_its_options():
    import yaml

    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())["properties"]
    assert schema["backends"]["items"]["pattern"].startswith(f"^({'|'.join(NAMES)})")
    per_backend = schema["backend_options"]["properties"]
    assert list(per_backend) == NAMES
    for name in NAMES:
        options = per_backend[name]["properties"]
        assert {k: v["default"] for k, v in options.items()} == backends.options(name), name


def test_config_schema_gives_every_key_a_description_type_and_default():
    """The Snakemake workflow catalog builds its parameter table from these three."""
    import yaml

    def keys(node, path=""):
        for k, sub in node.get("properties", {}).items():
            yield f"{path}{k}", sub
            yield from keys(sub, f"{path}{k}.")

    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())
    found = list(keys(schema))
    assert len(found) > 60
    missing = [(k, f) for k, sub in found for f in ("description", "type", "default") if f not in sub]
    assert missing == []


def test_config_defaults_are_filled_from_the_schema():
    from imgbench.workflow.config import check

    config = {"dataset": "sample", "backend_options": {"disk": {"compress_level": 1}}}
    check(config, REPO / "schemas/config.schema.yaml")
    assert config["repeats"] == 3 and config["epoch"]["workers"] == [0, 1, 2]
    assert config["backend_options"]["disk"] == {**backends.options("disk"), "compress_level": 1}
    assert config["backend_options"]["parquet"] == backends.options("parquet")
