"""zarr: a Zarr v3 group `images.zarr/` inside the store directory, written with zarr-python 3.

    g = zarr.open_group(path / "images.zarr", mode="r")
    g["images"]            # (N, H, W, C) uint8: `chunk` images per chunk, in shards of `shard` images
    g["labels"]            # (N,) int64, one chunk
    g.attrs["first_id"]    # the id of row 0 (also in imgbench.json)

The group is a subfolder, not the store directory itself, so zarr never meets imgbench.json
(listing a group warns about files it does not recognise). Images use the sharding codec: each
shard is one file holding its chunks followed by an index of (offset, nbytes) per chunk, so
100,000 images are a handful of files while a read still decodes only the chunks it needs.
`compressor` ("none", "zstd" or "blosc-lz4") compresses each chunk. `checksums` (N,) uint64
holds each image's checksum (its pixels and label, see checksums.py): zarr's own crc32c, when
asked for, covers only a shard's index, not the chunks.

zarr-python has a large fixed cost per call, so nothing here calls it per image. When
the array is exactly the layout written by default (uint8, sharding with a plain `bytes` inner
codec, an index in little-endian uint64 with an optional crc32c, every chunk present and stored
in order), a shard's images are raw C-order rows at a known offset of its file: whole reads go
straight from the files into the result, and readers map the shard files (a row is a memcpy).
Anything else (compression, another codec, missing chunks) goes through zarr-python, one call
per batch (sorted unique ids as an orthogonal selection, so each chunk is decoded once).
Writing is the mirror image: zarr-python writes the metadata, and an uncompressed store's
shards are written straight from the source, one write per shard, byte for byte what
zarr-python would write (tested); compressed stores are written by zarr-python, a shard a call.

Images of different shapes: arrays `data` (every image's pixels, flat, 1-D uint8, in chunks of
`chunk` x the mean image size bytes) and `index` (N, 5: offset, size, height, width, channels)
instead of `images` (see flat.py); the same direct paths read and write `data` when plain.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
from zarr.storage import LocalStore

from ..images import MAX_RATIO, ImageList
from . import _zarr_shards, checksums, flat
from .base import Backend
from .errors import NotAStoreError
from .handles import Handle
from .store import Store

GROUP = "images.zarr"
COMPRESSORS = ("none", "zstd", "blosc-lz4")
# Automatic sizes (powers of two, so a chunk always divides a shard): a chunk of at most 256 KiB
# keeps a random read's decode small (64 CIFAR images); a shard of at most 64 MiB keeps 100,000
# CIFAR images in 7 files and bounds the memory zarr-python needs to assemble one shard.
CHUNK_BYTES = 256 * 2**10
SHARD_BYTES = 64 * 2**20


def _pow2_at_most(x: int) -> int:
    return 1 << (max(1, int(x)).bit_length() - 1)


def _positive(name: str, value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"zarr option {name} must be a positive number of images or None, got {value!r}")
    return value


# The codecs a store's arrays may use: zarr's own, none that is a plugin.
CODECS = {"bytes", "zstd", "gzip", "blosc", "crc32c", "transpose", "sharding_indexed"}


def _codec_names(codecs):
    for c in codecs:
        d = c if isinstance(c, dict) else c.to_dict()
        yield d.get("name")
        conf = d.get("configuration") or {}
        yield from _codec_names([*conf.get("codecs", ()), *conf.get("index_codecs", ())])


def _zstd_content_size(head: bytes) -> int | None:
    """The decompressed size a zstd frame declares in its header (None if it declares none)."""
    if len(head) < 6 or head[:4] != b"\x28\xb5\x2f\xfd":
        return None
    fhd = head[4]
    single, fcs_flag = (fhd >> 5) & 1, fhd >> 6
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if not width or len(head) < at + width:
        return None
    return int.from_bytes(head[at:at + width], "little") + (256 if width == 2 else 0)


def check_array(arr, path: Path, where) -> None:
    """NotAStoreError unless zarr array `arr` (in directory `path`) is bounded by its files before
    zarr reads it: zarr's own codecs only; labels and checksums in chunks of at least 1,024
    values (a million one-label chunks cost a million reads per call); declared bytes at most
    MAX_RATIO times its chunk files' (chunks left out read as the fill value); and each zstd
    chunk declaring at most its chunk's bytes (numcodecs allocates what a frame declares before
    decoding it)."""
    names = set(_codec_names(arr.metadata.codecs))
    if names - CODECS:
        raise NotAStoreError(f"{where}: codecs {sorted(names - CODECS, key=str)} are not zarr's own; the store is damaged")
    if arr.ndim == 1:  # labels, checksums: one chunk as written
        grid = -(-arr.shape[0] // max(1, (arr.shards or arr.chunks)[0]))
        if grid > 1 + arr.shape[0] // 1024:
            raise NotAStoreError(f"{where}: {grid:,} chunks for {arr.shape[0]:,} values; the store is damaged")
    files, total = [], 0
    # no chunk directory at all: every chunk is the fill value (zarr writes none of those)
    for root, _, fs, rfd in os.fwalk(path / "c") if os.path.isdir(path / "c") else ():
        for f in fs:
            st = os.stat(f, dir_fd=rfd, follow_symlinks=False)
            files.append((root, f, st.st_size))
            total += st.st_size
    if arr.nbytes > MAX_RATIO * total + 2**20:  # chunks left out are the fill value: allowed, within reason
        raise NotAStoreError(f"{where}: {arr.nbytes:,} bytes declared in {total:,} bytes of chunk files; "
                             "the store is damaged")
    if "zstd" in names and arr.shards is None:
        most = int(np.prod(arr.chunks)) * arr.dtype.itemsize
        for root, f, _ in files:
            with open(os.path.join(root, f), "rb") as fh:
                declared = _zstd_content_size(fh.read(18))
            if declared is not None and declared > most:
                raise NotAStoreError(f"{where}: a chunk declares {declared:,} bytes, a chunk holds {most:,}; "
                                     "the store is damaged")


class ZarrBackend(Backend):
    name = "zarr"

    def __init__(self, *, chunk: int | None = None, shard: int | None = None, compressor: str = "none",
                 fsync: bool = False):
        """chunk: images per chunk (None: the largest power of two within 256 KiB);
        shard: images per shard file, a multiple of chunk (None: chunk times the largest power of
        two within 64 MiB); compressor: "none", "zstd" (level 3) or "blosc-lz4" (bitshuffle).
        A store smaller than a chunk or a shard gets a smaller one (no padding beyond the last chunk)."""
        super().__init__(fsync=fsync)
        self.chunk = _positive("chunk", chunk)
        self.shard = _positive("shard", shard)
        if chunk and shard and shard % chunk:
            raise ValueError(f"zarr option shard must be a multiple of chunk ({chunk}), got {shard}")
        if compressor not in COMPRESSORS:
            raise ValueError(f"zarr option compressor must be one of {', '.join(map(repr, COMPRESSORS))}, "
                             f"got {compressor!r}")
        self.compressor = compressor

    def layout(self, n: int, image_bytes: int) -> tuple[int, int]:
        """(images per chunk, images per shard) for a store of n images of image_bytes each."""
        chunk = self.chunk or _pow2_at_most(CHUNK_BYTES // image_bytes)
        if self.shard:
            shard = self.shard
            if not self.chunk:  # the automatic chunk must divide the shard: its largest divisor within
                divisors = {d for i in range(1, math.isqrt(shard) + 1) if shard % i == 0 for d in (i, shard // i)}
                chunk = max(d for d in divisors if d <= chunk)
        else:
            shard = chunk * _pow2_at_most(SHARD_BYTES // (chunk * image_bytes))
        if n <= chunk:
            return n, n
        return chunk, min(shard, -(-n // chunk) * chunk)

    def _compressors(self):
        if self.compressor == "zstd":
            return (zarr.codecs.ZstdCodec(level=3),)
        if self.compressor == "blosc-lz4":
            # bitshuffle: on photos it saves a tenth more than byte order (uint8 has no byte shuffle)
            return (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),)
        return None

    def _write(self, tmp, images, labels, first_id, sources):
        n, data, index = len(images), None, None
        if isinstance(images, ImageList):
            data, index = flat.flatten(self, images, None)
            hashing = checksums.Hashing(checksums.spans, n, data, index[:, 0], index[:, 1], labels)
        else:
            hashing = checksums.Hashing(checksums.rows, n, images, labels)
        with hashing:
            self._write_group(tmp, images, labels, first_id, data, index, hashing)
        return hashing.result()

    def _write_group(self, tmp, images, labels, first_id, data, index, hashing):
        # zarr-python has no fsync; with fsync on, atomic.create fsyncs the whole tree before the rename.
        g = zarr.create_group(store=LocalStore(tmp / GROUP), zarr_format=3, attributes={"first_id": first_id})
        n = len(images)
        if data is not None:
            mean = max(1, len(data) // n)
            # the options count images; a chunk of the flat buffer holds about that many
            scaled = ZarrBackend(chunk=self.chunk and _pow2_at_most(self.chunk * mean),
                                 shard=self.shard and _pow2_at_most(self.shard * mean), compressor=self.compressor)
            self._write_array(g, "data", data, *scaled.layout(len(data), 1), ("byte",), hashing)
            ix = g.create_array("index", shape=index.shape, dtype=np.int64, chunks=index.shape, compressors=None,
                                fill_value=0, dimension_names=("image", "field"))
            ix[:] = index
        else:
            _, h, w, c = images.shape
            self._write_array(g, "images", images, *self.layout(n, h * w * c),
                              ("image", "height", "width", "channel"), hashing)
        for name, a in (("labels", labels), ("checksums", hashing.result())):
            arr = g.create_array(name, shape=(n,), dtype=a.dtype, chunks=(n,), compressors=None,
                                 fill_value=0, dimension_names=("image",))
            arr[:] = a

    def _write_array(self, g, name, images, chunk, shard, dims, hashing):
        n, rest = len(images), images.shape[1:]
        arr = g.create_array(name, shape=images.shape, dtype=np.uint8, chunks=(chunk, *rest),
                             shards=(shard, *rest), compressors=self._compressors(), fill_value=0,
                             dimension_names=dims,
                             # all-black chunks too: every chunk is then present and in order (and
                             # zarr skips its scan of each chunk for the fill value)
                             config={"write_empty_chunks": True})
        plain = _zarr_shards.layout_of(arr) if self.compressor == "none" else None
        hashing.start()  # beside the bulk write, not beside zarr-python's set-up
        if plain is not None:
            _zarr_shards.write_shards(Path(g.store.root) / name, images, plain)
        else:
            for start in range(0, n, shard):  # one call per shard: zarr holds one shard in memory at a time
                arr[start:start + shard] = images[start:start + shard]

    def _open(self, store: Store):
        root = store.path / GROUP
        try:
            g = zarr.open_group(store=LocalStore(store.file(GROUP), read_only=True), mode="r", zarr_format=3)
            base = Path(store.file(GROUP))  # the group's tree checked: regular files and directories only
            if store.shape is None:
                data, index, labels = g["data"], g["index"], g["labels"]
                if not isinstance(data, zarr.Array) or data.ndim != 1 or data.dtype != np.uint8:
                    raise NotAStoreError(f"{root} has no flat uint8 data array; not a zarr store")
                for name, arr in (("data", data), ("index", index), ("labels", labels)):
                    check_array(arr, base / name, root / name)
                index = index[...]
                flat.check_index(index, store, data.shape[0], root / "index")
                return data, store.labels(labels[...], root / "labels"), index
            images, labels = g["images"], g["labels"]
            if isinstance(images, zarr.Array) and isinstance(labels, zarr.Array):
                check_array(images, base / "images", root / "images")
                check_array(labels, base / "labels", root / "labels")
        except NotAStoreError:
            raise
        except Exception as e:  # zarr raises many kinds (missing files, bad JSON, wrong node type)
            raise NotAStoreError(f"{store.path} is not a readable zarr store ({type(e).__name__}: {e})") from None
        n = store.count
        if not isinstance(images, zarr.Array) or images.shape != (n, *store.shape) or images.dtype != np.uint8:
            raise NotAStoreError(f"{root} has no images array of shape {(n, *store.shape)} uint8; "
                                 "not a zarr store")
        if not isinstance(labels, zarr.Array) or labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise NotAStoreError(f"{root} has no labels array of {n} integers; not a zarr store")
        return images, store.labels(labels[...], root / "labels")

    def _read_all(self, store, direct: bool = True):
        if store.shape is None:
            data, labels, index = self._open(store)
            buf, _ = self._read_all_array(data, Path(store.file(GROUP)) / "data", labels, direct)
            return flat.read_all(store, buf, index, labels, self)
        images, labels = self._open(store)
        return self._read_all_array(images, Path(store.file(GROUP)) / "images", labels, direct)

    def _read_all_array(self, images, root, labels, direct):
        layout = _zarr_shards.shard_files(images, root) if direct else None
        if layout is None:
            return images[...], labels
        step, shards = layout
        out = np.empty(images.shape, np.uint8)
        for s, (path, offset, rows) in enumerate(shards):
            with open(path, "rb", buffering=0) as f:  # straight from the file into the result
                f.seek(offset)
                view = memoryview(out[s * step:s * step + rows]).cast("B")
                while view:
                    got = f.readinto(view)
                    if not got:
                        raise NotAStoreError(f"{path} is shorter than its shard index says; the store is damaged")
                    view = view[got:]
        return out, labels

    def _handle(self, store, direct: bool = True):
        if store.shape is None:
            data, labels, index = self._open(store)
            layout = _zarr_shards.shard_files(data, Path(store.file(GROUP)) / "data") if direct else None
            if layout is None:
                h = flat.FlatHandle(store, data, index, labels)
            else:
                h = flat.FlatHandle(store, _zarr_shards.MappedBytes(*layout), index, labels)
            h.file = f"{GROUP}/data"
            return h
        images, labels = self._open(store)
        layout = _zarr_shards.shard_files(images, Path(store.file(GROUP)) / "images") if direct else None
        h = _ApiHandle(images, labels) if layout is None else _zarr_shards.MappedHandle(*layout, store.shape, labels)
        h.file = f"{GROUP}/images"
        return h

    def _sums(self, store):
        try:
            g = zarr.open_group(store=LocalStore(store.file(GROUP), read_only=True), mode="r", zarr_format=3)
            check_array(g["checksums"], Path(store.file(GROUP)) / "checksums", store.path / GROUP / "checksums")
            return g["checksums"][...]
        except NotAStoreError:
            raise
        except Exception as e:  # zarr raises many kinds (missing files, bad JSON, wrong node type)
            raise NotAStoreError(f"{store.path}: its checksums are unreadable ({type(e).__name__}: {e}); "
                                 "the store is damaged") from None

    def _change_label(self, path, store, pos):
        arr = zarr.open_group(path / GROUP, mode="r+")["labels"]
        arr[pos] = int(arr[pos]) + 1
        return f"{GROUP}/labels"


class _ApiHandle(Handle):
    """Any other layout (compressed, other codecs, missing chunks) through zarr-python."""

    def __init__(self, images, labels: np.ndarray):
        self.images, self.labels = images, labels

    def get(self, pos):
        return np.asarray(self.images[pos]), int(self.labels[pos])

    def stored(self, pos):
        return self.get(pos)

    def stored_range(self, lo, hi):
        step = max(1, (getattr(self.images, "shards", None) or self.images.chunks)[0])
        for a in range(lo, hi, step):
            rows = np.asarray(self.images[a:min(hi, a + step)])
            for k in range(len(rows)):
                yield rows[k], int(self.labels[a + k])

    def batch(self, pos, out):
        uniq, inverse = np.unique(pos, return_inverse=True)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        if hi - lo == len(uniq):  # a run of consecutive ids: a plain slice
            data = self.images[lo:hi]
        else:  # one call: zarr groups the ids by chunk and decodes each chunk once
            data = self.images.get_orthogonal_selection((uniq,))
        np.take(data, inverse.reshape(-1), axis=0, out=out, mode="clip")
        return self.labels[pos]

    def close(self):
        self.images = None
