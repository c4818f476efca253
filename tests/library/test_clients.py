"""The stock clients: each format read back through its own library, in shuffled order, bit for
bit; the shuffle measures; epochs of both clients through PyTorch's real DataLoader."""
import numpy as np
import pytest

from imgbench import backends, clients
from imgbench.bench import access
from imgbench.bench.shuffle import measures
from helpers import NAMES, photos

N = 40


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    images, labels = photos(N)
    root = tmp_path_factory.mktemp("stock")
    for name in NAMES:
        options = {"shard_size": 16} if name == "tar" else {}
        backends.get(name, **options).store_many(root / name, images, labels)
    return root, images, labels


@pytest.mark.parametrize("name", NAMES)
def test_stock_reader_reads_back_in_shuffled_order(stores, name):
    root, images, labels = stores
    perm = np.random.default_rng(1).permutation(N)
    got, got_labels = clients.Whole(name).read_many(root / name)  # opens and closes its own
    assert np.array_equal(got, images) and np.array_equal(got_labels, labels)
    with clients.stock(name, root / name) as ds:
        assert len(ds) == N
        if not ds.random_access:  # webdataset: a buffered shuffle, every sample once, by key
            seen = [(int(key), image, label) for key, image, label in ds.stream(True, seed=3, buffer=8)]
            order = [k for k, _, _ in seen]
            assert sorted(order) == list(range(N)) and order != sorted(order)
            for k, image, label in seen:
                assert np.array_equal(image, images[k]) and label == labels[k]
            with pytest.raises(TypeError, match="no random access"):
                ds[0]
            return
        x, y = ds[perm]  # a batch, through the library's batch path
        assert np.array_equal(np.asarray(x), images[perm]) and np.array_equal(y, labels[perm])
        x, y = ds[[5, 5, 2]]  # repeats, out of order
        assert np.array_equal(np.asarray(x), images[[5, 5, 2]]) and list(y) == list(labels[[5, 5, 2]])
        for i in perm[:5]:
            image, label = ds[int(i)]
            assert np.array_equal(image, images[i]) and label == labels[i]


def test_every_backend_has_a_stock_reader_of_its_own_module():
    assert set(clients.STOCK) == set(NAMES)
    with pytest.raises(ValueError, match="no stock reader for backend 'nope'"):
        clients.stock("nope", ".")


def test_shuffle_measures_of_a_permutation_and_a_sorted_order():
    n, block = 100_000, 10_000
    sorted_ = measures(np.arange(n), n, block)
    assert sorted_["same_block"] == pytest.approx(1 - 9 / (n - 1))  # only the 9 block edges differ
    assert sorted_["distance_ratio"] == pytest.approx(3 / (n + 1))
    assert sorted_["same_block_uniform"] == pytest.approx(10 * block * (block - 1) / (n * (n - 1)))
    perm = measures(np.random.default_rng(0).permutation(n), n, block)
    assert perm["same_block"] == pytest.approx(perm["same_block_uniform"], abs=0.01)
    assert perm["distance_ratio"] == pytest.approx(1, abs=0.02)
    # a buffered shuffle inside blocks: neighbours share a block far more often than by chance
    local = np.concatenate([np.random.default_rng(b).permutation(block) + b * block for b in range(10)])
    m = measures(local, n, block)
    assert m["same_block"] > 0.99 and m["distance_ratio"] < 0.2
    uneven = measures(np.arange(25), 25, 10)  # blocks of 10, 10, 5
    assert uneven["same_block_uniform"] == pytest.approx((90 + 90 + 20) / (25 * 24))


@pytest.mark.parametrize("name, client, loader", [
    ("hdf5", "stock", "torch-batch"), ("zarr", "stock", "torch-item"), ("tar", "stock", "torch-batch"),
    ("lmdb", "imgbench", "torch-batch"), ("npy", "imgbench", "imgbench")])
def test_epochs_through_a_real_dataloader_with_two_workers(stores, name, client, loader):
    if loader != "imgbench":
        pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")
    root, images, labels = stores
    options = {"shard_size": 16} if name == "tar" else {}
    lines = []
    rows = access.epoch(name, options, root / name, images, labels, 2, 8, ["sequential", "shuffled"], 1, 0, "t",
                        lines.append, client=client, loaders=[loader], shuffle_block=16, buffer=8)
    assert len(rows) == 4, lines  # warm and cold, both orders, each verified against the source
    assert {(r["order"], r["cache"]) for r in rows} == {(o, c) for o in ("sequential", "shuffled")
                                                        for c in ("warm", "cold")}
    for r in rows:
        assert r["client"] == client and r["loader"] == loader and r["images"] == N and r["verified"]
        assert r["same_block_uniform"] == pytest.approx((16 * 15 * 2 + 8 * 7) / (N * (N - 1)))
        if r["order"] == "shuffled":
            assert r["shuffle_buffer"] == (8 if name == "tar" else None)
            assert r["distance_ratio"] > 0.3
        elif name != "tar":  # two webdataset workers interleave their shards
            assert r["same_block"] == pytest.approx(1 - 2 / (N - 1)) and r["shuffle_buffer"] is None


def test_litdata_epochs_are_its_own_stream_through_its_streaming_dataloader(stores):
    """LitData's epochs: its StreamingDataset shuffling itself (chunks, then items within one,
    litdata#797) and its StreamingDataLoader batching, with workers; every image once, verified."""
    pytest.importorskip("litdata", reason="litdata is an optional extra (pip install 'imgbench[litdata]')")
    root, images, labels = stores
    lines = []
    rows = access.epoch("litdata", {}, root / "litdata", images, labels, 2, 8, ["sequential", "shuffled"], 1, 0,
                        "t", lines.append, client="stock", loaders=["torch-batch"], shuffle_block=16)
    assert len(rows) == 4, lines
    for r in rows:
        assert r["client"] == "stock" and r["images"] == N and r["verified"]
    shuffled = [r for r in rows if r["order"] == "shuffled"]
    assert all(r["distance_ratio"] > 0.3 for r in shuffled)


@pytest.mark.parametrize("name, client", [("npy", "imgbench"), ("tar", "stock")])
def test_a_dataloader_without_workers_checks_each_batch_as_it_arrives_and_drops_it(stores, name, client):
    pytest.importorskip("torch", reason="torch is not installed (.ci/run installs the CPU build)")
    from imgbench.bench.rows import VerificationError

    root, images, labels = stores
    options = {"shard_size": 16} if name == "tar" else {}
    rows = access.epoch(name, options, root / name, images, labels, 0, 8, ["shuffled"], 1, 0, "t",
                        lambda m: None, client=client, loaders=["torch-batch"], shuffle_block=16, buffer=8)
    assert [r["images"] for r in rows] == [N, N] and all(r["seconds"] > 0 for r in rows)
    wrong = images.copy()
    wrong[N - 1] ^= 1  # the last image: found only if every batch is compared
    with pytest.raises(VerificationError, match="differs"):
        access.epoch(name, options, root / name, images, labels, 0, 8, ["shuffled"], 1, 0, "t", lambda m: None,
                     client=client, loaders=["torch-batch"], shuffle_block=16, buffer=8, expected=wrong)


def test_the_loop_loader_reads_batches_through_the_reader_in_the_main_process_only(stores):
    root, images, labels = stores
    lines = []
    rows = access.epoch("hdf5", {}, root / "hdf5", images, labels, 0, 8, ["shuffled"], 2, 0, "t", lines.append,
                        loaders=["imgbench", "loop"], shuffle_block=16)
    # the loop reads through the warm reader of imgbench's loader right after its warm passes
    assert [(r["loader"], r["cache"]) for r in rows] == [("imgbench", "warm")] * 2 + [("loop", "warm")] * 2 + [
        ("imgbench", "cold")] * 2
    assert all(r["images"] == N and r["verified"] and r["distance_ratio"] > 0.3 for r in rows)
    alone = access.epoch("hdf5", {}, root / "hdf5", images, labels, 0, 8, ["shuffled"], 1, 0, "t", lines.append,
                         loaders=["loop"], shuffle_block=16)  # without imgbench's loader: its own reader
    assert [(r["loader"], r["cache"], r["images"]) for r in alone] == [("loop", "warm", N), ("loop", "cold", N)]
    for workers, client in ((2, "imgbench"), (0, "stock")):
        lines = []
        assert access.epoch("hdf5", {}, root / "hdf5", images, labels, workers, 8, ["shuffled"], 1, 0, "t",
                            lines.append, client=client, loaders=["loop"]) == []
        assert any("loop loader is left out" in line for line in lines), lines


def test_left_out_pairs_say_why(stores):
    root, images, labels = stores
    lines = []
    rows = access.epoch("npy", {}, root / "npy", images, labels, 0, 8, ["sequential"], 1, 0, "t", lines.append,
                        client="stock", loaders=["imgbench"])
    assert rows == [] and any("imgbench's loader reads through imgbench's reader" in line for line in lines)
    lines = []
    assert access.random_read("tar", {"shard_size": 16}, root / "tar", images, labels, 5, 1, 0, "t", lines.append,
                              client="stock") == []
    assert any("no random access" in line for line in lines)


@pytest.mark.parametrize("name", ["parquet", "disk", "article-lmdb"])
def test_random_reads_and_whole_reads_of_the_stock_client(stores, name):
    root, images, labels = stores
    rows = access.random_read(name, {}, root / name, images, labels, 10, 1, 0, "t", lambda m: None, client="stock")
    assert [(r["cache"], r["client"], r["k"]) for r in rows] == [("warm", "stock", 10), ("cold", "stock", 10)]
    from imgbench.bench.many import read_many

    rows = read_many(name, {}, root / name, images, labels, 1, "t", lambda m: None, verify=True, client="stock")
    assert [(r["experiment"], r["cache"], r["client"]) for r in rows] == [("read_many", "warm", "stock"),
                                                                         ("read_many", "cold", "stock")]


RAGGED = [n for n in NAMES if not n.startswith("article-")]  # the article's three take one shape


@pytest.mark.parametrize("name, encoding", [("npy", None), ("zarr", None), ("disk", None)] + [
    (n, e) for n in ("hdf5", "lmdb", "parquet", "tar", "litdata") for e in ("raw", "png") if n in NAMES])
def test_stock_reader_reads_images_of_different_shapes(tmp_path, name, encoding):
    from imgbench.images import ImageList

    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 256, (8 + i % 5, 6 + i % 3, 3), dtype=np.uint8) for i in range(12)]
    labels = np.arange(12) % 4
    options = {} if encoding is None else {"encoding": encoding}
    backends.get(name, **options).store_many(tmp_path / "s", ImageList.from_arrays(arrays), labels)
    got, got_labels = clients.Whole(name).read_many(tmp_path / "s")
    assert np.array_equal(got_labels, labels) and all(np.array_equal(a, b) for a, b in zip(got, arrays))
    with clients.stock(name, tmp_path / "s") as ds:
        if ds.random_access:
            images, y = ds[[7, 2, 7]]
            assert [a.shape for a in images] == [arrays[i].shape for i in (7, 2, 7)] and list(y) == [3, 2, 3]
            assert all(np.array_equal(a, arrays[i]) for a, i in zip(images, (7, 2, 7)))
        else:
            keys, images, y = next(iter(ds.stream(batch_size=5)))
            assert keys == [f"{i:010d}" for i in range(5)] and all(
                np.array_equal(a, arrays[i]) for i, a in enumerate(images))


def test_the_summary_names_a_configured_dataloader_that_gave_no_row():
    import pandas as pd

    from imgbench.report.summary import left_out_line, with_missing_loaders

    df = pd.DataFrame({"experiment": ["epoch", "epoch", "read_many"], "loader": ["imgbench", "torch-item", None]})
    config = {"epoch": {"loaders": ["imgbench", "torch-batch", "torch-item"]}}
    got = with_missing_loaders(df, config, {"article-disk": "one shape only"})
    assert list(got) == ["article-disk", "the torch-batch loader"]
    assert "pip install torch" in left_out_line(got)[0]
    assert with_missing_loaders(df[df["experiment"] != "epoch"], config, None) == {}  # no epochs asked of this run
