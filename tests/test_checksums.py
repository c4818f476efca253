"""The per-image checksums: the compiled loop and Python give python-xxhash's answers, and hashing
beside a store (a thread when compiled, a forked process otherwise) returns them or its error."""
import os

import numpy as np
import pytest
from xxhash import xxh3_64_intdigest

from imgbench import backends
from imgbench.backends import integrity

PATHS = ["compiled", "python"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "compiled" and integrity.COMPILED is None:
        pytest.skip("the compiled loop is not built here (no C compiler at install)")
    if request.param == "python":
        monkeypatch.setattr(integrity, "COMPILED", None)
    return request.param


def _reference(rows, labels):
    return np.array([xxh3_64_intdigest(bytes(r), int(lab) & integrity.MASK) for r, lab in zip(rows, labels)], np.uint64)


@pytest.mark.parametrize("shape", [(0, 4), (1, 3072), (300, 32, 32, 3), (50, 5), (40, 241), (20, 1)])
def test_rows_are_python_xxhash_of_each_row_seeded_with_its_label(path, shape):
    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, shape, np.uint8)
    labels = rng.integers(-(2**62), 2**62, shape[0])
    labels[:3] = [-1, 0, 9][:shape[0]]
    got = integrity.rows(images, labels)
    assert got.dtype == np.uint64 and got.shape == (shape[0],)
    assert np.array_equal(got, _reference(list(images), labels))


def test_spans_are_python_xxhash_of_each_byte_range(path):
    rng = np.random.default_rng(3)
    sizes = rng.integers(0, 5000, 400)
    sizes[:6] = [0, 1, 16, 17, 240, 241]
    data = rng.integers(0, 256, int(sizes.sum()) + 7, np.uint8)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets[7] = offsets[8]  # overlapping ranges are allowed: each is hashed on its own
    labels = rng.integers(0, 10, len(sizes))
    got = integrity.spans(data, offsets, sizes, labels)
    assert np.array_equal(got, _reference([data[o:o + s] for o, s in zip(offsets, sizes)], labels))


def test_the_compiled_loop_is_built_and_found_where_a_compiler_was():
    if integrity.COMPILED is None:
        if os.environ.get("IMGBENCH_COMPILED") == "required":
            pytest.fail("the compiled checksum loop was not built or its XXH3 was not found")
        pytest.skip("the compiled loop is not built here (no C compiler at install)")
    module, fn = integrity.COMPILED
    assert module.__name__ == "imgbench.backends._xxh3" and fn


def test_the_compiled_loop_refuses_what_would_read_outside_the_buffer():
    if integrity.COMPILED is None:
        pytest.skip("the compiled loop is not built here")
    module, fn = integrity.COMPILED
    data, out = np.zeros(100, np.uint8), np.empty(2, np.uint64)
    seeds = np.zeros(2, np.uint64)
    with pytest.raises(ValueError, match="outside"):
        module.spans(fn, data, np.array([0, 90], np.int64), np.array([10, 11], np.int64), seeds, out)
    with pytest.raises(ValueError, match="outside"):
        module.spans(fn, data, np.array([0, -1], np.int64), np.array([10, 1], np.int64), seeds, out)
    with pytest.raises(ValueError, match="seeds"):
        module.spans(fn, data, np.array([0, 5], np.int64), np.array([5, 5], np.int64), np.zeros(3, np.uint64), out)


def test_hashing_beside_the_writer_gives_the_checksums(path):
    n = integrity.BACKGROUND_MIN * 3
    images = np.random.default_rng(5).integers(0, 256, (n, 8, 8, 3), np.uint8)
    labels = np.arange(n) % 10
    with integrity.Hashing(integrity.rows, n, images, labels) as h:
        h.start()
        written = images.copy()  # the writer's work, meanwhile
    assert np.array_equal(h.result(), integrity.rows(written, labels))


def test_a_hashing_error_is_raised_by_result_and_never_hides_the_writers_error(path):
    def broken(*args):
        raise RuntimeError("hash failed")

    n = integrity.BACKGROUND_MIN * 2
    h = integrity.Hashing(broken, n)
    with pytest.raises(RuntimeError, match="hash failed"):  # a failed process's share is hashed here again
        with h:
            h.start()
    with pytest.raises(RuntimeError, match="hash failed"):
        h.result()
    with pytest.raises(KeyError, match="the writer's"):
        with integrity.Hashing(broken, n) as h2:
            h2.start()
            raise KeyError("the writer's")


@pytest.mark.parametrize("name", ["npy", "hdf5", "zarr", "article-hdf5", "npy+ragged"])
def test_stores_keep_the_same_checksums_hashed_either_way(tmp_path, monkeypatch, name):
    label, _, ragged = name.partition("+")
    n, rng = integrity.BACKGROUND_MIN + 44, np.random.default_rng(7)
    if ragged:
        images = [rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3), np.uint8)
                  for _ in range(n)]
    else:
        images = rng.integers(0, 256, (n, 6, 5, 3), np.uint8)
    labels = rng.integers(0, 10, n)
    b = backends.variant(label)
    sums = {}
    for kind in PATHS:
        if kind == "python":
            monkeypatch.setattr(integrity, "COMPILED", None)
        elif integrity.COMPILED is None:
            continue
        path = b.store_many(tmp_path / kind, images, labels)
        sums[kind] = b._sums(b.open(path))
        report = backends.verify(path)
        assert report.ok and report.checked == n, report.summary()
    assert all(np.array_equal(s, sums["python"]) for s in sums.values())
    expected = [bytes(np.ascontiguousarray(a)) for a in images]
    if label != "article-hdf5":  # the article keeps big-endian bytes of the same values
        assert np.array_equal(sums["python"], _reference(expected, labels))
