"""The per-image checksums: python-xxhash's XXH3 of each image's stored bytes seeded with its
label, hashed beside a store's write (a forked process) or here, the same either way."""
import numpy as np
import pytest
from xxhash import xxh3_64_intdigest

from imgbench import backends
from imgbench.backends import checksums


def _reference(rows, labels):
    return np.array([xxh3_64_intdigest(bytes(r), int(lab) & checksums.MASK) for r, lab in zip(rows, labels)],
                    np.uint64)


@pytest.mark.parametrize("shape", [(0, 4), (1, 3072), (300, 32, 32, 3), (50, 5), (40, 241), (20, 1)])
def test_rows_are_python_xxhash_of_each_row_seeded_with_its_label(shape):
    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, shape, np.uint8)
    labels = rng.integers(-(2**62), 2**62, shape[0])
    labels[:3] = [-1, 0, 9][:shape[0]]
    got = checksums.rows(images, labels)
    assert got.dtype == np.uint64 and got.shape == (shape[0],)
    assert np.array_equal(got, _reference(list(images), labels))


def test_spans_are_python_xxhash_of_each_byte_range():
    rng = np.random.default_rng(3)
    sizes = rng.integers(0, 5000, 400)
    sizes[:6] = [0, 1, 16, 17, 240, 241]
    data = rng.integers(0, 256, int(sizes.sum()) + 7, np.uint8)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets[7] = offsets[8]  # overlapping ranges are allowed: each is hashed on its own
    labels = rng.integers(0, 10, len(sizes))
    got = checksums.spans(data, offsets, sizes, labels)
    assert np.array_equal(got, _reference([data[o:o + s] for o, s in zip(offsets, sizes)], labels))


@pytest.mark.parametrize("offsets,sizes", [([0, 90], [10, 11]), ([0, -1], [10, 1]), ([0, 5], [5, -1])])
def test_spans_refuse_ranges_outside_the_buffer(offsets, sizes):
    with pytest.raises(ValueError, match="outside the buffer"):
        checksums.spans(np.zeros(100, np.uint8), offsets, sizes, [0, 0])


@pytest.mark.parametrize("n", [checksums.BACKGROUND_MIN - 1, checksums.BACKGROUND_MIN * 3])
def test_hashing_beside_the_writer_gives_the_checksums(n):
    images = np.random.default_rng(5).integers(0, 256, (n, 8, 8, 3), np.uint8)
    labels = np.arange(n) % 10
    with checksums.Hashing(checksums.rows, n, images, labels) as h:
        h.start()
        written = images.copy()  # the writer's work, meanwhile
    assert np.array_equal(h.result(), _reference(list(written), labels))


def test_a_hashing_error_is_raised_by_result_and_never_hides_the_writers_error():
    def broken(*args):
        raise RuntimeError("hash failed")

    n = checksums.BACKGROUND_MIN * 2
    h = checksums.Hashing(broken, n)
    with pytest.raises(RuntimeError, match="hash failed"):  # a failed process's share is hashed here again
        with h:
            h.start()
    with pytest.raises(RuntimeError, match="hash failed"):
        h.result()
    with pytest.raises(KeyError, match="the writer's"):
        with checksums.Hashing(broken, n) as h2:
            h2.start()
            raise KeyError("the writer's")


@pytest.mark.parametrize("name", ["npy", "hdf5", "zarr", "article-hdf5", "npy+ragged"])
@pytest.mark.parametrize("n", [checksums.BACKGROUND_MIN - 6, checksums.BACKGROUND_MIN + 44])
def test_stores_keep_python_xxhash_checksums_hashed_beside_or_here(tmp_path, name, n):
    label, _, ragged = name.partition("+")
    rng = np.random.default_rng(7)
    if ragged:
        images = [rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3), np.uint8)
                  for _ in range(n)]
    else:
        images = rng.integers(0, 256, (n, 6, 5, 3), np.uint8)
    labels = rng.integers(0, 10, n)
    b = backends.variant(label)
    path = b.store_many(tmp_path / "s", images, labels)
    report = backends.verify(path)
    assert report.ok and report.checked == n, report.summary()
    # the article keeps big-endian bytes of the same values: the same bytes for uint8
    expected = [bytes(np.ascontiguousarray(a)) for a in images]
    assert np.array_equal(b._sums(b.open(path)), _reference(expected, labels))
