"""Image files: `{id}.png` (or `.jpg`) per image and one `labels.csv` per store; with format
"source", the original files copied unchanged into class folders, `{label}/{id}.jpg`, the
ImageFolder layout (torchvision's ImageFolder reads it and finds the same labels when every
label 0..K-1 occurs: folder names are the labels, zero-padded, so they sort in label order).

`labels.csv` has the columns image_id,label, then height,width,channels when the images differ
in shape, then file (the path in the store) for format "source". Coding is CPU-bound (zlib,
libjpeg and Pillow's per-image overhead), so batches are split over `workers` forked processes:
children inherit the input array and write files themselves, and when reading they decode
straight into one shared output buffer, so no image is pickled between processes. Encoding goes
to memory and then to the file in one write.
"""
from __future__ import annotations

import os

import numpy as np

from ..images import Codec, ImageList, file_suffix
from .base import PARALLEL_MIN, Backend, NotAStoreError, RecordHandle, Store, _job, allocate, check_coding

LABELS = "labels.csv"
ANNOUNCE = 128  # files opened and announced to the kernel at once when reading many
SUFFIX = {"png": ".png", "jpeg": ".jpg"}


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
    images, names, codec, sources, fsync = j["images"], j["names"], j["codec"], j["sources"], j["fsync"]
    for i in range(*bounds):
        data = sources[i] if sources is not None else codec.encode(images[i])
        _write_file(names[i], data, fsync)


FIRST_READ = 64 * 2**10  # most image files are smaller: read without asking their size first


def _read_fd(fd: int) -> bytes:
    data = os.read(fd, FIRST_READ)
    if len(data) < FIRST_READ:  # a short read of a regular file is its end: no fstat needed
        return data
    size = os.fstat(fd).st_size
    while len(data) < size:  # a large file: finish it
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


def _decode_many(out, paths, codec, start: int = 0) -> None:
    """Decode the files `paths` into out[start], out[start + 1], ..."""
    files = _read_files(paths)
    try:
        for k, (path, data) in enumerate(zip(paths, files), start):
            codec.decode_into(out[k], data, path)
    finally:
        files.close()  # closes the files of an unfinished group at once


def _decode_range(bounds: tuple[int, int]) -> None:
    a, b = bounds
    _decode_many(_job["out"], _job["paths"][a:b], _job["codec"], a)


def _class_dirs(labels: np.ndarray) -> list[str]:
    """A folder name per label: zero-padded to one width, so names sort in label order."""
    width = len(str(int(np.abs(labels).max()))) if len(labels) else 1
    return [f"{lab:0{width}d}" for lab in labels.tolist()]


class DiskBackend(Backend):
    name = "disk"
    ENCODINGS = ("png", "jpeg", "source")

    def __init__(self, *, format: str = "png", compress_level: int = 6, quality: int = 90,
                 workers: int | None = None, per_image_labels: bool = False, fsync: bool = False):
        """format: "png", "jpeg" or "source" (the original files, into class folders);
        compress_level: PNG's zlib level 0-9 (Pillow's default 6); quality: JPEG's 1-95;
        workers: processes for coding (None: the cores this process may use);
        per_image_labels: also write `{id}.csv` beside each image, as the article does."""
        super().__init__(fsync=fsync)
        check_coding(self, format, quality, compress_level, workers, option="format")
        self.format = format
        self.per_image_labels = bool(per_image_labels)

    def _write(self, tmp, images, labels, first_id, sources):
        n = len(images)
        ids = np.arange(first_id, first_id + n)
        if self.format == "source":
            dirs = _class_dirs(labels)
            for d in sorted(set(dirs)):
                (tmp / d).mkdir()
            files = [f"{d}/{i}{file_suffix(sources[k])}" for k, (d, i) in enumerate(zip(dirs, ids.tolist()))]
        else:
            files = [f"{i}{SUFFIX[self.format]}" for i in ids.tolist()]
        self._parallel(_encode_range, n, dict(images=images, names=[os.path.join(tmp, f) for f in files],
                                              codec=self.codec(), sources=sources, fsync=self.fsync))
        columns = [ids, labels]
        header = "image_id,label"
        if isinstance(images, ImageList):
            columns += list(images.shapes.T)
            header += ",height,width,channels"
        rows = [",".join(map(str, r)) for r in zip(*(c.tolist() for c in columns))]
        if self.format == "source":
            header += ",file"
            rows = [f"{r},{f}" for r, f in zip(rows, files)]
        (tmp / LABELS).write_text(header + "\n" + "".join(r + "\n" for r in rows))
        if self.per_image_labels:
            for f, lab in zip(files, labels.tolist()):
                (tmp / f).with_suffix(".csv").write_text(f"{lab}\n")

    def _table(self, store: Store) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
        """labels, shapes (or None) and file names of a store, from labels.csv."""
        try:
            text = (store.path / LABELS).read_text()
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable disk store ({e})") from None
        head, _, body = text.partition("\n")
        columns = head.split(",")
        n, first = store.count, store.first_id
        files = None
        if columns[-1] == "file":
            lines = body.splitlines()
            files = [line.rpartition(",")[2] for line in lines]
            body = "\n".join(line.rpartition(",")[0] for line in lines)
        body = body.replace("\n", ",")
        table = np.fromstring(body, dtype=np.int64, sep=",") if body.strip(",") else np.empty(0, np.int64)
        k = len(columns) - (files is not None)
        if (table.size != k * n or not np.array_equal(table[0::k], np.arange(first, first + n))
                or (files is not None and len(files) != n)):
            raise NotAStoreError(f"{store.path}/{LABELS} does not list ids {first}..{first + n - 1} in order; "
                                 "the store is damaged")
        table = table.reshape(n, k)
        shapes = table[:, 2:5].copy() if k >= 5 else None
        if files is None:
            suffix = SUFFIX.get(store.encoding, ".png")
            files = [f"{i}{suffix}" for i in range(first, first + n)]
        return table[:, 1].copy(), shapes, files

    def _read_all(self, store):
        return self._handle(store).decode_all(np.arange(store.count), self)

    def read_many(self, path, ids=None):
        if ids is None or len(ids) < PARALLEL_MIN or self._workers(len(ids)) == 1:
            return super().read_many(path, ids)
        store = self.open(path)  # many ids: decode in parallel, as for a whole store
        return self._handle(store).decode_all(store.positions(ids), self)

    def _handle(self, store):
        labels, shapes, files = self._table(store)
        return _Handle(store, labels, Codec(store.encoding), shapes, files)


class _Handle(RecordHandle):
    """Labels and file names in memory; each image a file decoded in this process (the caller
    parallelises: DataLoader workers are daemonic and may not start processes of their own)."""

    def __init__(self, store, labels, codec, shapes, files):
        super().__init__(store, labels, codec, shapes)
        self.root = str(store.path)
        self.prefix = os.path.join(self.root, "")  # the directory and a separator: one concatenation per file
        self.files = files

    def _path(self, pos):
        return self.prefix + self.files[pos]

    def _payload(self, pos):
        try:
            return _read_file(self._path(pos))
        except FileNotFoundError:
            raise NotAStoreError(f"{self.root}: {self.files[pos]} is missing; the store is damaged") from None

    def _decode(self, out, pos: np.ndarray) -> None:
        try:
            _decode_many(out, [self._path(p) for p in pos.tolist()], self.codec)
        except FileNotFoundError as e:
            raise NotAStoreError(f"{self.root}: {os.path.relpath(e.filename, self.root)} is missing; "
                                 "the store is damaged") from None
        except ValueError as e:  # a damaged file (DecodeError)
            raise NotAStoreError(str(e)) from None

    def batch(self, pos, out):
        self._decode(out, pos)
        return self.labels[pos]

    def decode_all(self, pos: np.ndarray, backend: Backend):
        """Images of `pos` decoded by `backend`'s workers straight into shared memory, and labels."""
        n = len(pos)
        shapes = self.shapes[pos] if self.shapes is not None else None
        out = allocate(self.store.shape, shapes, n, backend._workers(n) > 1)
        try:
            backend._parallel(_decode_range, n, dict(out=out, paths=[self._path(p) for p in pos.tolist()],
                                                     codec=self.codec))
        except FileNotFoundError as e:
            raise NotAStoreError(f"{self.root}: {os.path.relpath(e.filename, self.root)} is missing; "
                                 "the store is damaged") from None
        except ValueError as e:
            raise NotAStoreError(str(e)) from None
        return out, self.labels[pos]
