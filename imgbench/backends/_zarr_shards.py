"""The zarr backend's fast path: the plain sharded layout read and written without zarr-python.

When an array is exactly the layout zarr_store writes by default (uint8, the sharding codec over a
plain `bytes` inner codec, a little-endian index with an optional crc32c, every chunk present and
stored in order), a shard's images are raw C-order rows at a known offset of its file. `layout_of`
recognises that layout from the array's metadata, `shard_files` finds every shard's rows (or
None: read through zarr-python), `write_shards` writes them as zarr-python would, and
`MappedHandle` / `MappedBytes` read them through memory maps.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import advise, atomic
from .errors import NotAStoreError
from .handles import Handle

try:  # the crc32c library zarr itself uses: google-crc32c since zarr 3.1.x, crc32c before
    from google_crc32c import value as crc32c
except ImportError:
    from crc32c import crc32c

# Readers map shard files lazily; each map holds a file descriptor (Python's mmap keeps a dup),
# so huge stores keep at most this many mapped at once.
MAX_MAPS = 256


class Plain(NamedTuple):
    """The plain sharded layout: every shard's chunks stored raw, in order, then (or before)
    the shard index."""
    shard: int  # images per shard
    chunk: int  # images per chunk
    crc: bool  # the index ends with its crc32c
    location: str  # "start" or "end": where the index is
    prefix: str  # of a shard's file name: prefix + sep.join(grid coordinates)
    sep: str


def layout_of(images) -> Plain | None:
    """The layout of `images` if it is the plain one: uint8, one `sharding_indexed` codec over a
    plain `bytes` codec, shards spanning whole images, a little-endian index; None otherwise."""
    m = images.metadata.to_dict()
    n, *image = images.shape
    try:
        if m.get("zarr_format") != 3 or m.get("data_type") != "uint8" or list(m.get("storage_transformers") or []):
            return None
        grid = m["chunk_grid"]
        shard = list(grid["configuration"]["chunk_shape"])
        codecs = list(m["codecs"])
        if grid["name"] != "regular" or shard[1:] != image or len(codecs) != 1:
            return None
        if codecs[0]["name"] != "sharding_indexed":
            return None
        cfg = codecs[0]["configuration"]
        chunk = list(cfg["chunk_shape"])
        inner = list(cfg["codecs"])
        # uint8 has no byte order, so a bytes codec of either endianness writes the raw rows
        if chunk[1:] != image or shard[0] % chunk[0] or len(inner) != 1 or inner[0]["name"] != "bytes":
            return None
        index = [c["name"] for c in cfg["index_codecs"]]
        endian = (cfg["index_codecs"][0].get("configuration") or {}).get("endian")
        location = cfg.get("index_location", "end")
        if index not in (["bytes"], ["bytes", "crc32c"]) or endian != "little" or location not in ("start", "end"):
            return None
        enc = m["chunk_key_encoding"]
        sep = (enc.get("configuration") or {}).get("separator", "/" if enc["name"] == "default" else ".")
        if enc["name"] == "default":
            prefix = "c" + sep
        elif enc["name"] == "v2":
            prefix = ""
        else:
            return None
    except (KeyError, TypeError, AttributeError, IndexError):
        return None
    return Plain(shard[0], chunk[0], index[-1] == "crc32c", location, prefix, sep)


def shard_path(root: Path, plain: Plain, s: int, dims: int) -> Path:
    return root / (plain.prefix + plain.sep.join(map(str, (s, *[0] * dims))))


def write_shards(root: Path, images: np.ndarray, plain: Plain) -> None:
    """Write the shards of the plain layout straight from `images`, as zarr-python would: per
    shard, its chunks' raw rows in order (the last chunk of the array padded with the fill value
    0 to a whole chunk; chunks wholly past the end not stored, marked 2**64-1 in the index) and
    the index. One write per shard instead of zarr-python's copies per chunk."""
    n, row = len(images), images[0].nbytes if len(images) else 0
    per_shard, chunk_bytes = plain.shard // plain.chunk, plain.chunk * row
    index_bytes = 16 * per_shard + 4 * plain.crc
    base = index_bytes if plain.location == "start" else 0
    for s in range(-(-n // plain.shard)):
        rows = min(plain.shard, n - s * plain.shard)
        needed = -(-rows // plain.chunk)
        table = np.full((per_shard, 2), np.iinfo(np.uint64).max, "<u8")
        table[:needed, 0] = base + chunk_bytes * np.arange(needed, dtype=np.uint64)
        table[:needed, 1] = chunk_bytes
        index = table.tobytes()
        if plain.crc:
            index += crc32c(index).to_bytes(4, "little")
        path = shard_path(root, plain, s, images.ndim - 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(images[s * plain.shard:s * plain.shard + rows])
        with open(path, "wb") as f:
            atomic.preallocate(f.fileno(), 0, len(index) + needed * chunk_bytes)
            if plain.location == "start":
                f.write(index)
            f.write(memoryview(data).cast("B"))
            f.write(bytes(needed * chunk_bytes - rows * row))
            if plain.location == "end":
                f.write(index)


def shard_files(images, root: Path) -> tuple[int, list[tuple[Path, int, int]]] | None:
    """Images per shard, and per shard (file, byte offset of its first image, images in it), if
    the array is exactly the layout read directly: `layout_of`, every chunk that holds stored rows
    present at consecutive offsets. None otherwise (zarr-python reads it then). A shard index
    that fails its checksum is damage, not another layout."""
    plain = layout_of(images)
    if plain is None:
        return None
    n, *image = images.shape
    shard, chunk, crc, location = plain.shard, plain.chunk, plain.crc, plain.location
    per_shard = shard // chunk
    chunk_bytes = chunk * math.prod(image)
    index_bytes = 16 * per_shard + 4 * crc
    out = []
    for s in range(-(-n // shard)):
        rows = min(shard, n - s * shard)
        needed = -(-rows // chunk)  # chunks holding stored rows; later ones are empty
        path = shard_path(root, plain, s, len(image))
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < index_bytes:
                    raise NotAStoreError(f"{path} is too short for its shard index; the store is damaged")
                f.seek(0 if location == "start" else size - index_bytes)
                raw = f.read(index_bytes)
        except FileNotFoundError:
            return None  # a shard never written (all fill value): zarr-python knows what to return
        if crc and crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise NotAStoreError(f"{path}: the shard index fails its crc32c checksum; the store is damaged")
        table = np.frombuffer(raw, "<u8", 2 * per_shard).reshape(per_shard, 2)[:needed]
        first = int(table[0, 0])
        lo, hi = (index_bytes, size) if location == "start" else (0, size - index_bytes)
        expected = np.uint64(first) + np.uint64(chunk_bytes) * np.arange(needed, dtype=np.uint64)
        if (table[:, 1] != chunk_bytes).any() or (table[:, 0] != expected).any() \
                or first < lo or first + needed * chunk_bytes > hi:
            return None  # chunks missing, reordered or of another size: not the plain layout
        out.append((path, first, rows))
    return shard, out


class MappedHandle(Handle):
    """Shard files mapped lazily; a batch is one np.take per shard it touches."""

    def __init__(self, shard_rows: int, shards, shape: tuple, labels: np.ndarray):
        self.step, self.shards, self.shape, self.labels = shard_rows, shards, shape, labels
        self.maps: dict[int, np.ndarray] = {}
        self.spans, self.row_bytes = [(str(p), o, rows) for p, o, rows in shards], math.prod(shape)

    def _map(self, s: int) -> np.ndarray:
        mm = self.maps.get(s)
        if mm is None:
            if len(self.maps) >= MAX_MAPS:
                del self.maps[next(iter(self.maps))]  # the oldest map (unmapped when its views go)
            path, offset, rows = self.shards[s]
            try:
                mm = self.maps[s] = np.memmap(path, np.uint8, "r", offset, (rows, *self.shape))
                if self.advice is not None:  # a shard met mid-epoch reads as the epoch does
                    advise.advise_map(mm, self.advice)
            except FileNotFoundError:
                raise NotAStoreError(f"a shard of the zarr store is gone ({Path(path).name}): the store was "
                                     "replaced or damaged since it was opened") from None
        return mm

    def stored(self, pos):
        s, r = divmod(pos, self.step)
        return self._map(s)[r], int(self.labels[pos])

    def where(self, pos):
        return f"{self.file}/{Path(self.shards[pos // self.step][0]).name}"

    def get(self, pos):
        s, r = divmod(pos, self.step)
        return np.array(self._map(s)[r]), int(self.labels[pos])

    def batch(self, pos, out):
        shard = pos // self.step
        lo, hi = int(shard.min()), int(shard.max())
        if lo == hi:  # the usual case for sequential batches: straight into out
            np.take(self._map(lo), pos - lo * self.step, axis=0, out=out, mode="clip")
        else:  # group rows by shard, take each group, then put rows back in the caller's order
            order = np.argsort(shard, kind="stable")
            by_shard = shard[order]
            local = pos[order] - by_shard * self.step
            bounds = np.searchsorted(by_shard, np.arange(lo, hi + 2))
            buf = np.empty_like(out)
            for s in range(lo, hi + 1):
                a, b = bounds[s - lo], bounds[s - lo + 1]
                if a < b:
                    np.take(self._map(s), local[a:b], axis=0, out=buf[a:b], mode="clip")
            out[order] = buf
        return self.labels[pos]

    def close(self):
        self.maps = {}  # unmapped when the last views go (closing them under a view would fail)


class MappedBytes:
    """A flat plain `data` array's shard files mapped lazily, sliced as one buffer: b[a:b] is a
    view of one shard's map, or a copy joining the pieces when the slice crosses shards."""

    def __init__(self, step: int, shards):
        self.maps = MappedHandle(step, shards, (), np.empty(0, np.int64))
        self.step = step

    def __getitem__(self, s: slice):
        a, b = s.start, s.stop
        first, last = a // self.step, (b - 1) // self.step
        if first == last:
            return self.maps._map(first)[a - first * self.step:b - first * self.step]
        return np.concatenate([self.maps._map(k)[max(a, k * self.step) - k * self.step:
                                                 min(b, (k + 1) * self.step) - k * self.step]
                               for k in range(first, last + 1)])
