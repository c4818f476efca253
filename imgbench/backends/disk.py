"""Image files: `{id}.png` (or `.jpg`) per image and one `labels.csv` per store; with format
"source", the original files copied unchanged into class folders, `{label}/{id}.jpg`, the
ImageFolder layout (torchvision's ImageFolder reads it and finds the same labels when every
label 0..K-1 occurs: folder names are the labels, zero-padded, so they sort in label order).

`labels.csv` has the columns image_id,label, then height,width,channels when the images differ
in shape, then checksum (16 hex digits: XXH3 of the file's bytes seeded with the label, see
checksums.py; PNG's own CRC per chunk is not checked by decoders, JPEG has none), then file (the
path in the store) for format "source". Coding is CPU-bound (zlib,
libjpeg and Pillow's per-image overhead), so batches are split over `workers` forked processes:
children inherit the input array and write files themselves, and when reading they decode
straight into one shared output buffer, so no image is pickled between processes. Encoding goes
to memory and then to the file in one write.
"""
from __future__ import annotations

import mmap
import os
import re
import stat

import numpy as np

from ..images import ImageList, file_suffix
from . import checksums, parallel
from .base import Backend, check_coding
from .errors import NotAStoreError
from .handles import RecordHandle
from .store import Store, check_regular, open_nofollow

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
    j = parallel.job
    images, names, codec, sources, fsync = j["images"], j["names"], j["codec"], j["sources"], j["fsync"]
    sums, labels, check = j["sums"], j["labels"], checksums.checksum
    for i in range(*bounds):
        data = sources[i] if sources is not None else codec.encode(images[i])
        sums[i] = check(data, labels[i])
        _write_file(names[i], data, fsync)


def _read_fd(fd: int, shown: str) -> bytes:
    """A store file's bytes, once it is checked to be a regular file of the store with one name
    (its size comes with the check: one read of exactly that many bytes)."""
    st = os.fstat(fd)
    check_regular(st, shown)
    data = os.read(fd, st.st_size)
    while len(data) < st.st_size:  # a large file: finish it
        more = os.read(fd, st.st_size - len(data))
        if not more:
            break
        data += more
    return data


def _read_file(name: str, dfd: int, root: str) -> bytes:
    fd = open_nofollow(name, dfd, f"{root}/{name}")  # os-level: a third of the cost of open() for small files
    try:
        return _read_fd(fd, f"{root}/{name}")
    finally:
        os.close(fd)


def _read_files(names, dfd: int, root: str):
    """The bytes of each file, in order. Files are opened and announced to the kernel a group at
    a time (POSIX_FADV_WILLNEED), so from a cold cache their reads are in flight together instead
    of one after another: measured 4-5x more small files per second from a cold cache here."""
    for s in range(0, len(names), ANNOUNCE):
        group = names[s:s + ANNOUNCE]
        fds = []
        try:
            for p in group:
                fds.append(open_nofollow(p, dfd, f"{root}/{p}"))
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fds[-1], 0, 0, os.POSIX_FADV_WILLNEED)
            for p, fd in zip(group, fds):
                yield _read_fd(fd, f"{root}/{p}")
        finally:
            for fd in fds:
                os.close(fd)


def _decode_many(out, names, dfd: int, codec, root: str, start: int = 0) -> None:
    """Decode the files `names` (in directory `dfd`, `root` for messages) into out[start], ..."""
    files = _read_files(names, dfd, root)
    try:
        for k, (name, data) in enumerate(zip(names, files), start):
            codec.decode_into(out[k], data, f"{root}/{name}")
    finally:
        files.close()  # closes the files of an unfinished group at once


def _decode_range(bounds: tuple[int, int]) -> None:
    a, b = bounds
    j = parallel.job
    _decode_many(j["out"], j["names"][a:b], j["dfd"], j["codec"], j["root"], a)


# What a source store's `file` column may name: {class folder}/{id}{suffix}, as the writer names
# them; never an absolute path, `..`, or a link out of the store.
SOURCE_FILE = re.compile(r"(?:-?[0-9]+/)?[0-9]+\.[a-z]{2,4}")


def _check_files(store: Store, files: list[str]) -> None:
    """NotAStoreError unless every file of the `file` column lies in the store (its class
    folders checked once each: real directories, not links; each file is checked as it is opened)."""
    bad = next((f for f in files if not SOURCE_FILE.fullmatch(f)), None)
    if bad is not None:
        raise NotAStoreError(f"{store.path}/{LABELS} names a file outside the store's layout ({bad[:80]!r}); the "
                             "store is damaged, or made to read elsewhere")
    for d in {f.rpartition("/")[0] for f in files} - {""}:
        try:
            st = os.stat(d, dir_fd=store.dfd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # its files are named missing when read
        if not stat.S_ISDIR(st.st_mode):
            raise NotAStoreError(f"{store.path}/{d} is not a directory of the store (a link, or a file); the store "
                                 "is damaged, or made to read elsewhere")


def _class_dirs(labels: np.ndarray) -> list[str]:
    """A folder name per label: zero-padded to one width, so names sort in label order."""
    width = len(str(int(np.abs(labels).max()))) if len(labels) else 1
    return [f"{lab:0{width}d}" for lab in labels.tolist()]


class DiskBackend(Backend):
    name = "disk"
    format_version = 2  # 2: labels.csv has a checksum column
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
        sums = np.frombuffer(mmap.mmap(-1, 8 * n), np.uint64, n)  # filled by the forked writers
        self._parallel(_encode_range, n, dict(images=images, names=[os.path.join(tmp, f) for f in files],
                                              codec=self.codec(), sources=sources, fsync=self.fsync, sums=sums,
                                              labels=labels.tolist()))
        columns = [ids, labels]
        header = "image_id,label"
        if isinstance(images, ImageList):
            columns += list(images.shapes.T)
            header += ",height,width,channels"
        rows = [",".join(map(str, r)) for r in zip(*(c.tolist() for c in columns))]
        header += ",checksum"
        rows = [f"{r},{x:016x}" for r, x in zip(rows, sums.tolist())]
        if self.format == "source":
            header += ",file"
            rows = [f"{r},{f}" for r, f in zip(rows, files)]
        (tmp / LABELS).write_text(header + "\n" + "".join(r + "\n" for r in rows))
        if self.per_image_labels:
            for f, lab in zip(files, labels.tolist()):
                (tmp / f).with_suffix(".csv").write_text(f"{lab}\n")
        return sums.copy()

    def _table(self, store: Store):
        """labels, shapes (or None), file names and checksums of a store, from labels.csv."""
        try:
            fd = store.open_file(LABELS)
            with open(fd, encoding="utf-8") as f:
                text = f.read()
        except (OSError, ValueError) as e:
            raise NotAStoreError(f"{store.path} is not a readable disk store ({e})") from None
        head, _, body = text.partition("\n")
        columns = head.split(",")
        n, first = store.count, store.first_id
        lines = body.splitlines()
        text_columns = {}  # checksum and file: the last columns, not numbers
        while columns[-1] in ("file", "checksum"):
            cut = [line.rpartition(",") for line in lines]
            text_columns[columns.pop()] = [c[2] for c in cut]
            lines = [c[0] for c in cut]
        body = ",".join(lines)
        table = np.fromstring(body, dtype=np.int64, sep=",") if body.strip(",") else np.empty(0, np.int64)
        k = len(columns)
        damaged = NotAStoreError(f"{store.path}/{LABELS} does not list ids {first}..{first + n - 1} in order with "
                                 "their labels and checksums; the store is damaged")
        if (len(lines) != n or table.size != k * n or "checksum" not in text_columns
                or not np.array_equal(table[0::k], np.arange(first, first + n))):
            raise damaged
        try:
            hexes = "".join(text_columns["checksum"])
            if len(hexes) != 16 * n:
                raise ValueError
            sums = np.frombuffer(bytes.fromhex(hexes), ">u8").astype(np.uint64)
        except ValueError:
            raise damaged from None
        table = table.reshape(n, k)
        shapes = table[:, 2:5].copy() if k >= 5 else None
        files = text_columns.get("file")
        if files is not None:
            _check_files(store, files)
        else:
            suffix = SUFFIX.get(store.encoding, ".png")
            files = [f"{i}{suffix}" for i in range(first, first + n)]
        return table[:, 1].copy(), shapes, files, sums

    def _sums(self, store):
        return self._table(store)[3]

    def _change_label(self, path, store, pos):
        f = path / LABELS
        lines = f.read_text().split("\n")
        cells = lines[pos + 1].split(",")  # after the header line
        cells[1] = str(int(cells[1]) + 1)
        lines[pos + 1] = ",".join(cells)
        f.write_text("\n".join(lines), newline="")
        return LABELS

    def _read_all(self, store):
        return self._handle(store).decode_all(np.arange(store.count), self)

    def read_many(self, path, ids=None):
        if ids is None or len(ids) < parallel.PARALLEL_MIN or self._workers(len(ids)) == 1:
            return super().read_many(path, ids)
        store = self.open(path)  # many ids: decode in parallel, as for a whole store
        return self._handle(store).decode_all(store.positions(ids), self)

    def _handle(self, store):
        labels, shapes, files, _ = self._table(store)
        return _DiskHandle(store, labels, store.codec(), shapes, files)


class _DiskHandle(RecordHandle):
    """Labels and file names in memory; each image a file decoded in this process (the caller
    parallelises: DataLoader workers are daemonic and may not start processes of their own)."""

    def __init__(self, store, labels, codec, shapes, files):
        super().__init__(store, labels, codec, shapes)
        self.root, self.dfd = str(store.path), store.dfd
        self.files = files

    def where(self, pos):
        return self.files[pos]

    def _payload(self, pos):
        try:
            return _read_file(self.files[pos], self.dfd, self.root)
        except FileNotFoundError:
            raise NotAStoreError(self.store.missing(self.files[pos])) from None

    def _missing(self, e: FileNotFoundError) -> NotAStoreError:
        return NotAStoreError(self.store.missing(e.filename))

    def _decode(self, out, pos: np.ndarray) -> None:
        try:
            _decode_many(out, [self.files[p] for p in pos.tolist()], self.dfd, self.codec, self.root)
        except FileNotFoundError as e:
            raise self._missing(e) from None
        except ValueError as e:  # a damaged file (DecodeError)
            raise NotAStoreError(str(e)) from None

    def batch(self, pos, out):
        self._decode(out, pos)
        return self.labels[pos]

    def decode_all(self, pos: np.ndarray, backend: Backend):
        """Images of `pos` decoded by `backend`'s workers straight into shared memory, and labels."""
        n = len(pos)
        shapes = self.shapes[pos] if self.shapes is not None else None
        out = parallel.allocate(self.store.shape, shapes, n, backend._workers(n) > 1)
        try:
            backend._parallel(_decode_range, n, dict(out=out, names=[self.files[p] for p in pos.tolist()],
                                                     dfd=self.dfd, root=self.root, codec=self.codec))
        except FileNotFoundError as e:
            raise self._missing(e) from None
        except ValueError as e:
            raise NotAStoreError(str(e)) from None
        return out, self.labels[pos]
