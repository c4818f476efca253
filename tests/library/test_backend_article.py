"""The article's three methods (article-disk, article-lmdb, article-hdf5): round trips, the files
the article writes, its formats opened with their own tools, refusals, and a restricted unpickler."""
import csv
import io
import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest

import helpers
from helpers import REPO
from imgbench import backends
from imgbench.workflow import sources
from imgbench.backends import article_lmdb as article
from imgbench.backends import NotAStoreError

ARTICLE = ["article-disk", "article-lmdb", "article-hdf5"]
_generic_photos = helpers.photos


def photos(n, channels=3, seed=0, size=(32, 32)):
    """helpers.photos, with labels the article can store everywhere (HDF5: 0..255)."""
    images, labels = _generic_photos(n, channels, seed, size)
    return images, labels % 256


@pytest.fixture(params=ARTICLE)
def backend(request):
    return backends.get(request.param)


def test_registered_first_with_their_options():
    assert backends.names()[:3] == ARTICLE
    assert backends.options("article-disk") == {"fsync": False}
    assert backends.options("article-lmdb") == {"sync": True, "fsync": False}
    assert backends.options("article-hdf5") == {"fsync": False}
    assert repr(backends.get("article-lmdb", sync=False)) == "backends.get('article-lmdb', sync=False, fsync=False)"
    assert len({sources.backend_hash(n) for n in ARTICLE}) == 3  # a module each


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_round_trip_and_ids_shuffled_with_repeats(tmp_path, backend, channels):
    images, labels = photos(120, channels, seed=channels)
    backend.store_many(tmp_path / "s", images, labels)
    got, got_labels = backend.read_many(tmp_path / "s")
    assert got.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_labels, labels)
    ids = np.random.default_rng(channels).permutation(120)
    ids[:10] = ids[10]  # repeats
    got, got_labels = backend.read_many(tmp_path / "s", ids)
    np.testing.assert_array_equal(got, images[ids])
    np.testing.assert_array_equal(got_labels, labels[ids])
    for i in (0, 77, 119):
        image, label = backend.read_single(tmp_path / "s", i)
        np.testing.assert_array_equal(image, images[i])
        assert label == labels[i] and isinstance(label, int)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_one_image(tmp_path, backend, channels):
    images, labels = photos(1, channels, size=(7, 13))
    backend.store_many(tmp_path / "many", images, labels)
    got, got_labels = backend.read_many(tmp_path / "many")
    np.testing.assert_array_equal(got, images)
    assert got_labels.tolist() == labels.tolist()
    backend.store_single(tmp_path / "single", images[0], 4242, int(labels[0]))
    image, label = backend.read_single(tmp_path / "single", 4242)
    np.testing.assert_array_equal(image, images[0])
    assert label == labels[0]
    np.testing.assert_array_equal(backend.read_many(tmp_path / "single", [4242, 4242])[0], images[[0, 0]])


# ------------------------------------------------------------------ the article's files, opened with their own tools


def test_disk_writes_one_default_png_per_image_and_the_article_label_csv(tmp_path):
    from PIL import Image

    images, labels = photos(12)
    backends.get("article-disk").store_many(tmp_path / "s", images, labels)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == sorted([f"{i}.png" for i in range(12)] + ["12.csv", "checksums.npy", "imgbench.json"])
    for i in range(12):
        path = tmp_path / f"s/{i}.png"
        default = io.BytesIO()
        Image.fromarray(images[i]).save(default, format="PNG")  # Pillow's default PNG settings
        assert path.read_bytes() == default.getvalue()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), images[i])
    # csv.writer in the article's dialect, one row per label, file opened with "w" (\r\n rows)
    assert (tmp_path / "s/12.csv").read_bytes() == b"".join(b"%d\r\n" % v for v in labels)
    with open(tmp_path / "s/12.csv", newline="") as f:
        rows = list(csv.reader(f, delimiter=" ", quotechar="|", quoting=csv.QUOTE_MINIMAL))
    assert [int(r[0]) for r in rows] == labels.tolist()


def test_disk_ids_name_the_files_and_grey_images_are_L_pngs(tmp_path):
    from PIL import Image

    images, labels = photos(1, channels=1)
    backends.get("article-disk").store_single(tmp_path / "s", images[0], 31, int(labels[0]))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["1.csv", "31.png", "checksums.npy", "imgbench.json"]
    with Image.open(tmp_path / "s/31.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), images[0, :, :, 0])


def test_disk_reads_close_nothing_pillow_has_not_closed_already(tmp_path):
    # Why closing the images we open costs nothing: np.array loads the pixels, and Pillow then
    # closes a single-frame PNG's file itself, as it does for the article's unclosed images.
    from PIL import Image

    images, labels = photos(2)
    backends.get("article-disk").store_many(tmp_path / "s", images, labels)
    im = Image.open(tmp_path / "s/1.png")
    np.array(im)
    assert im.fp is None


def test_lmdb_values_are_pickled_article_images_under_the_article_keys(tmp_path):
    import lmdb

    images, labels = photos(5, channels=4)
    backends.get("article-lmdb").store_many(tmp_path / "s", images, labels)
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False) as env, env.begin() as txn:
        items = list(txn.cursor())
    assert [k for k, _ in items] == [b"00000000", b"00000001", b"00000002", b"00000003", b"00000004"]
    for i, (_, value) in enumerate(items):
        c = article.article_loads(value)
        assert type(c) is article.ArticleImage
        assert c.channels == 4 and c.size == (32, 32) and c.image == images[i].tobytes()
        assert type(c.label) is np.int64 and c.label == labels[i]  # the numpy scalar labels[i], as the article
        np.testing.assert_array_equal(c.get_image(), images[i])
    # what a value holds: the class and numpy's integer-scalar rebuilders, nothing else
    seen = []

    class Recording(article.ArticleUnpickler):
        def find_class(self, module, name):
            seen.append((module, name))
            return super().find_class(module, name)

    Recording(io.BytesIO(items[0][1])).load()
    numpy_scalar = np.int64(0).__reduce__()[0]
    assert seen == [("imgbench.backends.article_lmdb", "ArticleImage"), (numpy_scalar.__module__, "scalar"),
                    ("numpy", "dtype")]
    # stores written when the three article backends shared one module name it so: still readable
    import types

    old_module = types.ModuleType("imgbench.backends.article")
    old_module.ArticleImage = article.ArticleImage
    with pytest.MonkeyPatch.context() as m:
        m.setitem(sys.modules, "imgbench.backends.article", old_module)
        m.setattr(article.ArticleImage, "__module__", "imgbench.backends.article")
        old = pickle.dumps(article.ArticleImage(images[0], labels[0]))
    assert b"imgbench.backends.article\x94" in old and article.article_loads(old).image == images[0].tobytes()
    assert all(op.name not in ("GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID")
               for op, _, _ in pickletools.genops(items[0][1]))


def test_lmdb_is_opened_as_the_article_opens_it(tmp_path, monkeypatch):
    import lmdb

    calls = []
    real = lmdb.open

    def spy(path, **kw):
        calls.append(kw)
        return real(path, **kw)

    monkeypatch.setattr(lmdb, "open", spy)
    images, labels = photos(20)
    b = backends.get("article-lmdb")
    b.store_many(tmp_path / "s", images, labels)
    assert calls == [dict(map_size=20 * images[0].nbytes * 10, sync=True)]  # LMDB's defaults: sync on
    b.read_many(tmp_path / "s")
    assert calls[1] == dict(readonly=True, lock=False)  # the article's open, without the lock file
    backends.get("article-lmdb", sync=False).store_many(tmp_path / "nosync", images, labels)
    assert calls[2]["sync"] is False
    np.testing.assert_array_equal(b.read_many(tmp_path / "nosync")[0], images)


def test_lmdb_tiny_images_get_room_where_the_article_map_is_full(tmp_path):
    import lmdb

    images = np.arange(300, dtype=np.uint8).reshape(300, 1, 1, 1)
    labels = np.arange(300) % 7
    b = backends.get("article-lmdb")
    b.store_many(tmp_path / "s", images, labels)  # the article's 300 * 1 * 10 bytes cannot hold this
    got, got_labels = b.read_many(tmp_path / "s")
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_labels, labels)
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == 300 and env.info()["map_size"] > 3000


def test_lmdb_ids_are_limited_to_the_article_eight_digits(tmp_path):
    import lmdb

    images, labels = photos(2)
    b = backends.get("article-lmdb")
    with pytest.raises(ValueError, match="0..99,999,999, got 100,000,000"):
        b.store_single(tmp_path / "s", images[0], 100_000_000, 1)
    assert list(tmp_path.iterdir()) == []
    b.store_single(tmp_path / "s", images[0], 99_999_999, 1)
    with lmdb.open(str(tmp_path / "s"), readonly=True, lock=False) as env, env.begin() as txn:
        assert [k for k, _ in txn.cursor()] == [b"99999999"]
    assert b.read_single(tmp_path / "s", 99_999_999)[1] == 1


def test_hdf5_datasets_are_the_article_big_endian_bytes(tmp_path):
    import h5py

    images, labels = photos(30)
    backends.get("article-hdf5").store_many(tmp_path / "s", images, labels)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["30_many.h5", "checksums.npy", "imgbench.json"]
    with h5py.File(tmp_path / "s/30_many.h5", "r") as f:
        assert sorted(f) == ["images", "meta"]
        for name, shape in (("images", images.shape), ("meta", labels.shape)):
            ds = f[name]
            t = ds.id.get_type()
            assert t == h5py.h5t.STD_U8BE  # >u1: big-endian, unsigned, one byte
            assert t.get_order() == h5py.h5t.ORDER_BE and t.get_size() == 1 and t.get_sign() == h5py.h5t.SGN_NONE
            assert ds.shape == shape and ds.chunks is None and ds.compression is None
        np.testing.assert_array_equal(np.array(f["/images"]).astype("uint8"), images)
        np.testing.assert_array_equal(np.array(f["/meta"]), labels)


@pytest.mark.parametrize("bad", [[0, 256], [-1, 3]])
def test_hdf5_labels_outside_a_byte_are_refused_before_anything_is_written(tmp_path, bad):
    images, _ = photos(2)
    with pytest.raises(ValueError, match=rf"labels must lie in 0\.\.255, got {bad[0] if bad[0] < 0 else bad[1]}"):
        backends.get("article-hdf5").store_many(tmp_path / "s", images, np.array(bad))
    with pytest.raises(ValueError, match="0..255"):
        backends.get("article-hdf5").store_single(tmp_path / "s", images[0], 0, 1000)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ nothing in a store runs code


class _Payload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_pickle_calling_os_system_is_refused_and_never_runs(tmp_path, protocol):
    import lmdb

    ran = tmp_path / "ran"
    evil = pickle.dumps(_Payload(f"touch {ran}"), protocol=protocol)
    pickle.loads(pickle.dumps(_Payload(f"touch {tmp_path / 'live'}"), protocol=protocol))
    assert (tmp_path / "live").exists()  # the payload is real: plain pickle.loads runs it

    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|os)\.system"):
        article.article_loads(evil)
    images, labels = photos(3)
    b = backends.get("article-lmdb")
    b.store_many(tmp_path / "s", images, labels)
    with lmdb.open(str(tmp_path / "s")) as env, env.begin(write=True) as txn:
        txn.put(b"00000001", evil)
    with pytest.raises(NotAStoreError, match=r"image id 1 is not an article image \(refusing to load .*system"):
        b.read_many(tmp_path / "s")
    with pytest.raises(NotAStoreError, match="refusing to load"):
        b.read_single(tmp_path / "s", 1)
    with pytest.raises(NotAStoreError, match="refusing to load"):
        b.read_many(tmp_path / "s", [0, 1])
    np.testing.assert_array_equal(b.read_single(tmp_path / "s", 2)[0], images[2])
    assert not ran.exists()


@pytest.mark.parametrize("label", [np.float64(1.5), np.array([1, 2]), np.array(["x"], object)])
def test_only_integer_numpy_scalars_are_rebuilt(label):
    images, _ = photos(1)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        article.article_loads(pickle.dumps(article.ArticleImage(images[0], label)))


# ------------------------------------------------------------------ damaged stores


def test_damaged_stores_are_named(tmp_path):
    import lmdb

    images, labels = photos(6)
    disk = backends.get("article-disk")
    disk.store_many(tmp_path / "d", images, labels)
    (tmp_path / "d/4.png").unlink()
    with pytest.raises(NotAStoreError, match="4.png is missing"):
        disk.read_many(tmp_path / "d")
    with pytest.raises(NotAStoreError, match="4.png is missing"):
        disk.read_single(tmp_path / "d", 4)
    (tmp_path / "d/6.csv").write_text("1\r\n2\r\n")
    with pytest.raises(NotAStoreError, match="lists 2 labels for 6 images"):
        disk.read_single(tmp_path / "d", 1)

    b = backends.get("article-lmdb")
    b.store_many(tmp_path / "l", images, labels)
    with lmdb.open(str(tmp_path / "l")) as env, env.begin(write=True) as txn:
        txn.delete(b"00000003")
    with pytest.raises(NotAStoreError, match="holds 5 values, its manifest says 6"):
        b.read_many(tmp_path / "l")
    with pytest.raises(NotAStoreError, match="holds 5 values, its manifest says 6"):
        b.read_single(tmp_path / "l", 3)  # counted when the store is opened, before any id is looked up

    h = backends.get("article-hdf5")
    h.store_many(tmp_path / "h", images, labels)
    (tmp_path / "h/6_many.h5").write_bytes(b"not hdf5")
    with pytest.raises(NotAStoreError, match="not a readable article-hdf5 store"):
        h.read_many(tmp_path / "h")


@pytest.mark.slow  # a store in its own process under a file-size limit
def test_write_failure_half_way_leaves_no_valid_store(tmp_path, backend):
    # test_backends' test with limits for the article's files (3000 images): its PNGs are at
    # most ~2.7 kB and its 9 kB {N}.csv comes last; LMDB's ~12 MB and HDF5's 9 MB fail half way.
    limit = {"article-disk": 5_000, "article-lmdb": 6_000_000, "article-hdf5": 4_500_000}[backend.name]
    code = helpers.STORE_UNDER_LIMIT.format(repo=str(REPO), n=3000, limit=limit, name=backend.name,
                                             path=str(tmp_path / "s"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # EFBIG ("File too large"); LMDB reports its short write at commit as EIO
    assert p.returncode != 0 and ("too large" in p.stderr or "Input/output error" in p.stderr), p.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
