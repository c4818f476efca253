"""tar: WebDataset shards `shard-000000.tar`, … of `shard_size` images, and `index.npy`.

Each sample is two tar members in id order, `{id:010d}.png` (or `.npy` for raw pixels) and
`{id:010d}.cls` (the label as decimal text), so `webdataset.WebDataset`, `tar -tf` and Python's
tarfile read the shards unchanged. `index.npy` (N, 4) int64 holds, per image, the shard number,
the byte offset and size of its image member's data in the shard, and its label: reads by id
are random access (a memory map of the shard and a slice), and nothing parses tar headers.

Members are written directly: a 512-byte ustar header is a few variable bytes (name, size,
checksum) joined to constant parts, where the tarfile module builds each header field by field
in Python and writes member by member, a cost of the order of encoding a small PNG. PNG encoding runs in forked
processes like the disk backend's; each writes its contiguous piece of a shard (a whole shard
file when the piece starts one, a hidden part file otherwise), and the parent appends the parts
in order (copy_file_range: in-kernel, no pass through Python) and closes each archive.
"""
from __future__ import annotations

import errno
import io
import mmap
import os
import shutil

import numpy as np

from .base import Backend, Handle, NotAStoreError, Store
from .disk import DiskBackend, _decode_png_into, _job, _png_bytes

INDEX = "index.npy"
SHARD = "shard-%06d.tar"
PART = ".shard-%06d.from-%010d.part"  # zero-padded start: name order is id order
PARTS = ".shard-%06d.from-*.part"
KEY = b"%010d"
BLOCK = 512
END = bytes(2 * BLOCK)  # two zero blocks end an archive
PADS = [bytes(i) for i in range(BLOCK)]
READ_CHUNK = 8 * 2**20  # whole-store reads stream shards in reads of about this size
WRITE_BUFFER = 2**20
EXT = {"png": b".png", "raw": b".npy"}
# Members' modification time: fixed, so the same images always give the same bytes (a
# reproducible tarball, as `tar --mtime=@0` makes), and a store's repeats can be compared by digest.
MTIME = 0


def _ustar(mtime: int):
    """A function (name, size) -> 512-byte ustar header; everything but name and size is fixed
    (mode 0644, owner 0, this mtime), so the checksum is a constant plus their bytes' sum."""
    head = b"0000644\0" + b"0000000\0" * 2  # mode, uid, gid
    stamp = b"%011o\0" % mtime
    tail = b"0" + bytes(100) + b"ustar\x0000" + bytes(64) + b"0000000\0" * 2 + bytes(155 + 12)
    base = sum(head) + sum(stamp) + sum(tail) + 8 * ord(" ")  # the checksum field counts as spaces

    def header(name: bytes, size: int) -> bytes:
        sz = b"%011o\0" % size
        chk = base + sum(name) + sum(sz)
        return b"".join((name, bytes(100 - len(name)), head, sz, stamp, b"%06o\0 " % chk, tail))

    return header


def _npy_header(shape) -> bytes:
    """The .npy header of one uint8 image: a member is this plus the raw pixels, a real .npy file."""
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, np.uint8), allow_pickle=False)
    return buf.getvalue()[:-int(np.prod(shape))]


def _write_range(bounds: tuple[int, int], job: dict | None = None) -> None:
    """Write samples lo..hi-1, split where shards begin; runs in a forked worker (or in-process)."""
    j = job or _job
    images, labels, per, header = j["images"], j["labels"], j["shard_size"], j["header"]
    ext, npy, level, sizes = EXT[j["encoding"]], j["npy_header"], j["level"], j["sizes"]
    lo, hi = bounds
    while lo < hi:
        shard, end = lo // per, min(hi, (lo // per + 1) * per)
        name = SHARD % shard if lo % per == 0 else PART % (shard, lo)
        with open(os.path.join(j["root"], name), "xb", buffering=WRITE_BUFFER) as f:
            for i in range(lo, end):
                key = KEY % (j["first_id"] + i)
                data = _png_bytes(images[i], level) if npy is None else npy + images[i].tobytes()
                cls = b"%d" % labels[i]
                sizes[i] = len(data)
                f.write(b"".join((header(key + ext, len(data)), data, PADS[-len(data) % BLOCK],
                                  header(key + b".cls", len(cls)), cls, PADS[-len(cls) % BLOCK])))
        lo = end


def _append(dst, src_path) -> None:
    """Append a part file to `dst` in the kernel (copy_file_range), or through Python where unsupported."""
    with open(src_path, "rb") as src:
        size = left = os.fstat(src.fileno()).st_size
        try:
            while left:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), left)
                if not copied:
                    raise OSError(errno.EIO, f"{src_path} ended early")
                left -= copied
        except OSError as e:  # unsupported here (nothing copied yet); real errors such as EFBIG raise
            if left != size or e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            shutil.copyfileobj(src, dst, WRITE_BUFFER)


def _read_into(fd: int, buf: memoryview, offset: int, where: str) -> None:
    """Fill `buf` from file offset `offset` (pread, finishing short reads)."""
    done = 0
    while done < len(buf):
        got = os.preadv(fd, [buf[done:]], offset + done)
        if not got:
            raise NotAStoreError(f"{where} ends early; the store is damaged")
        done += got


def _put(out: np.ndarray, k: int, data, npy_len: int, where: str) -> None:
    """An image's bytes into out[k]: a PNG decoded (npy_len < 0), or the pixels at the end of
    npy_len bytes (a .npy member; raw pixels when npy_len is the image's size) copied."""
    if npy_len < 0:
        _decode_png_into(out, k, data, where)
    elif len(data) != npy_len:
        raise NotAStoreError(f"{where} has {len(data)} bytes, not the {npy_len} of an image of shape "
                             f"{out.shape[1:]}; the store is damaged")
    else:
        out[k] = np.frombuffer(data, np.uint8, out[k].size, npy_len - out[k].size).reshape(out.shape[1:])


def _output(shape, shared: bool) -> np.ndarray:
    """An uninitialised result; in anonymous shared memory if forked workers decode into it."""
    if shared:
        return np.frombuffer(mmap.mmap(-1, int(np.prod(shape))), np.uint8).reshape(shape)
    return np.empty(shape, np.uint8)


def _read_range(bounds: tuple[int, int], job: dict | None = None) -> None:
    """Rows lo..hi-1 of a whole-store read: each shard's span read in large sequential reads,
    the next one announced to the kernel (POSIX_FADV_WILLNEED) so it loads while this one decodes."""
    j = job or _job
    index, out, paths, npy_len, first_id = j["index"], j["out"], j["paths"], j["npy_len"], j["first_id"]
    lo, hi = bounds
    cuts = [lo, *(lo + 1 + np.flatnonzero(np.diff(index[lo:hi, 0]))).tolist(), hi]  # shard changes
    for a, b in zip(cuts[:-1], cuts[1:]):
        path = paths[index[a, 0]]
        offs, ends = index[a:b, 1], index[a:b, 1] + index[a:b, 2]
        fd = os.open(path, os.O_RDONLY)
        try:
            i = a
            while i < b:
                start = int(offs[i - a])
                e = max(i + 1, a + int(np.searchsorted(ends, start + READ_CHUNK, "right")))
                stop = int(ends[e - 1 - a])
                if e < b and hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, stop, READ_CHUNK, os.POSIX_FADV_WILLNEED)
                buf = memoryview(bytearray(stop - start))
                _read_into(fd, buf, start, path)
                for k in range(i, e):
                    o = int(offs[k - a]) - start
                    _put(out, k, buf[o:o + int(index[k, 2])], npy_len, f"{path} (member {first_id + k:010d})")
                i = e
        finally:
            os.close(fd)


class _Layout:
    """A tar store's index, checked against its shard files."""

    def __init__(self, store: Store):
        self.store = store
        try:
            index = np.load(store.path / INDEX, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise NotAStoreError(f"{store.path} is not a readable tar store ({e})") from None
        n = store.count
        if index.shape != (n, 4) or index.dtype != np.int64 or not n:
            raise NotAStoreError(f"{store.path}/{INDEX} holds {index.dtype} {index.shape}, not ({n}, 4) "
                                 "int64; the store is damaged")
        shards = index[:, 0]
        if shards[0] != 0 or (np.diff(shards) < 0).any() or (np.diff(shards) > 1).any():
            raise NotAStoreError(f"{store.path}/{INDEX} does not list shards in order; the store is damaged")
        self.index, self.labels = index, index[:, 3].copy()
        self.paths = [str(store.path / (SHARD % s)) for s in range(int(shards[-1]) + 1)]
        # Each shard ends with its last image member, that sample's .cls member and two zero blocks.
        last = np.r_[np.flatnonzero(np.diff(shards)), n - 1]
        expect = index[last, 1] + -(-index[last, 2] // BLOCK) * BLOCK + 2 * BLOCK + len(END)
        for path, size in zip(self.paths, expect.tolist()):
            try:
                actual = os.stat(path).st_size
            except OSError as e:
                raise NotAStoreError(f"{store.path} is not a readable tar store ({e})") from None
            if actual != size:
                raise NotAStoreError(f"{path} has {actual} bytes, its index says {size}; the store is damaged")
        with open(self.paths[0], "rb") as f:  # the encoding: the first member's name
            name = f.read(100).rstrip(b"\0")
        if name.endswith(EXT["raw"]):
            self.npy_len = len(_npy_header(store.shape)) + int(np.prod(store.shape))
        elif name.endswith(EXT["png"]):
            self.npy_len = -1
        else:
            raise NotAStoreError(f"{self.paths[0]} starts with {name!r}, not an image member; not a tar store")


class TarBackend(Backend):
    name = "tar"

    # The disk backend's process pool: the same worker count, daemonic guard and piece split.
    _workers = DiskBackend._workers
    _parallel = DiskBackend._parallel

    def __init__(self, *, shard_size: int = 10_000, encoding: str = "png", compress_level: int = 6,
                 workers: int | None = None, fsync: bool = False):
        """shard_size: images per shard; encoding: "png" (Pillow, `compress_level` 0-9) or "raw"
        (`.npy` members of the pixels); workers: processes for PNG coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
            raise ValueError(f"tar option shard_size must be a positive integer, got {shard_size!r}")
        if encoding not in EXT:
            raise ValueError(f"tar option encoding must be 'png' or 'raw', got {encoding!r}")
        if not isinstance(compress_level, int) or not 0 <= compress_level <= 9:
            raise ValueError(f"tar option compress_level must be 0..9, got {compress_level!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"tar option workers must be a positive integer or None, got {workers!r}")
        self.shard_size = shard_size
        self.encoding = encoding
        self.compress_level = compress_level
        self.workers = workers

    def _write(self, tmp, images, labels, first_id):
        n, per = len(images), self.shard_size
        sizes = np.frombuffer(mmap.mmap(-1, 8 * n), np.int64, n)  # filled by the forked writers
        job = dict(images=images, labels=labels.tolist(), shard_size=per, header=_ustar(MTIME),
                   encoding=self.encoding, level=self.compress_level, sizes=sizes, root=str(tmp),
                   first_id=first_id, npy_header=_npy_header(images.shape[1:]) if self.encoding == "raw" else None)
        if self.encoding == "png":
            self._parallel(_write_range, n, job)
        else:  # raw: no coding to share out; one process writes at the disk's pace
            _write_range((0, n), job)
        n_shards = -(-n // per)
        for s in range(n_shards):
            # Unbuffered, not O_APPEND (copy_file_range refuses it): writes follow the fd's offset.
            with open(tmp / (SHARD % s), "r+b", buffering=0) as f:
                f.seek(0, os.SEEK_END)
                for part in sorted(tmp.glob(PARTS % s)):
                    _append(f, part)
                    part.unlink()
                f.write(END)
        # A sample is its image member (header, data, padding) and its .cls member (two blocks).
        member = 3 * BLOCK + -(-sizes // BLOCK) * BLOCK
        before = np.cumsum(member) - member
        shard = np.arange(n) // per
        offset = before - before[shard * per] + BLOCK
        np.save(tmp / INDEX, np.stack([shard, offset, sizes, labels]).T.copy(), allow_pickle=False)

    def _read_all(self, store):
        lay = _Layout(store)
        n = store.count
        shape = (n, *store.shape)
        png = lay.npy_len < 0
        out = _output(shape, png and self._workers(n) > 1)
        job = dict(index=lay.index, out=out, paths=lay.paths, npy_len=lay.npy_len, first_id=store.first_id)
        if png:
            self._parallel(_read_range, n, job)
        else:  # raw: a copy per image, bound by memory and disk, not by a core
            _read_range((0, n), job)
        return out, lay.labels

    def _handle(self, store):
        return _Handle(_Layout(store))


class _Handle(Handle):
    """The index in memory; shards memory-mapped on first use; an image is a slice of its shard."""

    def __init__(self, lay: _Layout):
        self.lay, self.maps = lay, {}

    def _into(self, out, k, pos):
        shard, off, size, _ = self.lay.index[pos].tolist()
        mm = self.maps.get(shard)
        if mm is None:
            mm = self.maps[shard] = np.memmap(self.lay.paths[shard], np.uint8, "r")
        _put(out, k, mm[off:off + size], self.lay.npy_len,
             f"{self.lay.paths[shard]} (member {self.lay.store.first_id + pos:010d})")

    def get(self, pos):
        out = np.empty((1, *self.lay.store.shape), np.uint8)
        self._into(out, 0, pos)
        return out[0], int(self.lay.labels[pos])

    def batch(self, pos, out):
        order = np.argsort(pos, kind="stable")  # file order: neighbouring pages, fewer seeks when cold
        for k, p in zip(order.tolist(), pos[order].tolist()):
            self._into(out, k, p)
        return self.lay.labels[pos]

    def close(self):
        self.maps = {}  # unmapped when the last view goes
