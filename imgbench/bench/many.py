"""The article's experiments, measured honestly; each returns tidy rows, one per timed repeat.

- Every store repeat writes a fresh store, after an untimed warm-up (see `_warm_up`); os.sync()
  runs before each timed repeat so that writeback of the previous one does not compete with it.
  Stores count as written when their files are closed (no fsync, for every backend alike,
  unless the backend's fsync option is on). The first stored repeat is read back and compared;
  each later one must have the first one's digest of its files (else it is read back too).
- Warm reads follow evicting the store and reading every byte of it back (bench.settle), then
  an untimed warm-up read; cold reads follow evicting the store's files from the page cache
  (sync + POSIX_FADV_DONTNEED).
  Directory entries and inodes stay cached either way.
- Every read is compared with the source after the clock stops; a mismatch stops the job.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np

from .. import progress
from ..backends import checksums, parallel, variant
from ..images import ImageList, image_bytes
from .rows import VerificationError, _check, _coding, _row
from .timing import disk_usage, evict, machine, settle, timed, tree_digest

WARMUP_IMAGES = 1000  # every warm-up starts with this many images ...
WARMUP_SECONDS = 5.0  # ... and repeats on all of them if that is projected to take at most this long


def _warm_up(fn, n: int, log, what: str) -> bool:
    """Run fn(k) untimed on the first min(n, WARMUP_IMAGES) images, then on all n if that is
    projected to take at most WARMUP_SECONDS. True if it ran on all n.

    A full-size warm-up pays first-touch costs (fresh page cache, the allocator's first big
    arrays) that would otherwise land in the first repeat of a fast store; a store that takes
    longer hardly notices them, and warming it up on all images would only double its cost."""
    k = min(n, WARMUP_IMAGES)
    seconds, _, _, _ = timed(fn, k)
    full = k == n or seconds * n / k <= WARMUP_SECONDS
    if k < n and full:
        seconds, _, _, _ = timed(fn, n)
    log(f"  {what}: untimed warm-up on {n if full else k:,} images took {seconds:.3f}s")
    return full


MANY_FILES = 1000  # a store of at least this many files keeps its spare repeats until the merge


def store_many(name: str, options: dict, images, labels, out: Path, repeats: int, dataset: str,
               log: Callable[[str], None] = print, trash: Path | None = None, backend=None, sources=None,
               expected=None, psnr: float | None = None, checksums: bool = False) -> list[dict]:
    """Store `images` `repeats` times, each into a fresh store; the last becomes `out`.

    `name` is a backend label ("lmdb", "lmdb.jpeg"); `sources`, the files' bytes for a source
    store; `expected`, what a lossy store must read back (default `images`), with its `psnr`.

    An untimed warm-up store comes first (see `_warm_up`). The first repeat is read back and
    compared with the source; later ones must have the same digest of their bytes (else they are
    read back too). What happens to a spare store depends on its files:
    - few files: it is deleted before the next repeat, so every repeat writes into page cache
      that the last one freed. Memory the system has not used for a while can cost far more to
      touch than to write (on this project's VMs the host backs it on first touch: 300 MB then
      take 0.6 s instead of 0.05 s), and that would measure the machine, not the format.
    - many files: nothing is deleted between timed repeats: on ext4 without a journal, inodes
      freed in the last 60-300 s are skipped when files are created, so creating many files
      soon after deleting many is several times slower. With `trash`, those stores are moved
      there (a rename frees no inodes) for a later step to delete; without it they are deleted
      at the end.
    """
    b, n, out = backend or variant(name, **options), len(images), Path(out)
    expected = images if expected is None else expected
    columns = _coding(b, expected, psnr)
    out.parent.mkdir(parents=True, exist_ok=True)
    where = machine(out.parent)
    warmup = out.parent / f".{out.name}.warmup"
    paths = [out.parent / f".{out.name}.repeat{r}" for r in range(1, repeats + 1)]
    for p in [warmup, *paths]:
        shutil.rmtree(p, ignore_errors=True)  # left over from an interrupted run

    def warm_up_store(k):
        shutil.rmtree(warmup, ignore_errors=True)
        b.store_many(warmup, images[:k], labels[:k], sources=None if sources is None else sources[:k])

    warmed = n if _warm_up(warm_up_store, n, log, f"store_many {name} n={n}") else min(n, WARMUP_IMAGES)
    few = disk_usage(warmup)["files"] * n / warmed < MANY_FILES  # files of a store of n, projected
    spare, rows, first = [warmup], [], None
    for r, path in enumerate(paths, 1):
        if few:
            _discard(spare, None)
            spare = []
        os.sync()
        log(f"store_many {name} n={n}: repeat {r}/{repeats} ...")
        with progress.tracking(f"store_many {name} n={n} repeat {r}/{repeats}", n, log):
            seconds, peak, before, _ = timed(b.store_many, path, images, labels, sources=sources)
        usage = disk_usage(path)
        how = "verified: the same bytes as repeat 1"
        digest = tree_digest(path) if repeats > 1 else None
        if r == 1 or digest != first:
            got, got_labels = b.read_many(path)
            _check(f"{name} store of {n}", got, expected)
            _check(f"{name} labels of {n}", got_labels, labels)
            del got, got_labels
            how = "verified: read back equal to the source"
        first = first or digest
        log(f"  stored in {seconds:.3f}s, {usage['bytes_apparent'] / 1e6:.1f} MB in {usage['files']} files; {how}")
        rows.append(_row("store_many", name, n, r, seconds, "none", peak, before, usage, True, dataset,
                         options, where, image_bytes(images), **columns))
        if r < repeats:
            spare.append(path)
    _discard([out], trash)
    paths[-1].rename(out)
    _discard(spare, None if few else trash)
    if checksums:
        rows += checksum_cost(name, b, out, repeats, log, columns, dataset, options, where, image_bytes(images))
    return rows


def checksum_cost(name: str, b, store: Path, repeats: int, log, columns, dataset, options, where, px) -> list[dict]:
    """`checksum` rows: XXH3 of every image's stored bytes with its label, in one process, from
    memory, by the loop the stores use: what keeping checksums adds to a
    store at most (parallel coders hash their share; raw stores hash beside their write)."""
    st = b.open(store)
    h = b._handle(st)
    try:
        pairs = [(bytes(d), lab) for d, lab in h.stored_range(0, st.count)]
    finally:
        h.close()
    sizes = np.array([len(d) for d, _ in pairs], np.int64)
    data = np.frombuffer(b"".join(d for d, _ in pairs), np.uint8)
    offsets, labels = np.cumsum(sizes) - sizes, np.array([lab for _, lab in pairs], np.int64)
    del pairs
    usage = {"bytes_apparent": int(sizes.sum()), "bytes_allocated": None, "files": 0}
    rows = []
    for r in range(1, repeats + 1):
        seconds, peak, before, _ = timed(lambda: checksums.spans(data, offsets, sizes, labels))
        log(f"  checksums of the {len(sizes):,} images' stored bytes, from memory: {seconds:.3f}s")
        rows.append(_row("checksum", name, st.count, r, seconds, "memory", peak, before, usage, True, dataset,
                         options, where, px, **columns))
    return rows


def _discard(paths, trash: Path | None) -> None:
    for p in paths:
        if not p.exists():
            continue
        if trash is None:
            shutil.rmtree(p)
        else:
            trash.mkdir(parents=True, exist_ok=True)
            p.rename(trash / f"{p.parent.name}-{p.name.lstrip('.')}-{os.getpid()}")


def empty_trash(trash: Path) -> None:
    """Delete the spare stores, one `rm` per store, as many at once as there are cores: coreutils'
    rm unlinks in inode order (a quarter faster than shutil.rmtree on 100,000 files), and stores
    in separate directories delete in parallel (four stores of 50,000 files here: 17 s one by
    one, 11 s two at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    trash, rm = Path(trash), shutil.which("rm")
    if rm and trash.is_dir():
        with ThreadPoolExecutor(parallel.available_cores()) as pool:
            list(pool.map(lambda p: subprocess.run([rm, "-rf", "--", str(p)], check=False), list(trash.iterdir())))
    shutil.rmtree(trash, ignore_errors=True)


def read_many(name: str, options: dict, store: Path, images, labels, repeats: int, dataset: str,
              log: Callable[[str], None] = print, backend=None, expected=None,
              psnr: float | None = None, limit_bytes=None, verify: bool = False,
              client: str = "imgbench", cold: bool = True, tier=None) -> list[dict]:
    """read_many of a whole store by `client` (imgbench's backend, or the format's own library's
    whole read: clients.Whole): `repeats` warm reads, then (with `cold`) `repeats` cold ones, each
    compared with `expected` (default `images`). In a storage tier (`tier`, a tiers.Session this
    process has entered), cold reads only, each with the tier's cache limit and device counters.

    With `limit_bytes` (the images' encoded bytes, in memory), each warm read is followed by
    Pillow alone decoding those bytes with as many processes as the read used: a `decode` row
    per repeat, timed alternately with the reads so that both see the same machine. With
    `verify`, each warm read is also followed by a timed `verify` of the whole store (every
    image's stored bytes against its checksum): a `verify` row per repeat. Both are imgbench's
    own, so a stock client's read has neither."""
    from ..clients import Whole

    b, n = backend or variant(name, **options), len(images)
    reading = b if client == "imgbench" else Whole(name)
    if client != "imgbench":
        limit_bytes, verify = None, False
    expected = images if expected is None else expected
    columns = _coding(b, expected, psnr)
    workers = None  # processes Pillow alone decodes with: as many as the store's read
    if limit_bytes is not None:
        from ..images import Codec, shapes_of

        workers, codec = b.read_processes(n), Codec.from_coding(columns["encoding"])
        shape = None if isinstance(images, ImageList) else images.shape[1:]
        shapes = shapes_of(images) if shape is None else None
        limit_usage = {"bytes_apparent": limit_bytes.nbytes, "bytes_allocated": None, "files": 0}
        decode_from_memory(workers, limit_bytes, codec, shape, shapes)  # untimed, as the read's warm-up
    usage, where, rows = disk_usage(store), machine(store), []
    if tier is None:  # a tier's reads are cold only: warming the store would read it through the tier's limits
        settle(store)
    # untimed: this process's code paths and allocator warm
    _warm_up(lambda k: reading.read_many(store, np.arange(k) if k < n else None), n, log,
             f"read_many {name} {client} n={n}")
    caches = ("cold",) if tier is not None else ("warm", "cold") if cold else ("warm",)
    for cache in caches:
        for r in range(1, repeats + 1):
            if cache == "cold" and not (tier.evict if tier is not None else evict)(store):
                log("  this OS cannot evict files from the page cache; skipping cold reads")
                break
            if tier is not None:  # the result it reads into is the read's own memory, not the cache
                tier.pass_started(usage["bytes_apparent"], allocates=int(expected.nbytes))
            with progress.tracking(f"read_many {name} {client} n={n} {cache} {r}/{repeats}", n, log):
                seconds, peak, before, (got, got_labels) = timed(reading.read_many, store)
            in_tier = tier.pass_ended(seconds) if tier is not None else {}
            if isinstance(got, list):  # a stock reader's images of different shapes
                got = ImageList.from_arrays(got)
            _check(f"{name} {client} read of {n}", got, expected)
            _check(f"{name} {client} labels of {n}", got_labels, labels)
            del got, got_labels
            log(f"read_many {name} {client} n={n} {cache} {r}/{repeats}: {seconds:.3f}s, verified")
            rows.append(_row("read_many", name, n, r, seconds, cache, peak, before, usage, True, dataset,
                             options, where, image_bytes(images), client=client, **columns, **in_tier))
            if workers is not None and cache == "warm":
                seconds, peak, before, got = timed(decode_from_memory, workers, limit_bytes, codec, shape, shapes)
                _check(f"{name}'s bytes decoded from memory", got, expected)
                del got
                log(f"  Pillow alone on the same bytes in memory, {workers} process(es): {seconds:.3f}s, verified")
                rows.append(_row("decode", name, n, r, seconds, "memory", peak, before, limit_usage, True, dataset,
                                 options, where, image_bytes(images), workers=workers, **columns))
            if verify and cache == "warm":
                seconds, peak, before, report = timed(b.verify, store)
                if not report.ok:
                    raise VerificationError(f"{name} store of {n} fails verify: {report.summary()}")
                log(f"  verify (every image against its checksum): {seconds:.3f}s, {report.checked:,} images intact")
                rows.append(_row("verify", name, n, r, seconds, "warm", peak, before, usage, True, dataset,
                                 options, where, image_bytes(images), **columns))
    return rows


class NumpyLimit:
    """The limit every format is compared with: np.save and np.load of the same two arrays
    (images and labels, two files), with nothing else on the way. Images of different shapes
    are three arrays: all pixels one after another (packed first, unless they already are),
    the shapes, the labels."""

    encoding = "raw"

    def store_many(self, path, images, labels, sources=None):
        path = Path(path)
        path.mkdir()
        if isinstance(images, ImageList):
            np.save(path / "images.npy", images.flat())
            np.save(path / "shapes.npy", images.shapes)
        else:
            np.save(path / "images.npy", images)
        np.save(path / "labels.npy", labels)

    def read_many(self, path, ids=None):
        images, labels = np.load(Path(path) / "images.npy"), np.load(Path(path) / "labels.npy")
        if images.ndim == 1:
            shapes = np.load(Path(path) / "shapes.npy")
            sizes = shapes.prod(axis=1)
            images = ImageList(images, np.cumsum(sizes) - sizes, shapes)
        return (images, labels) if ids is None else (images[ids], labels[ids])


LIMIT = "numpy"  # the backend column of the limit's rows


def limit(images, labels, work: Path, repeats: int, dataset: str, log: Callable[[str], None] = print) -> list[dict]:
    """store_many and read_many rows for np.save / np.load of the same arrays, by the same method
    (warm-up, sync, verified repeats, warm then cold reads). `work` is deleted at the end."""
    work = Path(work)
    shutil.rmtree(work, ignore_errors=True)
    try:
        store = work / "store"
        rows = store_many(LIMIT, {}, images, labels, store, repeats, dataset, log, backend=NumpyLimit())
        reads = read_many(LIMIT, {}, store, images, labels, repeats, dataset, log, backend=NumpyLimit())
        return rows + [{**r, "client": None} for r in reads]  # np.load: no reader of ours or a format's
    finally:
        shutil.rmtree(work, ignore_errors=True)


def single(name: str, options: dict, image, image_id: int, label: int, store: Path, repeats: int,
           dataset: str, log: Callable[[str], None] = print, source=None, expected=None,
           psnr: float | None = None) -> list[dict]:
    """The article's single-image experiment: store one image in a new store, read it back
    (compared with `expected`, default `image`; `source`: its file's bytes for a source store)."""
    b, store, rows = variant(name, **options), Path(store), []
    columns = _coding(b, expected, psnr)
    expected = image if expected is None else expected
    where = machine(store.parent)
    for r in range(1, repeats + 1):
        shutil.rmtree(store, ignore_errors=True)
        os.sync()
        seconds, peak, before, _ = timed(b.store_single, store, image, image_id, label, source=source)
        _check_single(name, b, store, image_id, expected, label)
        rows.append(_row("store_single", name, 1, r, seconds, "none", peak, before, disk_usage(store), True,
                         dataset, options, where, image.nbytes, **columns))
        log(f"store_single {name} {r}/{repeats}: {seconds * 1e3:.2f} ms, verified")
    usage = disk_usage(store)
    b.read_single(store, image_id)
    for cache in ("warm", "cold"):
        for r in range(1, repeats + 1):
            if cache == "cold" and not evict(store):
                break
            seconds, peak, before, result = timed(b.read_single, store, image_id)
            _check_single(name, b, store, image_id, expected, label, result)
            rows.append(_row("read_single", name, 1, r, seconds, cache, peak, before, usage, True, dataset,
                             options, where, image.nbytes, **columns))
            log(f"read_single {name} {cache} {r}/{repeats}: {seconds * 1e3:.2f} ms, verified")
    return rows


def _check_single(name, b, store, image_id, image, label, result=None) -> None:
    got, got_label = result if result is not None else b.read_single(store, image_id)
    _check(f"{name} single image", got, image)
    if got_label != label:
        raise VerificationError(f"{name} single label: read {got_label}, wrote {label}")


def _decode_blobs(bounds) -> None:
    blobs, codec, out = parallel.job["blobs"], parallel.job["codec"], parallel.job["out"]
    for i in range(*bounds):
        codec.decode_into(out[i], blobs[i], f"image {i}")


def decode_from_memory(workers: int, blobs, codec, shape, shapes):
    """Pillow alone: every image's bytes, already in memory, decoded into one result, as a
    backend's whole-store read does it (in `workers` forked processes, into shared memory), but
    with no container on the way: the limit of an encoded store's read."""
    n = len(blobs)
    workers = parallel.processes(n, workers)
    out = parallel.allocate(shape, shapes, n, workers > 1)
    parallel.run(_decode_blobs, n, dict(blobs=blobs, codec=codec, out=out), workers)
    return out
