"""Backend: what every storage format is, and what a format implements.

A format is a subclass in a module of its own that sets `name` (and `ENCODINGS`, `RAGGED`,
`format_version` where they differ) and implements five hooks: `_write` (the files of a new
store), `_read_all` (a whole store), `_handle` (an open store for readers), `_sums` (the
checksums it kept) and `_change_label` (the fault battery's way to edit one label where the
format keeps it). Everything else (checking input, the manifest, atomic creation, coding in
worker processes, readers, verify) is shared, in the modules beside this one.
"""
from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from .. import decoders
from ..images import Blobs, Codec, ImageList, check_images
from . import atomic, parallel, verify as _verify
from . import errors as _errors
from .errors import NotAStoreError
from .handles import Handle
from .reader import Reader
from .store import MANIFEST, Store, check_id, check_labels, check_shapes, checked_sums, new_manifest, open_store


class Backend(ABC):
    """One storage format. Subclasses set `name` and implement the hooks below."""

    name = "?"
    format_version = 1
    ENCODINGS = ("raw",)  # what the store keeps per image; `encoding` is one of them
    RAGGED = True  # stores images of different shapes
    REQUIRES: tuple[str, ...] = ()  # modules of an optional extra the format needs (EXTRA: its name)
    EXTRA = ""

    @classmethod
    def missing(cls) -> str | None:
        """The first module of REQUIRES that is not installed, or None."""
        import importlib.util

        return next((m for m in cls.REQUIRES if importlib.util.find_spec(m) is None), None)
    encoding = "raw"
    workers = None  # processes for coding (None: this process's cores)
    decoder = decoders.DEFAULT  # what reads decode with: not an option of the store (see `decoding`)

    def __init__(self, *, fsync: bool = False):
        # Off by default for every backend alike: a store counts as written once its files are
        # closed (in the OS page cache). True adds fsync of every file, as a durability cost.
        self.fsync = bool(fsync)

    @classmethod
    def option_defaults(cls) -> dict:
        """The options this format takes (its keyword-only arguments), with their defaults."""
        return {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is p.KEYWORD_ONLY}

    def option_values(self) -> dict:
        """This backend's options as set (not state such as map_grown)."""
        return {k: getattr(self, k) for k in self.option_defaults()}

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.option_values().items())
        return f"backends.get({self.name!r}{', ' if opts else ''}{opts})"

    # ------------------------------------------------------------------ public interface

    def store_many(self, path, images, labels, *, sources=None, overwrite: bool = False) -> Path:
        """Store images with labels (N,) as ids 0..N-1 in a new store at `path`.

        `images`: a uint8 array (N, H, W, C), or a sequence of (H, W, C) uint8 arrays of different
        shapes (stored as such, read back as an ImageList; a sequence of one shape is stored as an
        array). `sources`: with encoding "source", the original files' bytes, one per image (the
        images are then what those files decode to; the store keeps only the bytes)."""
        images = check_images(images)
        self._check_support(images)
        labels = check_labels(labels, len(images))
        return self._create(Path(path), images, labels, 0, overwrite, self._check_sources(sources, len(images)))

    def _check_support(self, images) -> None:
        if isinstance(images, ImageList) and not self.RAGGED:
            raise ValueError(f"{self.name} stores only images of one shape (as the article does); these have "
                             f"{len(np.unique(images.shapes, axis=0))} shapes: use "
                             f"{self.name.removeprefix('article-')}, or resize them to one shape")

    def _check_sources(self, sources, n: int):
        if self.encoding != "source":
            return None
        if sources is None:
            raise ValueError(f"{self.name} with encoding 'source' keeps the original files' bytes: pass them as "
                             "sources= (a folder dataset's files), or choose another encoding")
        if len(sources) != n:
            raise ValueError(f"sources must hold one file's bytes per image: {len(sources)} for {n} images")
        return sources

    def decoding(self, decoder: str | None) -> "Backend":
        """This backend reading with `decoder` (one of decoders.DECODERS; None: as it is): a
        read-time choice, so the same store reads with any of them."""
        if decoder is None or decoder == self.decoder:
            return self
        import copy

        b = copy.copy(self)
        b.decoder = decoders.check_decoder(decoder)
        return b

    def read_many(self, path, ids=None, *, decoder: str | None = None):
        """All images and labels in id order, or those of `ids` in the order given: images as a
        uint8 array (N, H, W, C), or an ImageList if the store's images differ in shape.
        decoder: what decodes encoded images (decoders.DECODERS; default Pillow)."""
        if decoder is not None and decoder != self.decoder:
            return self.decoding(decoder).read_many(path, ids)
        try:
            if ids is None:
                return self._read_all(self.open(path))
            with self.reader(path) as r:
                return r.get_batch(ids)
        except _errors.LIBRARY_ERRORS as e:
            raise _errors.from_library(e, path) from None

    def store_single(self, path, image, image_id, label, *, source=None, overwrite: bool = False) -> Path:
        """Store one image (H, W, C) uint8 with its id and label in a new store at `path`
        (`source`: its file's bytes, with encoding "source")."""
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ValueError(f"image must be a numpy array (H, W, C), got "
                             f"{getattr(image, 'shape', type(image).__name__)}; for a batch use store_many")
        image_id = check_id(image_id)
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"label must be an integer, got {label!r}")
        images = check_images(image[None])
        sources = self._check_sources(None if source is None else [source], 1)
        return self._create(Path(path), images, np.array([label], np.int64), image_id, overwrite, sources)

    def read_single(self, path, image_id) -> tuple[np.ndarray, int]:
        check_id(image_id)
        with self.reader(path) as r:
            return r[image_id]

    def reader(self, path, *, verify: bool = False, advice: str | None = None, decoder: str | None = None,
               decode_size: int | None = None) -> Reader:
        """A map-style dataset over the store at `path`: `len(r)`, `r[id]`, `r.get_batch(ids)`.

        Nothing is opened until the first use; it reopens itself in a forked child and pickles
        as backend, options and path (for spawned workers). verify: check every image it returns
        against its checksum (DamagedImageError naming the id, instead of wrong pixels).
        advice: 'random' when the store is larger than the page cache and read shuffled (its
        memory maps then read only the pages touched, not the device's read-ahead around each);
        None leaves the kernel's read-ahead, which wins while the store fits in memory.
        decoder: what decodes encoded images (decoders.DECODERS; default Pillow). decode_size:
        give every image at training size, its shorter side this many pixels (a JPEG decoded at a
        reduced DCT scale where the decoder offers one; see decoders.decode_resized)."""
        return Reader(self.decoding(decoder), path, verify=verify, advice=advice, decode_size=decode_size)

    def verify(self, path, log=None) -> _verify.Report:
        """Check a whole store: the manifest against the checksums, and every image's stored bytes
        and label against its checksum. Never raises for damage: it is in the report."""
        return _verify.verify(self, path, log)

    def open(self, path) -> Store:
        """The store at `path`, checked to be this format's (NotAStoreError otherwise)."""
        store = open_store(path, self.name, self.format_version)
        store.decoder = self.decoder
        return store

    def _checked_sums(self, store: Store, errors: list | None = None) -> np.ndarray:
        """The store's checksums, checked against the manifest's digest; a mismatch raises, or
        with `errors` is added to it."""
        try:
            sums = np.asarray(self._sums(store), np.uint64)
        except NotAStoreError:
            raise
        except (KeyError, IndexError, ValueError) as e:
            raise NotAStoreError(f"{store.path}: its checksums are unreadable ({e}); the store is damaged") from None
        return checked_sums(store, sums, errors)

    # ------------------------------------------------------------------ what a format implements

    @abstractmethod
    def _write(self, tmp: Path, images, labels: np.ndarray, first_id: int, sources) -> np.ndarray:
        """Write the store's files into `tmp`: `images` a 4-D array or an ImageList; `sources` the
        files' bytes with encoding "source", else None. Keep every image's checksum (see
        checksums.py) in the format, and return them, (N,) uint64."""

    @abstractmethod
    def _read_all(self, store: Store) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label of the store, in id order."""

    @abstractmethod
    def _handle(self, store: Store) -> Handle:
        """An open store for a Reader (see handles.Handle)."""

    @abstractmethod
    def _sums(self, store: Store) -> np.ndarray:
        """Every image's checksum (N,) uint64, as `_write` kept them."""

    @abstractmethod
    def _change_label(self, path: Path, store: Store, pos: int) -> str:
        """For the fault battery: add 1 to the label of row `pos` where the format keeps it, in
        the files at `path` (the store is closed to writes otherwise), leaving its checksum as it
        was; return the file changed, relative to the store."""

    # ------------------------------------------------------------------ coding, in parallel

    def codec(self) -> Codec:
        return Codec(self.encoding, getattr(self, "quality", 90), getattr(self, "compress_level", 6))

    def read_processes(self, n: int) -> int:
        """Processes a whole-store read of n images decodes with (raw stores copy in one)."""
        return self._workers(n) if self.encoding != "raw" else 1

    def _workers(self, n: int) -> int:
        return parallel.processes(n, self.workers)

    def _parallel(self, func, n: int, job: dict):
        """func((lo, hi)) over pieces of range(n) in forked workers (children inherit `job` as
        parallel.job, so arrays are never pickled), or in this process for few images; its results."""
        return parallel.run(func, n, job, self._workers(n))

    def _encode_all(self, images, sources):
        """Every image's stored bytes as Blobs (encoded in parallel), or `sources` as they are."""
        if self.encoding == "source":
            return sources
        parts = self._parallel(parallel.encode_range, len(images), dict(images=images, codec=self.codec()))
        return Blobs.from_bytes([x for part in parts for x in part])

    def _decode_all(self, store: Store, labels: np.ndarray, shapes=None):
        """A whole store of records (encoded, or raw of several shapes) decoded by this backend's
        handles, in parallel workers that each open the store; (images, labels)."""
        n = store.count
        if shapes is not None:
            check_shapes(shapes, store.path)
        out = parallel.allocate(store.shape, shapes, n, self._workers(n) > 1)
        try:
            self._parallel(parallel.decode_range, n, dict(backend=self, store=store, out=out))
        finally:
            parallel.close_handle()
        return out, labels

    # ------------------------------------------------------------------ creation

    def _create(self, path: Path, images, labels, first_id: int, overwrite: bool, sources=None) -> Path:
        def fill(tmp: Path, tag: str) -> None:
            sums = self._write(tmp, images, labels, first_id, sources)
            meta = new_manifest(self, images, first_id, tag, sums)
            (tmp / MANIFEST).write_text(json.dumps(meta) + "\n")

        return atomic.create(path, overwrite, self.fsync, fill, f"storing {len(images):,} images")


def check_coding(b: Backend, encoding, quality, compress_level, workers, option: str = "encoding") -> None:
    """Check and set the coding options every encoded backend takes (`option`: what the backend
    calls its encoding)."""
    if encoding not in b.ENCODINGS:
        raise ValueError(f"{b.name} option {option} must be one of {', '.join(map(repr, b.ENCODINGS))}, "
                         f"got {encoding!r}")
    if not isinstance(quality, int) or isinstance(quality, bool) or not 1 <= quality <= 95:
        raise ValueError(f"{b.name} option quality must be 1..95 (JPEG, WebP, AVIF, JPEG XL), got {quality!r}")
    if not isinstance(compress_level, int) or isinstance(compress_level, bool) or not 0 <= compress_level <= 9:
        raise ValueError(f"{b.name} option compress_level must be 0..9, got {compress_level!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"{b.name} option workers must be a positive integer or None, got {workers!r}")
    b.encoding, b.quality, b.compress_level, b.workers = encoding, quality, compress_level, workers
