"""tar: WebDataset shards `shard-000000.tar`, … of `shard_size` images, and `index.npy`.

Each sample is two tar members in id order, `{id:010d}.png` (`.jpg` for JPEG, `.npy` for raw
pixels, the original file's suffix for "source") and `{id:010d}.cls` (the label as decimal
text), so `webdataset.WebDataset`, `tar -tf` and Python's tarfile read the shards unchanged.
`index.npy` (N, 8) int64 holds, per image, the shard number, the byte offset and size of its
image member's data in the shard, its label, its height, width and channels, and its checksum
(uint64 bits: XXH3 of the image member's data seeded with the label, see checksums.py; tar keeps
only a checksum of each header): reads by id are random access (a memory map of the shard and a
slice), and nothing parses tar headers. Checking a sample also reads its `.cls` member, the
label webdataset sees, so a label changed there is found too.
A `.npy` member is a complete .npy file, so images of different shapes need nothing more.

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

from ..images import Codec, DecodeError, ImageList, file_suffix, shapes_of
from . import advise, checksums, parallel
from .base import Backend, check_coding
from .errors import DamagedImageError, NotAStoreError
from .handles import RecordHandle, read_into
from .store import OPEN_FLAGS, Store

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
EXT = {"png": b".png", "jpeg": b".jpg", "raw": b".npy"}
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


_NPY_HEADERS: dict = {}


def _npy_header(shape) -> bytes:
    """The .npy header of one uint8 image: a member is this plus the raw pixels, a real .npy file."""
    shape = tuple(int(x) for x in shape)
    head = _NPY_HEADERS.get(shape)
    if head is None:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
        head = _NPY_HEADERS[shape] = buf.getvalue()
    return head


def _write_range(bounds: tuple[int, int], job: dict | None = None) -> None:
    """Write samples lo..hi-1, split where shards begin; runs in a forked worker (or in-process)."""
    j = job or parallel.job
    images, labels, per, header, codec = j["images"], j["labels"], j["shard_size"], j["header"], j["codec"]
    sources, shapes, sizes, raw = j["sources"], j["shapes"], j["sizes"], codec.encoding == "raw"
    sums, check = j["sums"], checksums.checksum
    ext = EXT.get(codec.encoding)
    npy = _npy_header(images.shape[1:]) if raw and shapes is None else None  # one shape: one header
    lo, hi = bounds
    while lo < hi:
        shard, end = lo // per, min(hi, (lo // per + 1) * per)
        name = SHARD % shard if lo % per == 0 else PART % (shard, lo)
        with open(os.path.join(j["root"], name), "xb", buffering=WRITE_BUFFER) as f:
            for i in range(lo, end):
                key = KEY % (j["first_id"] + i)
                suffix = ext
                if npy is not None:
                    data = npy + images[i].tobytes()
                elif sources is not None:
                    data = sources[i]
                    suffix = file_suffix(data).encode()
                else:
                    data = _npy_header(shapes[i]) + images[i].tobytes() if raw else codec.encode(images[i])
                cls = b"%d" % labels[i]
                sizes[i] = len(data)
                sums[i] = check(data, labels[i])
                f.write(b"".join((header(key + suffix, len(data)), data, PADS[-len(data) % BLOCK],
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


def _put(dst: np.ndarray, data, codec: Codec, where: str, head: int = -1) -> None:
    """An image's stored bytes into dst (H, W, C): decoded, or for raw the pixels after the
    member's .npy header (`head` bytes when the store has one shape) copied."""
    if codec.encoding == "raw":
        if head < 0:  # images of several shapes: the header is whatever precedes the pixels
            head = len(data) - dst.nbytes
            if head < 10 or bytes(data[:6]) != b"\x93NUMPY":
                raise NotAStoreError(f"{where} is not a .npy of an image of shape {dst.shape}; the store is damaged")
        elif len(data) != head + dst.nbytes:
            raise NotAStoreError(f"{where} has {len(data)} bytes, not the {head + dst.nbytes} of a .npy of an image "
                                 f"of shape {dst.shape}; the store is damaged")
        dst[...] = np.frombuffer(data, np.uint8, dst.size, head).reshape(dst.shape)
        return
    try:
        codec.decode_into(dst, data, where)
    except DecodeError as e:
        raise NotAStoreError(str(e)) from None


def _read_range(bounds: tuple[int, int], job: dict | None = None) -> None:
    """Rows lo..hi-1 of a whole-store read: each shard's span read in large sequential reads,
    the next one announced to the kernel (POSIX_FADV_WILLNEED) so it loads while this one decodes."""
    j = job or parallel.job
    index, out, paths, codec, first_id = j["index"], j["out"], j["paths"], j["codec"], j["first_id"]
    head = j["head"]
    lo, hi = bounds
    cuts = [lo, *(lo + 1 + np.flatnonzero(np.diff(index[lo:hi, 0]))).tolist(), hi]  # shard changes
    for a, b in zip(cuts[:-1], cuts[1:]):
        path, shown = paths[index[a, 0]], j["shown"][index[a, 0]]
        offs, ends = index[a:b, 1], index[a:b, 1] + index[a:b, 2]
        fd = os.open(path, OPEN_FLAGS)  # checked as the store's own file when the store was opened
        try:
            i = a
            while i < b:
                start = int(offs[i - a])
                e = max(i + 1, a + int(np.searchsorted(ends, start + READ_CHUNK, "right")))
                stop = int(ends[e - 1 - a])
                if e < b and hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, stop, READ_CHUNK, os.POSIX_FADV_WILLNEED)
                buf = memoryview(bytearray(stop - start))
                read_into(fd, buf, start, shown)
                for k in range(i, e):
                    o = int(offs[k - a]) - start
                    _put(out[k], buf[o:o + int(index[k, 2])], codec, f"{shown} (member {first_id + k:010d})", head)
                i = e
        finally:
            os.close(fd)


class _Layout:
    """A tar store's index, checked against its shard files."""

    def __init__(self, store: Store):
        self.store = store
        n = store.count
        index = store.load_npy(INDEX, shape=(n, 8), kinds="i", fortran=True)  # as np.save wrote it
        if index.dtype != np.int64 or not n:
            raise NotAStoreError(f"{store.path}/{INDEX} holds {index.dtype} {index.shape}, not ({n}, 8) "
                                 "int64; the store is damaged")
        shards = index[:, 0]
        if shards[0] != 0 or (np.diff(shards) < 0).any() or (np.diff(shards) > 1).any():
            raise NotAStoreError(f"{store.path}/{INDEX} does not list shards in order; the store is damaged")
        self.index, self.labels, self.shapes = index, index[:, 3].copy(), index[:, 4:7].copy()
        self.codec = store.codec()  # its own encoding, by the backend's decoder
        # a raw store of one shape: every member's .npy header has this length
        self.head = len(_npy_header(store.shape)) if store.encoding == "raw" and store.shape is not None else -1
        self.names = [SHARD % s for s in range(int(shards[-1]) + 1)]
        self.paths = [store.file(name) for name in self.names]
        # Each shard ends with its last image member, that sample's .cls member and two zero blocks.
        last = np.r_[np.flatnonzero(np.diff(shards)), n - 1]
        expect = index[last, 1] + -(-index[last, 2] // BLOCK) * BLOCK + 2 * BLOCK + len(END)
        if (index[:, 1] < BLOCK).any() or (index[:, 2] < 0).any() or (index[:, 1] + index[:, 2] > expect[shards]).any():
            raise NotAStoreError(f"{store.path}/{INDEX} places a member outside its shard; the store is damaged")
        for path, size in zip(self.paths, expect.tolist()):
            name = path.rpartition("/")[2]
            try:
                actual = os.stat(path).st_size
            except FileNotFoundError:
                raise NotAStoreError(store.missing(name)) from None
            except OSError as e:
                raise NotAStoreError(f"{store.path} is not a readable tar store ({e.strerror}: {name})") from None
            if actual != size:
                raise NotAStoreError(f"{store.path}/{name} has {actual} bytes, its index says {size}; "
                                     "the store is damaged")


class TarBackend(Backend):
    name = "tar"
    # 2: the index has each image's shape; members may be JPEG or source files. 3: and its checksum
    format_version = 3
    ENCODINGS = ("raw", "png", "jpeg", "source")

    def __init__(self, *, shard_size: int = 10_000, encoding: str = "png", quality: int = 90,
                 compress_level: int = 6, workers: int | None = None, fsync: bool = False):
        """shard_size: images per shard; encoding: "png" (Pillow, `compress_level` 0-9), "jpeg"
        (`quality` 1-95), "raw" (`.npy` members of the pixels) or "source" (the original
        files); workers: processes for coding (None: this process's cores)."""
        super().__init__(fsync=fsync)
        if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
            raise ValueError(f"tar option shard_size must be a positive integer, got {shard_size!r}")
        check_coding(self, encoding, quality, compress_level, workers)
        self.shard_size = shard_size

    def _write(self, tmp, images, labels, first_id, sources):
        n, per = len(images), self.shard_size
        sizes = np.frombuffer(mmap.mmap(-1, 8 * n), np.int64, n)  # filled by the forked writers
        sums = np.frombuffer(mmap.mmap(-1, 8 * n), np.uint64, n)
        shapes = shapes_of(images)
        job = dict(images=images, labels=labels.tolist(), shard_size=per, header=_ustar(MTIME),
                   codec=self.codec(), sources=sources, sizes=sizes, sums=sums, root=str(tmp), first_id=first_id,
                   shapes=shapes.tolist() if isinstance(images, ImageList) else None)
        if self.encoding in ("png", "jpeg"):
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
        np.save(tmp / INDEX, np.column_stack([shard, offset, sizes, labels, shapes, sums.view(np.int64)])
                .astype(np.int64), allow_pickle=False)
        return sums.copy()

    def _read_all(self, store):
        lay = _Layout(store)
        n = store.count
        coded = store.encoding != "raw"
        out = parallel.allocate(store.shape, lay.shapes, n, coded and self._workers(n) > 1)
        job = dict(index=lay.index, out=out, paths=lay.paths, codec=lay.codec, first_id=store.first_id, head=lay.head,
                   shown=[f"{store.path}/{name}" for name in lay.names])
        if coded:
            self._parallel(_read_range, n, job)
        else:  # raw: a copy per image, bound by memory and disk, not by a core
            _read_range((0, n), job)
        return out, lay.labels

    def _handle(self, store):
        return _TarHandle(_Layout(store))

    def _sums(self, store):
        return _Layout(store).index[:, 7].view(np.uint64)

    def _change_label(self, path, store, pos):
        index = np.load(path / INDEX)
        index[pos, 3] += 1
        np.save(path / INDEX, index)
        return INDEX


class _TarHandle(RecordHandle):
    """The index in memory; shards memory-mapped on first use; an image is a slice of its shard."""

    def __init__(self, lay: _Layout):
        super().__init__(lay.store, lay.labels, lay.codec, lay.shapes)
        self.lay, self.maps = lay, {}

    def _map(self, shard: int) -> np.ndarray:
        mm = self.maps.get(shard)
        if mm is None:
            try:
                mm = self.maps[shard] = np.memmap(self.lay.paths[shard], np.uint8, "r")
            except FileNotFoundError:
                raise NotAStoreError(self.store.missing(self.lay.names[shard])) from None
            if self.advice is not None:  # a shard met mid-epoch reads as the epoch does
                advise.advise_map(mm, self.advice)
        return mm

    def _into(self, dst, pos):
        shard, off, size = self.lay.index[pos, :3].tolist()
        _put(dst, self._map(shard)[off:off + size], self.codec,
             f"{self.store.path}/{self.lay.names[shard]} (member {self.store.first_id + pos:010d})", self.lay.head)

    def stored(self, pos):
        """The image member's data and the index's label; the sample's .cls member (the label
        webdataset reads) must say the same."""
        shard, off, size, label = self.lay.index[pos, :4].tolist()
        mm = self._map(shard)
        head = off + -(-size // BLOCK) * BLOCK  # the .cls member's header follows the padded data
        where = f"{self.store.path}/{self.lay.names[shard]}: image id {self.store.first_id + pos}"
        try:
            length = int(bytes(mm[head + 124:head + 135]), 8)
            cls = int(bytes(mm[head + BLOCK:head + BLOCK + length]))
        except ValueError:
            raise DamagedImageError(f"{where}: its .cls member is damaged") from None
        if cls != label:
            raise DamagedImageError(f"{where}: its .cls member says label {cls}, the index {label}; the store is "
                                    "damaged")
        return mm[off:off + size], label

    def where(self, pos):
        return self.lay.names[int(self.lay.index[pos, 0])]

    def close(self):
        self.maps = {}  # unmapped when the last view goes
