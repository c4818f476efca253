"""The formats' authors' claims that need reads no other experiment makes (docs/claims.md):

take: random access by row, Lance against Parquet. The same PNG bytes of the run's largest
dataset in three files: a Lance dataset (`lance.write_dataset`, its defaults), a Parquet file
with pyarrow's defaults (`pq.write_table(table)`: one row group up to a million rows, Snappy,
dictionary encoding), and one configured for random access as the Lance paper configures it
(arXiv 2504.15247: small row groups, no compression or dictionary on the image column, 8 KiB
pages, a page index). Each is read the way its library's docs show reading rows by position:
Lance `ds.take(rows)`, pyarrow `ParquetFile.read_row_group(g)` of the row's group and a slice.
`single`: `k` random rows, one call each (lance#3981: a single-row take costs far more per row);
`batched`: the same rows, sorted, in one call (Lance) or one read per row group they fall in.

shuffle: Hugging Face datasets' warning that reads of a `shuffle()`d dataset go through an
indices mapping and can be ~10x slower until `flatten_indices()` rewrites it: batches of the
run's largest `hfdatasets` store through `load_from_disk(...).with_format("numpy")`, in order,
after `shuffle(seed)`, and after `shuffle(seed).flatten_indices()` (done once, its own time a
row; the passes read the file it wrote).

Every pass is timed for at most `seconds` (at least MIN_READS reads), warm (the files read once
first) and cold (evicted from the page cache first); what it read is compared with the source
after the clock stops.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ..images import image_bytes
from .rows import VerificationError, _row, latency_columns
from .timing import disk_usage, evict, machine, settle, timed

MIN_READS = 3
RA_ROW_GROUP = 100  # rows per row group in the Parquet file configured for random access
BATCH = 256


def _decode(data) -> np.ndarray:
    from ..clients.base import decode

    return decode(bytes(data))


def _check(what, got_images, got_labels, ids, images, labels) -> None:
    for i, data, label in zip(ids, got_images, got_labels):
        if int(label) != int(labels[i]) or not np.array_equal(_decode(data), images[i]):
            raise VerificationError(f"{what}: row {i} differs from what was written")


class _Lance:
    def __init__(self, path):
        import lance

        self.ds = lance.dataset(str(path))

    def single(self, i):
        t = self.ds.take([i], columns=["image", "label"])
        return t.column("image").to_pylist(), t.column("label").to_pylist()

    def batched(self, ids):
        t = self.ds.take(ids, columns=["image", "label"])
        return t.column("image").to_pylist(), t.column("label").to_pylist()


class _Parquet:
    def __init__(self, path):
        import pyarrow.parquet as pq

        self.pf = pq.ParquetFile(path)
        md = self.pf.metadata
        self.starts = np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])

    def _group(self, g):
        return self.pf.read_row_group(g, columns=["image", "label"])

    def single(self, i):
        g = int(np.searchsorted(self.starts, i, "right")) - 1
        t = self._group(g).slice(i - int(self.starts[g]), 1)
        return t.column("image").to_pylist(), t.column("label").to_pylist()

    def batched(self, ids):
        images, labels = [], []
        groups = np.searchsorted(self.starts, ids, "right") - 1
        for g in np.unique(groups).tolist():
            rows = np.asarray(ids)[groups == g] - int(self.starts[g])
            t = self._group(g).take(rows)
            images += t.column("image").to_pylist()
            labels += t.column("label").to_pylist()
        return images, labels


def _take_pass(reader, ids, mode: str, seconds: float):
    """One timed pass: the rows `ids` one call each (`single`, for at most `seconds`, at least
    MIN_READS) or sorted in one batch; (images' bytes, labels, rows read, latencies)."""
    got_i, got_l, done, lat = [], [], [], []
    start = time.perf_counter()
    if mode == "batched":
        done = np.sort(ids).tolist()
        got_i, got_l = reader.batched(done)
        return got_i, got_l, done, [time.perf_counter() - start]
    for i in ids.tolist():
        t = time.perf_counter()
        a, b = reader.single(i)
        lat.append(time.perf_counter() - t)
        got_i += a
        got_l += b
        done.append(i)
        if len(done) >= MIN_READS and time.perf_counter() - start > seconds:
            break
    return got_i, got_l, done, lat


def _batches(ds, seconds: float):
    """One timed pass over a dataset's batches, for at most `seconds` (at least MIN_READS
    batches); (their (ids, images, labels), latencies)."""
    got, lat = [], []
    start = t = time.perf_counter()
    for batch in ds.iter(batch_size=BATCH):
        got.append((batch["id"], batch["image"], batch["label"]))
        now = time.perf_counter()
        lat.append(now - t)
        t = now
        if len(got) >= MIN_READS and now - start > seconds:
            break
    return got, lat


def write_take_files(images, labels, root: Path, log, encoded=None) -> dict[str, Path]:
    """The three files of the same PNG bytes (`encoded`, the images' PNG bytes, or encoded
    here); {name: path}."""
    import lance
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..backends import variant

    root.mkdir(parents=True, exist_ok=True)
    b = variant("parquet.png")
    if encoded is None:
        t0 = time.perf_counter()
        encoded = b._encode_all(images, None)
        log(f"  {len(encoded):,} images PNG-encoded in {time.perf_counter() - t0:.1f} s")
    encoded = [bytes(encoded[i]) for i in range(len(encoded))]
    table = pa.table({"id": pa.array(np.arange(len(encoded), dtype=np.int64)),
                      "label": pa.array(np.asarray(labels, np.int64)), "image": pa.array(encoded, pa.binary())})
    paths = {"lance": root / "images.lance", "parquet-defaults": root / "defaults.parquet",
             "parquet-random-access": root / "random-access.parquet"}
    lance.write_dataset(table, str(paths["lance"]))
    pq.write_table(table, paths["parquet-defaults"])
    pq.write_table(table, paths["parquet-random-access"], row_group_size=RA_ROW_GROUP, compression="none",
                   use_dictionary=["id", "label"], data_page_size=8192, write_page_index=True)
    return paths


def take(images, labels, root, k: int, repeats: int, seed: int, seconds: float, dataset: str,
         log=print, encoded=None) -> list[dict]:
    """Rows of single and batched random reads by row of Lance and both Parquet files (of the
    images' PNG bytes, `encoded` or encoded here)."""
    root = Path(root)
    n = len(images)
    paths = write_take_files(images, labels, root, log, encoded)
    rows, where = [], machine(root)
    try:
        for name, path in paths.items():
            usage = disk_usage(path)
            settle(path)
            for cache in ("warm", "cold"):
                for r in range(1, repeats + 1):
                    ids = np.random.default_rng([seed, r]).integers(0, n, k)
                    for mode in ("single", "batched"):
                        if cache == "cold":
                            evict(path)
                        reader = (_Lance if name == "lance" else _Parquet)(path)
                        if cache == "warm":  # untimed: the same reads once, the pages cached
                            reader.batched(np.sort(ids).tolist())
                        took, peak, before, (got_i, got_l, done, lat) = timed(_take_pass, reader, ids, mode, seconds)
                        _check(f"take {name} {mode} {cache} {r}", got_i, got_l, done, images, labels)
                        log(f"take {name} {mode} {cache} {r}/{repeats}: {len(done)} rows in {took:.3f} s "
                            f"({took / len(done) * 1e3:.3f} ms a row), verified")
                        rows.append(_row("claim-take", name, n, r, took, cache, peak, before, usage, True, dataset,
                                         {}, where, image_bytes(images), images=len(done), client="stock",
                                         variant=mode, **latency_columns(lat)))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def shuffle(store, images, labels, repeats: int, seed: int, seconds: float, dataset: str, tmp,
            log=print) -> list[dict]:
    """Rows of batched reads of an hfdatasets store in order, shuffled, and shuffled then flattened."""
    from datasets import load_from_disk

    store, tmp = Path(store), Path(tmp)
    n, where, usage = len(images), machine(store), disk_usage(store)
    rows = []
    tmp.mkdir(parents=True, exist_ok=True)
    flat = tmp / "flat.arrow"
    try:
        # flatten_indices() once: it rewrites the whole store (15 s for 100,000 CIFAR images as
        # Array3D here); every pass then reads that file, shuffled with the seed
        took, peak, before, _ = timed(load_from_disk(str(store / "images.hf")).shuffle(seed=seed).flatten_indices,
                                      cache_file_name=str(flat))
        log(f"shuffle flatten_indices(): {took:.3f} s")
        rows.append(_row("claim-shuffle", "hfdatasets", n, 1, took, "none", peak, before, usage, True, dataset, {},
                         where, image_bytes(images), images=n, client="stock", variant="flatten_indices() itself"))
        for cache in ("warm", "cold"):
            for r in range(1, repeats + 1):
                if cache == "warm":
                    settle(store)
                    settle(flat)
                for variant in ("in order", "shuffle()", "shuffle().flatten_indices()"):
                    if cache == "cold":  # nothing of the store is mapped here now
                        evict(store)
                        evict(flat)
                    ds = load_from_disk(str(store / "images.hf"))  # maps the Arrow files: no read
                    if variant == "shuffle()":
                        ds = ds.shuffle(seed=seed)
                    elif variant != "in order":
                        ds = ds.shuffle(seed=seed).flatten_indices(cache_file_name=str(flat))  # the file made above
                    ds = ds.with_format("numpy")
                    took, peak, before, (got, lat) = timed(_batches, ds, seconds)
                    count = 0
                    for ids, im, lab in got:  # off the clock
                        ids = np.asarray(ids, np.int64)
                        same = np.array_equal(lab, labels[ids]) and all(
                            np.array_equal(np.asarray(a), images[int(i)]) for a, i in zip(im, ids))
                        if not same:
                            raise VerificationError(f"shuffle {variant} {cache} {r}: a batch differs from the source")
                        count += len(ids)
                    log(f"shuffle {variant} {cache} {r}/{repeats}: {count:,} images in {took:.3f} s "
                        f"({count / took:,.0f} images/s), verified")
                    rows.append(_row("claim-shuffle", "hfdatasets", n, r, took, cache, peak, before, usage, True, dataset,
                                     {}, where, image_bytes(images), images=count, client="stock",
                                     variant=variant, **latency_columns(lat)))
                    del ds, got  # nothing left mapped: the next cold pass evicts the store
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
