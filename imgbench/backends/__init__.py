"""Storage backends behind one interface, found by name.

    from imgbench import backends
    b = backends.get("lmdb")
    b.store_many(path, images, labels)
    images, labels = b.read_many(path)          # or b.read_many(path, ids)
    backends.verify(path).ok                    # every image against its checksum
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from pathlib import Path

from .base import Backend, DamagedImageError, DiskFullError, NotAStoreError, StoreExistsError
from .integrity import Report

# name -> (module, class); modules import lazily so one format's library is loaded only when used
_REGISTRY = {
    # the article's own three methods, faithfully, to compare each of its choices with ours
    "article-disk": ("article", "ArticleDiskBackend"),
    "article-lmdb": ("article", "ArticleLmdbBackend"),
    "article-hdf5": ("article", "ArticleHdf5Backend"),
    "disk": ("disk", "DiskBackend"),
    "lmdb": ("lmdb_store", "LmdbBackend"),
    "hdf5": ("hdf5_store", "Hdf5Backend"),
    "npy": ("npy_store", "NpyBackend"),
    "zarr": ("zarr_store", "ZarrBackend"),
    "tar": ("tar_store", "TarBackend"),
    "parquet": ("parquet_store", "ParquetBackend"),
}

__all__ = ["Backend", "DamagedImageError", "DiskFullError", "NotAStoreError", "Report", "StoreExistsError", "get",
           "names", "options", "source_hash", "split", "coding", "variant", "verify"]


def names() -> list[str]:
    return list(_REGISTRY)


def _cls(name: str) -> type[Backend]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def options(name: str) -> dict:
    """The options a backend takes, with their defaults."""
    return {p.name: p.default for p in inspect.signature(_cls(name).__init__).parameters.values()
            if p.kind is p.KEYWORD_ONLY}


def get(name: str, **opts) -> Backend:
    """A backend by name, with options (e.g. get("disk", compress_level=1))."""
    known = options(name)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for backend {name!r}; options: {', '.join(known)}")
    return _cls(name)(**opts)


def split(label: str) -> tuple[str, str | None]:
    """"lmdb.jpeg" -> ("lmdb", "jpeg"); "lmdb" -> ("lmdb", None). ValueError for an unknown
    backend, or an encoding it does not offer."""
    name, _, encoding = label.partition(".")
    cls = _cls(name)
    if encoding and encoding not in cls.ENCODINGS:
        raise ValueError(f"{label}: {name} stores images as {', '.join(cls.ENCODINGS)}, not {encoding!r}")
    return name, encoding or None


def variant(label: str, **opts) -> Backend:
    """A backend from a label "name" or "name.encoding" (e.g. "lmdb.jpeg", "disk.source"): the
    encoding (the disk backend's `format`) overrides what `opts` say."""
    name, encoding = split(label)
    if encoding and "encoding" in options(name):
        opts = {**opts, "encoding": encoding}
    elif encoding and "format" in options(name):
        opts = {**opts, "format": encoding}
    return get(name, **opts)


def coding(b: Backend) -> str:
    """What a backend keeps per image, precisely: "raw", "png-l6" (the zlib level),
    "jpeg-q90" (the quality) or "source"."""
    return {"png": f"png-l{getattr(b, 'compress_level', 6)}",
            "jpeg": f"jpeg-q{getattr(b, 'quality', 90)}"}.get(b.encoding, b.encoding)


def source_hash(name: str) -> str:
    """A hash of the code a backend's results depend on: its module and every module of this
    package that it imports, directly or not (base.py and ../images.py; article.py also builds
    on lmdb_store...)."""
    name = name.partition(".")[0]
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}")
    here = Path(__file__).parent
    todo, seen = [here / f"{_REGISTRY[name][0]}.py"], set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        for dots, module in re.findall(r"^\s*from (\.\.?)(\w+) import", path.read_text(), re.M):
            todo.append((path.parent if dots == "." else path.parent.parent) / f"{module}.py")
    h = hashlib.sha256()
    for path in sorted(seen):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def verify(path, log=None) -> Report:
    """Check the store at `path` with the backend its manifest names: the manifest against the
    checksums, and every image's stored bytes and label against its checksum (see integrity.py).
    Damage is reported, not raised: `report.ok`, `report.bad` (id, file, what), `report.errors`."""
    from .base import manifest

    try:
        name = manifest(path).get("backend")
        b = get(name)
    except (NotAStoreError, ValueError) as e:
        return Report(str(path), errors=[str(e)])
    return b.verify(path, log=log)
