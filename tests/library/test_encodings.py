"""Images of different shapes and every encoding, in every backend that offers them, with real
photographs (a small sample folder of JPEG and PNG files)."""
import pickle
import tarfile

import h5py
import numpy as np
import pytest

from imgbench import backends
from imgbench.data import folder
from imgbench.images import LOSSY, Codec, ImageList, decode_file
from imgbench.data.sample import build_folder
from helpers import NAMES

OURS = [n for n in NAMES if not n.startswith("article-")]
ENCODED = {name: backends.get(name).ENCODINGS for name in OURS}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """40 photographs of different sizes: decoded (RGB), their files' bytes, labels."""
    root = tmp_path_factory.mktemp("photos") / "folder"
    build_folder(root, n_files=40, seed=3)
    data = folder.load(root, log=lambda msg: None)
    assert len(np.unique(data.images.shapes, axis=0)) > 20
    return data


def expected(codec: Codec, images, sources):
    """What a store of this encoding must read back: the pixels for lossless encodings, a decode
    of the stored bytes for lossy ones (computed here from the same encoder, independently of
    any backend)."""
    if codec.encoding == "source":
        return [decode_file(bytes(s)) for s in sources]
    if codec.encoding in LOSSY:
        return [codec.decode(codec.encode(a), a.shape) for a in images]
    return list(images)


def assert_same(got, want):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, k
        np.testing.assert_array_equal(a, b, err_msg=f"image {k}")


CASES = [(n, e) for n in OURS for e in ENCODED[n]]


@pytest.mark.parametrize("name,encoding", CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_ragged_round_trip_every_encoding(tmp_path, photos, name, encoding):
    b = backends.variant(f"{name}.{encoding}")
    # the newer codecs encode slowly (AVIF: 0.1 s a photo): a dozen photographs each
    n = 40 if encoding in ("raw", "png", "jpeg", "source") else 12
    images, labels = list(photos.images)[:n], photos.labels[:n]
    sources = photos.sources[:n] if encoding == "source" else None
    b.store_many(tmp_path / "s", images, labels, sources=sources)
    want = expected(b.codec(), images, photos.sources[:n])
    got, got_labels = b.read_many(tmp_path / "s")
    assert isinstance(got, ImageList)
    assert_same(got, want)
    np.testing.assert_array_equal(got_labels, labels)
    ids = [7, 3, 3, n - 1, 0]
    with b.reader(tmp_path / "s") as r:
        assert len(r) == len(images)
        image, label = r[10]
        np.testing.assert_array_equal(image, want[10])
        assert label == labels[10]
        batch, blabels = r.get_batch(ids)
        assert_same(batch, [want[i] for i in ids])
        np.testing.assert_array_equal(blabels, labels[ids])
        again = pickle.loads(pickle.dumps(r))  # a spawned DataLoader worker's copy
        np.testing.assert_array_equal(again[n - 1][0], want[n - 1])
        again.close()
    got, _ = b.read_many(tmp_path / "s", ids)
    assert_same(got, [want[i] for i in ids])


@pytest.mark.parametrize("name,encoding", [c for c in CASES if c[1] != "source"],
                         ids=[f"{n}-{e}" for n, e in CASES if e != "source"])
def test_fixed_shape_every_encoding(tmp_path, photos, name, encoding):
    """Images of one shape keep the fixed layout: read back as one 4-D array."""
    images = np.stack([a[:64, :64] for a in photos.images])
    b = backends.variant(f"{name}.{encoding}")
    b.store_many(tmp_path / "s", images, photos.labels)
    got, _ = b.read_many(tmp_path / "s")
    assert isinstance(got, np.ndarray) and got.shape == images.shape
    assert_same(got, expected(b.codec(), images, None))
    with b.reader(tmp_path / "s") as r:
        assert r.get_batch([5, 1])[0].shape == (2, 64, 64, 3)


def test_grey_and_rgba_images_of_different_shapes(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for h, w, c in [(5, 7, 1), (9, 3, 4), (4, 4, 3)] * 3]
    for name in OURS:
        for encoding in ENCODED[name]:
            if encoding in ("jpeg", "source"):
                continue
            b = backends.variant(f"{name}.{encoding}")
            b.store_many(tmp_path / f"{name}-{encoding}", images, np.arange(9))
            # WebP, AVIF and JPEG XL keep grey and alpha; lossy ones read back their decode
            assert_same(b.read_many(tmp_path / f"{name}-{encoding}")[0], expected(b.codec(), images, None))


def test_source_stores_keep_the_original_bytes(tmp_path, photos):
    n = 12
    images, sources, labels = list(photos.images)[:n], photos.sources[:n], photos.labels[:n]
    backends.get("disk", format="source").store_many(tmp_path / "disk", images, labels, sources=sources)
    backends.get("tar", encoding="source").store_many(tmp_path / "tar", images, labels, sources=sources)
    backends.get("hdf5", encoding="source").store_many(tmp_path / "h5", images, labels, sources=sources)
    # disk: the ImageFolder layout, class folders named by label, files byte for byte
    width = len(str(labels.max()))
    for i in range(n):
        matches = list((tmp_path / "disk" / f"{labels[i]:0{width}d}").glob(f"{i}.*"))
        assert len(matches) == 1 and matches[0].read_bytes() == bytes(sources[i])
        assert matches[0].suffix == (".png" if photos.files[i].lower().endswith(".png") else ".jpg")
    # tar: each member's data is the original file
    with tarfile.open(tmp_path / "tar" / "shard-000000.tar") as t:
        members = [m for m in t.getmembers() if not m.name.endswith(".cls")]
        assert [t.extractfile(m).read() for m in members] == [bytes(s) for s in sources]
    # hdf5: a flat data dataset and an (N, 5) index of offset, size, height, width, channels
    with h5py.File(tmp_path / "h5" / "images.h5") as f:
        index, data = f["index"][()], f["data"][()]
    assert index.shape == (n, 5)
    for i in range(n):
        assert data[index[i, 0]:index[i, 0] + index[i, 1]].tobytes() == bytes(sources[i])
        assert tuple(index[i, 2:]) == images[i].shape


def test_flat_layout_of_npy_and_zarr(tmp_path, photos):
    images = list(photos.images)[:10]
    backends.get("npy").store_many(tmp_path / "npy", images, np.arange(10))
    data = np.load(tmp_path / "npy" / "data.npy")
    index = np.load(tmp_path / "npy" / "index.npy")
    for i, a in enumerate(images):
        o, size = index[i, :2]
        np.testing.assert_array_equal(data[o:o + size].reshape(index[i, 2:]), a)
    import zarr

    backends.get("zarr").store_many(tmp_path / "zarr", images, np.arange(10))
    g = zarr.open_group(tmp_path / "zarr" / "images.zarr", mode="r")
    np.testing.assert_array_equal(g["data"][...], data)
    np.testing.assert_array_equal(g["index"][...], index)


def test_zarr_ragged_reads_across_shard_files(tmp_path, photos):
    images = list(photos.images)
    b = backends.get("zarr", chunk=1, shard=2)  # about two images per shard file: images straddle files
    b.store_many(tmp_path / "z", images, photos.labels)
    assert len(list((tmp_path / "z" / "images.zarr" / "data" / "c").iterdir())) > 10
    with b.reader(tmp_path / "z") as r:
        assert_same(r.get_batch(list(range(len(images)))[::-1])[0], images[::-1])
    assert_same(b.read_many(tmp_path / "z")[0], images)


@pytest.mark.parametrize("name", ["article-disk", "article-lmdb", "article-hdf5"])
def test_article_backends_refuse_images_of_different_shapes(tmp_path, photos, name):
    with pytest.raises(ValueError, match=f"{name} stores only images of one shape.*use {name[8:]}"):
        backends.get(name).store_many(tmp_path / "s", list(photos.images), photos.labels)
    assert list(tmp_path.iterdir()) == []


def test_coding_errors_are_clear_and_leave_nothing(tmp_path, photos):
    images = list(photos.images)[:4]
    with pytest.raises(ValueError, match="encoding 'source' keeps the original files' bytes: pass them as sources="):
        backends.get("lmdb", encoding="source").store_many(tmp_path / "a", images, np.arange(4))
    with pytest.raises(ValueError, match="sources must hold one file's bytes per image: 3 for 4"):
        backends.get("tar", encoding="source").store_many(tmp_path / "b", images, np.arange(4),
                                                          sources=photos.sources[:3])
    rgba = [np.zeros((4, 5, 4), np.uint8), np.zeros((3, 3, 4), np.uint8)]
    with pytest.raises(ValueError, match="jpeg cannot store 4-channel"):
        backends.get("hdf5", encoding="jpeg").store_many(tmp_path / "c", rgba, np.arange(2))
    assert list(tmp_path.iterdir()) == []
    for name in ("npy", "zarr"):
        with pytest.raises(ValueError, match="unknown option 'encoding'"):
            backends.get(name, encoding="png")


def test_damaged_encoded_image_is_named(tmp_path, photos):
    images = list(photos.images)[:5]
    b = backends.get("hdf5", encoding="jpeg")
    b.store_many(tmp_path / "s", images, np.arange(5))
    with h5py.File(tmp_path / "s" / "images.h5", "r+") as f:
        o, size = f["index"][2, :2]
        f["data"][o + 2:o + size] = 0  # everything after the JPEG's start-of-image marker
    with b.reader(tmp_path / "s") as r:
        r[1]
        with pytest.raises(backends.NotAStoreError, match="image id 2 cannot be decoded"):
            r[2]


@pytest.mark.parametrize("label", ["lmdb.jpeg", "tar.source", "npy", "parquet.png"])
def test_ragged_epochs_from_worker_processes(tmp_path, photos, label):
    """The epoch experiment's loader over a ragged store: batches land in one flat buffer laid out
    per epoch, read by forked workers, every image compared."""
    from imgbench.bench.access import permutation
    from imgbench.bench.loader import Loader

    b = backends.variant(label)
    images = list(photos.images)
    b.store_many(tmp_path / "s", images, photos.labels, sources=photos.sources if "source" in label else None)
    want = ImageList.from_arrays(expected(b.codec(), images, photos.sources))
    for workers in (0, 2):
        with Loader(b.reader(tmp_path / "s"), workers, 8) as loader:
            for r, order in enumerate(("sequential", "shuffled", "shuffled")):
                loader.epoch(permutation(order, len(images), 0, r))
                loader.drain()
                assert loader.counted == len(images)
                loader.check(want, photos.labels, label)


def test_ragged_store_in_a_torch_dataloader(tmp_path, photos):
    pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")
    from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

    b = backends.variant("lmdb.jpeg")
    images = list(photos.images)
    b.store_many(tmp_path / "s", images, photos.labels)
    want = expected(b.codec(), images, None)
    r = b.reader(tmp_path / "s")
    r[0]  # opened in the parent before the workers fork
    batches = list(BatchSampler(SequentialSampler(r), 8, False))
    seen = 0
    for ids, (x, y) in zip(batches, DataLoader(r, sampler=batches, batch_size=None, num_workers=2)):
        assert isinstance(x, list) and len(x) == len(ids)  # an ImageList arrives as a list of tensors
        for k, i in enumerate(ids):
            np.testing.assert_array_equal(x[k].numpy(), want[i])
        np.testing.assert_array_equal(y.numpy(), photos.labels[ids])
        seen += len(ids)
    assert seen == len(images)
