"""PNG files: `{id}.png` per image (Pillow) and one `labels.csv` (image_id,label) per store.

PNG coding is CPU-bound (zlib and Pillow's per-image overhead), so batches are split over
`workers` forked processes: children inherit the input array and write files themselves, and
when reading they decode straight into one shared output buffer, so no image is pickled
between processes. Encoding goes to memory and then to the file in one write.
"""
from __future__ import annotations

import io
import mmap
import multiprocessing
import os

import numpy as np
from PIL import Image

from .base import Backend, Handle, NotAStoreError, Store

LABELS = "labels.csv"
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
PARALLEL_MIN = 256  # below this many images, starting processes costs more than it saves
ANNOUNCE = 128  # files opened and announced to the kernel at once when reading many

# The arrays a forked worker uses; set in the parent just before the fork.
_job: dict = {}


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _png_bytes(image: np.ndarray, level: int) -> bytes:
    if image.shape[2] == 1:
        image = image[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _write_file(path: str, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _encode_range(bounds: tuple[int, int]) -> None:
    j = _job
    images, root, first_id, level, fsync = j["images"], j["root"], j["first_id"], j["level"], j["fsync"]
    for i in range(*bounds):
        _write_file(os.path.join(root, f"{first_id + i}.png"), _png_bytes(images[i], level), fsync)


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    data = os.read(fd, size)
    while len(data) < size:  # a short read (a large file): finish it
        more = os.read(fd, size - len(data))
        if not more:
            break
        data += more
    return data


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)  # os-level: a third of the cost of open() for small files
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _read_files(paths):
    """The bytes of each file, in order. Files are opened and announced to the kernel a group at
    a time (POSIX_FADV_WILLNEED), so from a cold cache their reads are in flight together instead
    of one after another: measured 4-5x more small files per second from a cold cache here."""
    for s in range(0, len(paths), ANNOUNCE):
        fds = []
        try:
            for p in paths[s:s + ANNOUNCE]:
                fds.append(os.open(p, os.O_RDONLY))
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fds[-1], 0, 0, os.POSIX_FADV_WILLNEED)
            for fd in fds:
                yield _read_fd(fd)
        finally:
            for fd in fds:
                os.close(fd)


def _decode_into(out: np.ndarray, k: int, path: str) -> None:
    _decode_png_into(out, k, _read_file(path), path)


def _decode_png_into(out: np.ndarray, k: int, data, where: str) -> None:
    """PNG bytes (any buffer; also used by the tar and parquet backends) into out[k]."""
    with Image.open(io.BytesIO(data), formats=("PNG",)) as im:  # no probing of other formats
        im.load()
        a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape != out.shape[1:]:
        raise NotAStoreError(f"{where} holds a {a.shape} image, the store's shape is {out.shape[1:]}")
    out[k] = a


def _decode_many(out: np.ndarray, paths, start: int = 0) -> None:
    """Decode the files `paths` into out[start:start + len(paths)]."""
    files = _read_files(paths)
    try:
        for k, (path, data) in enumerate(zip(paths, files), start):
            _decode_png_into(out, k, data, path)
    finally:
        files.close()  # closes the files of an unfinished group at once


def _decode_range(bounds: tuple[int, int]) -> None:
    a, b = bounds
    _decode_many(_job["out"], _job["paths"][a:b], a)


class DiskBackend(Backend):
    name = "disk"

    def __init__(self, *, compress_level: int = 6, workers: int | None = None,
                 per_image_labels: bool = False, fsync: bool = False):
        """compress_level: zlib level 0-9 (Pillow's default 6); workers: processes for coding
        (None: the cores this process may use); per_image_labels: also write `{id}.csv` beside
        each PNG, as the article does."""
        super().__init__(fsync=fsync)
        if not isinstance(compress_level, int) or not 0 <= compress_level <= 9:
            raise ValueError(f"disk option compress_level must be 0..9, got {compress_level!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"disk option workers must be a positive integer or None, got {workers!r}")
        self.compress_level = compress_level
        self.workers = workers
        self.per_image_labels = bool(per_image_labels)

    def _workers(self, n: int) -> int:
        # A daemonic process (a DataLoader or Pool worker) may not start processes of its own.
        if (n < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods()
                or multiprocessing.current_process().daemon):
            return 1
        return max(1, min(self.workers or available_cores(), n // (PARALLEL_MIN // 2)))

    def _parallel(self, func, n: int, job: dict) -> None:
        workers = self._workers(n)
        _job.update(job)
        try:
            if workers == 1:
                func((0, n))
                return
            # Several pieces per worker even out the load; contiguous pieces keep files in order.
            edges = np.linspace(0, n, workers * 4 + 1).astype(int)
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                pool.map(func, list(zip(edges[:-1], edges[1:])), chunksize=1)
        finally:
            _job.clear()

    def _write(self, tmp, images, labels, first_id):
        n = len(images)
        self._parallel(_encode_range, n, dict(images=images, root=str(tmp), first_id=first_id,
                                              level=self.compress_level, fsync=self.fsync))
        ids = np.arange(first_id, first_id + n)
        rows = "".join(f"{i},{lab}\n" for i, lab in zip(ids.tolist(), labels.tolist()))
        (tmp / LABELS).write_text("image_id,label\n" + rows)
        if self.per_image_labels:
            for i, lab in zip(ids.tolist(), labels.tolist()):
                (tmp / f"{i}.csv").write_text(f"{lab}\n")

    def _labels(self, store: Store) -> np.ndarray:
        try:
            text = (store.path / LABELS).read_text()
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable disk store ({e})") from None
        body = text.partition("\n")[2].replace("\n", ",")
        table = np.fromstring(body, dtype=np.int64, sep=",") if body.strip(",") else np.empty(0, np.int64)
        if table.size != 2 * store.count or not np.array_equal(
                table[0::2], np.arange(store.first_id, store.first_id + store.count)):
            raise NotAStoreError(f"{store.path}/{LABELS} does not list ids {store.first_id}.."
                                 f"{store.first_id + store.count - 1} in order; the store is damaged")
        return table[1::2]

    def _decode(self, store: Store, pos: np.ndarray) -> np.ndarray:
        n = len(pos)
        shape = (n, *store.shape)
        paths = [os.path.join(store.path, f"{store.first_id + p}.png") for p in pos.tolist()]
        if self._workers(n) > 1:  # anonymous shared memory that the forked workers decode into
            nbytes = int(np.prod(shape))
            out = np.frombuffer(mmap.mmap(-1, nbytes), np.uint8, nbytes).reshape(shape)
        else:
            out = np.empty(shape, np.uint8)
        try:
            self._parallel(_decode_range, n, dict(out=out, paths=paths))
        except FileNotFoundError as e:
            raise NotAStoreError(f"{store.path}: {e.filename} is missing; the store is damaged") from None
        return out

    def _read_all(self, store):
        labels = self._labels(store)
        return self._decode(store, np.arange(store.count)), labels

    def read_many(self, path, ids=None):
        if ids is None or len(ids) < PARALLEL_MIN or self._workers(len(ids)) == 1:
            return super().read_many(path, ids)
        store = self.open(path)  # many ids: decode in parallel, as for a whole store
        pos = store.positions(ids)
        return self._decode(store, pos), self._labels(store)[pos]

    def _handle(self, store):
        return _Handle(store, self._labels(store))


class _Handle(Handle):
    """Labels in memory; each image a file decoded in this process (the caller parallelises:
    DataLoader workers are daemonic and may not start processes of their own)."""

    def __init__(self, store: Store, labels: np.ndarray):
        self.store, self.labels = store, labels
        self.root = str(store.path)

    def _path(self, pos):
        return os.path.join(self.root, f"{self.store.first_id + pos}.png")

    def get(self, pos):
        out = np.empty((1, *self.store.shape), np.uint8)
        self._into(out, 0, pos)
        return out[0], int(self.labels[pos])

    def _into(self, out, k, pos):
        try:
            _decode_into(out, k, self._path(pos))
        except FileNotFoundError:
            raise NotAStoreError(f"{self.root}: {self.store.first_id + pos}.png is missing; "
                                 "the store is damaged") from None

    def batch(self, pos, out):
        try:
            _decode_many(out, [self._path(p) for p in pos.tolist()])
        except FileNotFoundError as e:
            raise NotAStoreError(f"{self.root}: {os.path.basename(e.filename)} is missing; "
                                 "the store is damaged") from None
        return self.labels[pos]
