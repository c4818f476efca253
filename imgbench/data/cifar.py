"""The CIFAR-10 "python version" archive: read it safely, and write one in the same format.

The official archive holds Python 2 pickles (protocol 2, byte-string keys, arrays rebuilt
through ``numpy.core.multiarray._reconstruct``). Pickles can run code, and the archive comes
from the network, so loading goes through ``imgbench.safepickle`` with an allow-list of the four
globals a CIFAR batch needs, each checking its arguments.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from .. import safepickle
from ..errors import UserError

TOP = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3
# The real batches are ~31 MB; anything far larger is not a CIFAR batch.
MAX_MEMBER_BYTES = 256 * 2**20


class ArchiveError(UserError, ValueError):
    """The archive is not a usable CIFAR-10 python archive."""


# ---------------------------------------------------------------- reading


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to rebuild {subtype!r}: only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _dtype(spec, align=0, copy=0):
    if spec not in (b"u1", "u1", b"uint8", "uint8"):
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}: a CIFAR batch holds only uint8 arrays")
    return np.dtype("u1")


# The four globals a CIFAR batch needs; everything else is refused.
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


SafeUnpickler = safepickle.restricted(ALLOWED, "a CIFAR batch only needs numpy arrays",
                                      "refusing persistent ids in a CIFAR batch")


def safe_loads(data: bytes):
    """A CIFAR batch's pickle, unpickled through the allow-list (see imgbench.safepickle)."""
    return safepickle.loads(data, SafeUnpickler, encoding="bytes")


def _key(d: dict, name: str):
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise ArchiveError(f"batch has no {name!r} entry")


def _read_member(tar: tarfile.TarFile, name: str, archive: Path) -> bytes:
    try:
        member = tar.getmember(f"{TOP}/{name}")
    except KeyError:
        raise ArchiveError(f"{archive}: no {TOP}/{name} inside; is this the CIFAR-10 python archive?") from None
    if not member.isfile():
        raise ArchiveError(f"{archive}: {member.name} is not a regular file")
    if member.size > MAX_MEMBER_BYTES:
        raise ArchiveError(f"{archive}: {member.name} is {member.size} bytes, too large for a CIFAR batch")
    return tar.extractfile(member).read()


def decode_batch(obj, where: str = "batch") -> tuple[np.ndarray, np.ndarray]:
    """A batch dict -> images (N, 32, 32, 3) uint8 HWC and labels (N,) uint8."""
    if not isinstance(obj, dict):
        raise ArchiveError(f"{where}: expected a dict, got {type(obj).__name__}")
    data = _key(obj, "data")
    labels = _key(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise ArchiveError(f"{where}: 'data' must be a uint8 array of shape (N, {PIXELS})")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise ArchiveError(f"{where}: 'labels' must be {len(data)} integers")
    if len(labels) and (labels.min() < 0 or labels.max() > 255):
        raise ArchiveError(f"{where}: labels must lie in 0..255")
    # CIFAR stores each image as 1024 red, 1024 green, 1024 blue bytes (CHW).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def load_archive(archive: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Training batches 1-5 of a CIFAR-10 python archive: images, labels, class names."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as e:
        raise ArchiveError(f"{archive}: not a readable .tar.gz ({e})") from None
    with tar:
        images, labels = [], []
        for name in TRAIN_BATCHES:
            try:
                obj = safe_loads(_read_member(tar, name, archive))
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
                if isinstance(e, ArchiveError):
                    raise
                raise ArchiveError(f"{archive}: {name}: {e}") from None
            im, lab = decode_batch(obj, f"{archive}: {name}")
            images.append(im)
            labels.append(lab)
        try:
            meta = safe_loads(_read_member(tar, META, archive))
            names = _key(meta, "label_names")
        except (pickle.UnpicklingError, EOFError, TypeError) as e:
            raise ArchiveError(f"{archive}: {META}: {e}") from None
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.concatenate(images), np.concatenate(labels), classes


# ---------------------------------------------------------------- writing
# A minimal emitter of the pickles Python 2's cPickle wrote for CIFAR (protocol 2, byte
# strings as BINSTRING, arrays through numpy.core.multiarray._reconstruct), so the sample
# archive exercises exactly the loading path of the real one.


def _py2_str(b: bytes) -> bytes:
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<I", len(b)) + b


def _py2_int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    return b"J" + struct.pack("<i", i)


def _py2_list(items: list, emit) -> bytes:
    return b"](" + b"".join(emit(x) for x in items) + b"e"


def _py2_uint8_array(a: np.ndarray) -> bytes:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    shape = b"(" + b"".join(_py2_int(d) for d in a.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + _py2_str(b"b") + b"\x87R"
        + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(a.tobytes()) + b"tb"
    )


def _py2_value(v) -> bytes:
    if isinstance(v, bytes):
        return _py2_str(v)
    if isinstance(v, (int, np.integer)):
        return _py2_int(int(v))
    if isinstance(v, np.ndarray):
        return _py2_uint8_array(v)
    if isinstance(v, list):
        return _py2_list(v, _py2_value)
    raise TypeError(f"cannot write {type(v).__name__} as a Python 2 pickle")


def py2_pickle(d: dict) -> bytes:
    """Protocol-2 pickle of a dict of bytes keys, the way Python 2's cPickle wrote CIFAR."""
    body = b"".join(_py2_str(k) + _py2_value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."


def write_archive(path: str | Path, train_images, train_labels, test_images, test_labels,
                  classes: list[str], batches: int = 5) -> None:
    """Write a CIFAR-10 python archive (same tar layout and pickle format as the official one)."""
    path = Path(path)

    def batch(label: str, images: np.ndarray, labels: np.ndarray, first: int) -> bytes:
        data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), PIXELS)
        names = [f"sample_{first + i:06d}.png".encode() for i in range(len(images))]
        return py2_pickle({b"batch_label": label.encode(), b"labels": [int(x) for x in labels],
                           b"data": data, b"filenames": names})

    members = []
    per = len(train_images) // batches
    for b in range(batches):
        lo, hi = b * per, (b + 1) * per if b < batches - 1 else len(train_images)
        members.append((TRAIN_BATCHES[b], batch(f"training batch {b + 1} of {batches}",
                                                train_images[lo:hi], train_labels[lo:hi], lo)))
    members.append((TEST_BATCH, batch("testing batch 1 of 1", test_images, test_labels, len(train_images))))
    members.append((META, py2_pickle({b"num_cases_per_batch": per,
                                      b"label_names": [c.encode() for c in classes],
                                      b"num_vis": PIXELS})))
    tmp = path.with_name(path.name + ".tmp")
    try:
        # mtime 0 and an empty gzip name keep the archive byte-for-byte reproducible; level 1: the
        # sample's 150 MB take 1 s to compress instead of 8 s at gzip's default 9
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="",
                                                   compresslevel=1) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, payload in [(TOP, None)] + members:
                info = tarfile.TarInfo(name if payload is None else f"{TOP}/{name}")
                info.mtime, info.uname, info.gname = 0, "", ""
                if payload is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(payload), 0o644
                    tar.addfile(info, io.BytesIO(payload))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
