"""A store is untrusted input: small legitimate stores, tampered with as someone handing out a
dataset could, then read, read through a Reader and verified, each in a fresh process under an
address-space and a time limit where the damage could crash, hang or exhaust memory (helpers.boxed).
None may read or write outside the store, start a program, crash, hang, use more memory than the
store's files justify, or answer with anything but its one-line NotAStoreError."""
import io
import json
import os
import shutil
import stat
import zlib
import struct

import numpy as np
import pytest
from PIL import Image

from helpers import NAMES, boxed, images_and_labels, photos
from imgbench import backends

N = 20
OPS = ("read_many", "reader", "verify")
# Each backend's files that a read goes through (the first is the one holding the pixels).
FILES = {
    "article-disk": ["0.png", "imgbench.json"],
    "article-lmdb": ["data.mdb", "checksums.npy"],
    "article-hdf5": [f"{N}_many.h5"],
    "disk": ["0.png", "labels.csv"],
    "lmdb": ["data.mdb"],
    "hdf5": ["images.h5"],
    "npy": ["images.npy", "labels.npy", "checksums.npy"],
    "zarr": ["images.zarr/images/c/0/0/0/0", "images.zarr/zarr.json"],
    "tar": ["shard-000000.tar", "index.npy"],
    "parquet": ["images.parquet"],
    "sqlite": ["images.sqlite"],
    "lance": ["images.lance/_versions/18446744073709551614.manifest"],
    "hfdatasets": ["images.hf/data-00000-of-00001.arrow", "images.hf/state.json"],
    "litdata": ["chunk-0-0.bin", "index.json"],
}
FILES = {name: files for name, files in FILES.items() if name in NAMES}  # an optional extra may be missing
CASES = [(n, f) for n, files in FILES.items() for f in files]
DAMAGED = {"error", "damaged"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small store of every backend (and a few encodings), made once; tests tamper with copies."""
    root = tmp_path_factory.mktemp("pristine")
    images, labels = images_and_labels(N)
    labels = labels % 10  # the article's HDF5 keeps uint8 labels
    other, _ = images_and_labels(N, seed=1)
    for name in FILES:
        backends.get(name).store_many(root / name, images, labels)
        backends.get(name).store_many(root / f"other-{name}", other, labels)  # the same files, other bytes
    big, big_labels = photos(N, size=(64, 64))  # values longer than an LMDB page: overflow pages
    backends.variant("lmdb.png").store_many(root / "lmdb.png", big, big_labels)
    backends.get("article-lmdb").store_many(root / "article-lmdb-big", big, big_labels % 10)
    backends.get("lmdb").store_many(root / "lmdb-big", big, big_labels)
    if "litdata" in NAMES:
        backends.variant("litdata.png").store_many(root / "litdata.png", images, labels)  # LitData's Arrow rows
    return root, images, labels


def source_store(path):
    """A disk store of 4 images kept as their original files (PNG), in class folders."""
    images, labels = images_and_labels(4)
    sources = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        sources.append(buf.getvalue())
    backends.variant("disk.source").store_many(path, images, labels, sources=sources)
    return path


def copy(pristine, name, tmp_path, source=None):
    root = pristine[0]
    shutil.copytree(root / (source or name), tmp_path / "s")
    return tmp_path / "s"


def outcome(op, name, path):
    """What `op` did, in this process: ("ok", images, labels) or ("error", type, message) or
    ("verified" | "damaged", summary)."""
    b = backends.get(name)
    try:
        if op == "read_many":
            images, labels = b.read_many(path)
            return ("ok", [np.asarray(a) for a in images], labels)
        if op == "reader":
            with b.reader(path) as r:
                return ("ok", [r[r.store.first_id][0]], r.get_batch(np.arange(r.store.first_id, len(r)))[1])
        report = b.verify(path)
        return ("verified" if report.ok else "damaged", report.summary())
    except Exception as e:
        return ("error", type(e).__name__, str(e))


def assert_refused(result, *words):
    """The operation refused the store with one line naming the problem (or verify said damaged)."""
    assert result[0] in DAMAGED, result[:2]
    if result[0] == "error":
        assert result[1] in ("NotAStoreError", "DamagedImageError"), result[1:3]
        assert "\n" not in result[2] and "Traceback" not in result[2]
    text = result[2] if result[0] == "error" else result[1]
    for w in words:
        assert w in text, text


# ------------------------------------------------------------------ links, FIFOs, devices

@pytest.mark.parametrize("name,file", CASES, ids=[f"{n}:{f}" for n, f in CASES])
def test_a_file_that_is_a_link_out_of_the_store_is_never_followed(pristine, tmp_path, name, file):
    """The link points to the same file of a store of other images: a read that followed it would
    return them. A read either refuses the store or never needed the file (its images are the
    store's own); verify, which reads every file, refuses it."""
    store = copy(pristine, name, tmp_path)
    outside = tmp_path / "outside"
    shutil.copyfile(pristine[0] / f"other-{name}" / file, outside)
    before = outside.read_bytes(), outside.stat().st_mtime_ns
    (store / file).unlink()
    (store / file).symlink_to(outside)
    for op in OPS:
        result = outcome(op, name, store)
        if result[0] == "ok":
            assert op != "verify" and all(np.array_equal(a, b) for a, b in zip(result[1], pristine[1]))
        else:
            assert_refused(result, "link")
    assert (outside.read_bytes(), outside.stat().st_mtime_ns) == before


@pytest.mark.parametrize("name,file", CASES, ids=[f"{n}:{f}" for n, f in CASES])
def test_a_file_hard_linked_elsewhere_is_refused(pristine, tmp_path, name, file):
    store = copy(pristine, name, tmp_path)
    os.link(store / file, tmp_path / "other-name")
    for op in OPS:
        result = outcome(op, name, store)
        if result[0] == "ok":  # a file this read does not need (see the test above)
            assert op != "verify" and all(np.array_equal(a, b) for a, b in zip(result[1], pristine[1]))
        else:
            assert_refused(result, "hard link")


def test_article_lmdb_lock_file_linked_elsewhere_is_never_written(pristine, tmp_path):
    """The article's open creates and writes lock.mdb: a store's lock.mdb that is a link to a file
    elsewhere had that file overwritten. Readers now open without the lock file."""
    for name in ("article-lmdb", "lmdb"):
        store = copy(pristine, name, tmp_path / name)
        victim = tmp_path / name / "victim"
        victim.write_bytes(b"x" * 60)
        (store / "lock.mdb").unlink(missing_ok=True)
        (store / "lock.mdb").symlink_to(victim)
        for op in OPS:
            result = boxed(op, name, store)
            assert result[0] in ("ok", "verified"), result[:3]
        assert victim.read_bytes() == b"x" * 60


SPECIAL = [("article-disk", "0.png"), ("disk", "labels.csv"), ("disk", "imgbench.json"), ("npy", "images.npy"),
           ("tar", "shard-000000.tar"), ("lmdb", "data.mdb"), ("hdf5", "images.h5"), ("parquet", "images.parquet"),
           ("zarr", "images.zarr/zarr.json")]


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("name,file", SPECIAL, ids=[f"{n}:{f}" for n, f in SPECIAL])
def test_a_fifo_or_device_in_place_of_a_file_is_refused_at_once(pristine, tmp_path, name, file, kind):
    """A FIFO opened for reading blocks until a writer comes; /dev/zero never ends."""
    store = copy(pristine, name, tmp_path)
    (store / file).unlink()
    if kind == "fifo":
        os.mkfifo(store / file)
    else:
        os.mknod(store / file, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    for op in ("read_many", "verify"):
        result = boxed(op, name, store, seconds=20)
        assert_refused(result)


# ------------------------------------------------------------------ image bytes

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nnewpath 0 0 moveto 32 32 lineto stroke\nshowpage\n"


def fake_ghostscript(tmp_path):
    """A `gs` first in PATH that leaves a mark if anything runs it."""
    bindir, mark = tmp_path / "bin", tmp_path / "ghostscript-ran"
    bindir.mkdir()
    (bindir / "gs").write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    (bindir / "gs").chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, mark


@pytest.mark.parametrize("name", ["article-disk", "disk", "disk.source"])
def test_postscript_in_place_of_an_image_never_starts_ghostscript(pristine, tmp_path, name):
    b = backends.variant(name)
    if name == "disk.source":
        store = source_store(tmp_path / "s")
        target = next(p for p in store.rglob("*.png"))
    else:
        store = copy(pristine, name, tmp_path)
        target = store / "0.png"
    target.write_bytes(EPS)
    env, mark = fake_ghostscript(tmp_path)
    for op in OPS:
        assert_refused(boxed(op, b.name if name != "disk.source" else "disk", store, env=env))
    assert not mark.exists()


def huge_png(side=10_000) -> bytes:
    """A valid PNG of side x side black RGB pixels: about 300 KB for 300 MB of pixels."""
    comp, zero_row = zlib.compressobj(9), bytes(1 + 3 * side)
    idat = b"".join(comp.compress(zero_row) for _ in range(side)) + comp.flush()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name", ["article-disk", "disk"])
def test_a_huge_image_in_a_small_file_is_refused_before_it_is_decoded(pristine, tmp_path, name):
    store = copy(pristine, name, tmp_path)
    data = huge_png()
    assert len(data) < 400_000
    (store / "0.png").write_bytes(data)
    for op in OPS:  # verify finds the bytes changed without decoding them
        result = boxed(op, name, store)
        assert_refused(result, *(["10000 x 10000"] if op != "verify" else []))
        assert result[-1] < 100 * 2**20  # peak memory grew by less than 100 MB (not 300 MB of pixels)


# ------------------------------------------------------------------ LMDB's own sizes

def edit_value_size(data_mdb, key: bytes, size: int) -> None:
    """Set the data size LMDB records for `key` in its leaf node (two 16-bit halves before the
    node's flags and key size), leaving everything else as it was."""
    raw = bytearray(data_mdb.read_bytes())
    at = raw.find(struct.pack("<H", len(key)) + key)
    assert at > 6
    struct.pack_into("<HH", raw, at - 6, size & 0xFFFF, size >> 16)
    data_mdb.write_bytes(bytes(raw))


@pytest.mark.parametrize("name,source,key", [("lmdb", "lmdb.png", b"0000000019"), ("lmdb", "lmdb-big", b"0000000019"),
                                             ("article-lmdb", "article-lmdb-big", b"00000019")])
def test_an_lmdb_value_size_edited_past_the_file_is_refused_not_a_crash(pristine, tmp_path, name, source, key):
    """Before: SIGBUS (the process killed) in read_many, reader[i] and verify."""
    store = copy(pristine, name, tmp_path, source)
    edit_value_size(store / "data.mdb", key, 64 * 2**20)
    for op in OPS:
        result = boxed(op, name, store)
        assert_refused(result)


# ------------------------------------------------------------------ manifests and indexes

MANIFEST_EDITS = [
    ("count", "20", "whole numbers"), ("count", 2.0, "whole numbers"), ("first_id", -1, "outside"),
    ("first_id", 10**12, "outside"), ("count", 10**12, "outside"), ("shape", [0, 32, 3], "shape"),
    ("shape", [32, 32, 7], "shape"), ("shape", "32x32", "shape"), ("encoding", 5, "text"),
]


@pytest.mark.parametrize("name", list(FILES))
def test_manifest_fields_of_the_wrong_type_or_range_are_one_line(pristine, tmp_path, name):
    for k, (key, value, words) in enumerate(MANIFEST_EDITS):
        store = copy(pristine, name, tmp_path / str(k))
        meta = json.loads((store / "imgbench.json").read_text())
        meta[key] = value
        (store / "imgbench.json").write_text(json.dumps(meta))
        for op in OPS:
            assert_refused(outcome(op, name, store), words)


def test_a_manifest_nested_too_deeply_or_too_large_is_one_line(pristine, tmp_path):
    store = copy(pristine, "npy", tmp_path)
    (store / "imgbench.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_refused(outcome("read_many", "npy", store), "nested too deeply")
    (store / "imgbench.json").write_text(" " * 2**21 + "{}")
    assert_refused(outcome("read_many", "npy", store), "more than")


@pytest.mark.parametrize("name", list(FILES))
def test_a_count_larger_than_the_files_is_refused_before_walking_ids(pristine, tmp_path, name):
    """Before: article-lmdb's verify walked every id of a manifest count of 10**12."""
    store = copy(pristine, name, tmp_path)
    meta = json.loads((store / "imgbench.json").read_text())
    meta["count"] = 10**8 - 1  # ids still in range
    (store / "imgbench.json").write_text(json.dumps(meta))
    for op in OPS:
        assert_refused(boxed(op, name, store, seconds=20))


def test_source_store_file_column_cannot_name_files_outside(tmp_path):
    source_store(tmp_path / "s")
    shutil.copyfile(next((tmp_path / "s").rglob("*.png")), tmp_path / "elsewhere.png")
    good = (tmp_path / "s/labels.csv").read_text()
    first = good.splitlines()[1].rpartition(",")[2]
    for bad in ("../elsewhere.png", str(tmp_path / "elsewhere.png"), "0/../../elsewhere.png"):
        (tmp_path / "s/labels.csv").write_text(good.replace(first, bad, 1))
        for op in OPS:
            assert_refused(outcome(op, "disk", tmp_path / "s"))
    (tmp_path / "s/labels.csv").write_text(good)
    cls = first.partition("/")[0]
    shutil.move(tmp_path / "s" / cls, tmp_path / "moved")
    (tmp_path / "s" / cls).symlink_to(tmp_path / "moved")  # a class folder that is a link
    for op in OPS:
        assert_refused(outcome(op, "disk", tmp_path / "s"), "link")


def test_a_fortran_ordered_images_npy_is_refused_not_permuted(pristine, tmp_path):
    store = copy(pristine, "npy", tmp_path)
    a = np.load(store / "images.npy")
    np.save(store / "images.npy", np.asfortranarray(a))
    for op in OPS:
        assert_refused(outcome(op, "npy", store), "Fortran")


# ------------------------------------------------------------------ HDF5: plain datasets of this file

def rewrite_h5(path, name, make):
    """Replace dataset `name` of the HDF5 file at `path` by what make(file, name) creates."""
    import h5py
    with h5py.File(path, "r+") as f:
        del f[name]
        make(f, name)


def external_file(tmp_path, images):
    import h5py
    other = tmp_path / "elsewhere.h5"
    with h5py.File(other, "w") as g:
        g["images"] = images
    return other


@pytest.mark.parametrize("name,file,dataset", [("hdf5", "images.h5", "images"),
                                                ("article-hdf5", f"{N}_many.h5", "images")])
@pytest.mark.parametrize("how", ["external link", "soft link", "external storage", "virtual"])
def test_an_hdf5_dataset_kept_outside_the_file_is_refused(pristine, tmp_path, name, file, dataset, how):
    """Before: an external link made read_many return another file's images while verify said OK;
    external raw storage returned a system file's bytes as pixels."""
    import h5py
    store = copy(pristine, name, tmp_path)
    other_images = images_and_labels(N, seed=1)[0]
    other = external_file(tmp_path, other_images)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(other_images.tobytes())

    def make(f, ds):
        if how == "external link":
            f[ds] = h5py.ExternalLink(str(other), "images")
        elif how == "soft link":
            f["elsewhere"] = other_images
            f[ds] = h5py.SoftLink("/elsewhere")
        elif how == "external storage":
            f.create_dataset(ds, other_images.shape, np.uint8, external=[(str(raw), 0, other_images.nbytes)])
        else:
            layout = h5py.VirtualLayout(other_images.shape, np.uint8)
            layout[:] = h5py.VirtualSource(str(other), "images", other_images.shape)
            f.create_virtual_dataset(ds, layout)
    rewrite_h5(store / file, dataset, make)
    for op in OPS:
        result = outcome(op, name, store)
        assert result[0] != "ok" or all(np.array_equal(a, b) for a, b in zip(result[1], pristine[1])), (op, how)
        if how != "soft link":  # a soft link inside the file reads the file's own data
            assert_refused(result)


@pytest.mark.parametrize("labels", [np.arange(N - 1), np.zeros((N, 2), np.int64), np.zeros(N, np.float64)],
                         ids=["short", "2-D", "float"])
def test_hdf5_labels_of_the_wrong_length_type_or_shape_are_refused(pristine, tmp_path, labels):
    store = copy(pristine, "hdf5", tmp_path)
    rewrite_h5(store / "images.h5", "labels", lambda f, ds: f.create_dataset(ds, data=labels))
    for op in ("read_many", "reader"):
        assert_refused(outcome(op, "hdf5", store), "labels")


# ------------------------------------------------------------------ Parquet: the footer first

def rewrite_parquet(path, change):
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_parquet_null_labels_or_no_label_column_are_refused(pristine, tmp_path):
    """Before: null labels came back as -2**63; a file without a label column was a KeyError."""
    import pyarrow as pa
    store = copy(pristine, "parquet", tmp_path / "nulls")

    def nulls(t):
        i = t.schema.get_field_index("label")
        return t.set_column(i, "label", pa.array([None] * N, pa.int64()))
    rewrite_parquet(store / "images.parquet", nulls)
    for op in ("read_many", "reader"):
        assert_refused(outcome(op, "parquet", store), "missing labels")
    store = copy(pristine, "parquet", tmp_path / "nolabel")
    rewrite_parquet(store / "images.parquet", lambda t: t.drop_columns(["label"]))
    for op in OPS:
        assert_refused(outcome(op, "parquet", store), "label")


def test_a_small_parquet_file_declaring_millions_of_rows_is_refused_from_its_footer(pristine, tmp_path):
    """Before: 0.8 GB was read from a 391 KB file declaring 30 million rows before the count was
    checked. A footer of 3 million rows of one (null) value each: refused before any column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    store = copy(pristine, "parquet", tmp_path)
    rows = 3_000_000
    table = pa.table({"id": pa.array(np.zeros(rows, np.int64)), "label": pa.array(np.zeros(rows, np.int64)),
                      "image": pa.nulls(rows, pa.binary()), "checksum": pa.array(np.zeros(rows, np.uint64))})
    pq.write_table(table, store / "images.parquet", compression="zstd")
    assert (store / "images.parquet").stat().st_size < 2**20
    for op in OPS:
        result = boxed(op, "parquet", store)
        assert_refused(result, "3,000,000 rows")
        assert result[-1] < 128 * 2**20  # pyarrow's own start takes about 60 MB of it


# ------------------------------------------------------------------ SQLite: nothing of the file's own runs

def _sql(store, script):
    import sqlite3
    db = sqlite3.connect(store / "images.sqlite", isolation_level=None)
    db.executescript(script)
    db.close()


@pytest.mark.parametrize("edit", [
    # a view shadowing nothing, a trigger that would write, an index: none of them is a store's
    "CREATE VIEW v AS SELECT * FROM images",
    "CREATE TRIGGER t AFTER UPDATE ON images BEGIN DELETE FROM images; END",
    "CREATE INDEX i ON images(label)",
    # the images table swapped for a view that computes its rows (a recursive query: CPU for ever)
    "ALTER TABLE images RENAME TO kept; CREATE VIEW images AS WITH RECURSIVE r(id) AS (SELECT 0 UNION ALL "
    "SELECT id + 1 FROM r) SELECT id, 0 AS label, 0 AS checksum, x'00' AS image FROM r",
])
def test_an_sqlite_store_with_another_schema_is_refused_before_any_query_of_it(pristine, tmp_path, edit):
    store = copy(pristine, "sqlite", tmp_path)
    _sql(store, edit)
    for op in OPS:
        assert_refused(boxed(op, "sqlite", store, seconds=20), "views or triggers")


def test_an_sqlite_header_claiming_pages_past_the_file_is_refused(pristine, tmp_path):
    store = copy(pristine, "sqlite", tmp_path)
    with open(store / "images.sqlite", "r+b") as f:
        f.seek(28)
        f.write((10**8).to_bytes(4, "big"))  # 400 GB of 4 KiB pages
    for op in OPS:
        assert_refused(outcome(op, "sqlite", store), "pages")


def test_an_sqlite_blob_of_the_wrong_size_is_refused(pristine, tmp_path):
    store = copy(pristine, "sqlite", tmp_path)
    _sql(store, "UPDATE images SET image = x'0102' WHERE id = 3")
    for op in ("read_many", "reader"):
        assert_refused(outcome(op, "sqlite", store), "image id 3")


# ------------------------------------------------------------------ Hugging Face datasets: state.json

@pytest.mark.parametrize("name", ["../elsewhere.arrow", "/etc/passwd", "missing.arrow", 7])
def test_an_hfdatasets_state_naming_files_outside_the_store_is_refused(pristine, tmp_path, name):
    store = copy(pristine, "hfdatasets", tmp_path)
    shutil.copyfile(store / "images.hf/data-00000-of-00001.arrow", tmp_path / "elsewhere.arrow")
    state = json.loads((store / "images.hf/state.json").read_text())
    state["_data_files"] = [{"filename": name}]
    (store / "images.hf/state.json").write_text(json.dumps(state))
    for op in OPS:
        assert_refused(outcome(op, "hfdatasets", store), "not a file of the store")


# ------------------------------------------------------------------ LitData: index.json and chunk tables

litdata = pytest.mark.skipif("litdata" not in NAMES, reason="litdata is an optional extra, not installed")


@litdata
@pytest.mark.parametrize("name", ["../elsewhere.bin", "/etc/passwd", "chunk-0-0.bin/..", 7])
def test_a_litdata_index_naming_chunks_outside_the_store_is_refused(pristine, tmp_path, name):
    store = copy(pristine, "litdata", tmp_path)
    shutil.copyfile(store / "chunk-0-0.bin", tmp_path / "elsewhere.bin")
    index = json.loads((store / "index.json").read_text())
    index["chunks"][0]["filename"] = name
    (store / "index.json").write_text(json.dumps(index))
    for op in OPS:
        assert_refused(outcome(op, "litdata", store), "not a chunk of the store")


@litdata
@pytest.mark.parametrize("source", ["litdata", "litdata.png"])
def test_a_litdata_index_describing_other_items_is_refused(pristine, tmp_path, source):
    store = copy(pristine, source, tmp_path, source)
    index = json.loads((store / "index.json").read_text())
    index["config"]["compression"] = "zstd"
    (store / "index.json").write_text(json.dumps(index))
    for op in OPS:
        assert_refused(outcome(op, "litdata", store), "other items")


@litdata
def test_a_litdata_item_table_pointing_past_its_chunk_is_refused(pristine, tmp_path):
    store = copy(pristine, "litdata", tmp_path)
    with open(store / "chunk-0-0.bin", "r+b") as f:
        f.seek(4 + 4 * N)  # the last item's end
        f.write(np.uint32(2**31).tobytes())
    for op in OPS:
        assert_refused(outcome(op, "litdata", store), "item table")


@litdata
def test_litdata_arrow_rows_claiming_more_than_their_chunk_are_refused(pristine, tmp_path):
    store = copy(pristine, "litdata.png", tmp_path, "litdata.png")
    with open(store / "chunk-0-0.bin", "r+b") as f:
        f.seek(-12, os.SEEK_END)
        f.write(np.uint32(2**31).tobytes())
    for op in OPS:
        assert_refused(outcome(op, "litdata", store), "Arrow rows")


# ------------------------------------------------------------------ Zarr: metadata bounded by files

def relabel_zarr(store, labels, **array_options):
    import zarr
    g = zarr.open_group(store / "images.zarr", mode="r+")
    del g["labels"]
    g.create_array("labels", shape=(N,), dtype=np.int64, **array_options)[...] = labels


def test_zarr_labels_in_a_chunk_per_label_are_refused(pristine, tmp_path):
    """Before: a million one-label chunks took 30 s and 2.4 GB per call."""
    store = copy(pristine, "zarr", tmp_path)
    relabel_zarr(store, pristine[2], chunks=(1,))
    for op in OPS:
        assert_refused(outcome(op, "zarr", store), "chunks for")


def test_a_zstd_chunk_declaring_gigabytes_is_refused_before_it_is_decoded(pristine, tmp_path):
    """Before: a 64 KB chunk declaring 2 GiB had numcodecs allocate 2 GiB."""
    import zarr
    store = copy(pristine, "zarr", tmp_path)
    relabel_zarr(store, pristine[2], chunks=(N,), compressors=zarr.codecs.ZstdCodec())
    chunk = store / "images.zarr/labels/c/0"
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (2**31).to_bytes(8, "little")  # single segment, 8-byte size
    chunk.write_bytes(frame + chunk.read_bytes()[13:])
    for op in OPS:
        result = boxed(op, "zarr", store)
        assert_refused(result, "declares 2,147,483,648 bytes")
        assert result[-1] < 256 * 2**20


# ------------------------------------------------------------------ what verify prints

def test_verify_prints_names_from_the_store_with_escapes(pristine, tmp_path):
    """A damaged store's file names and messages reach the terminal as text, never as escape
    sequences (a name can hold ESC [ ... that recolours, moves or retitles a terminal)."""
    import subprocess
    import sys
    store = copy(pristine, "disk", tmp_path)
    evil = "\x1b]0;owned\x07\x1b[2J"
    meta = json.loads((store / "imgbench.json").read_text())
    meta["backend"] = ["disk", evil]  # not even text
    (store / "imgbench.json").write_text(json.dumps(meta))
    renamed = tmp_path / f"s{evil}"
    store.rename(renamed)
    proc = subprocess.run([sys.executable, "-m", "imgbench.cli", "verify", str(renamed)], capture_output=True,
                          text=True, cwd=os.getcwd())
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout
    assert "\\x1b]0;owned\\x07" in proc.stdout and "a backend name is text" in proc.stdout
