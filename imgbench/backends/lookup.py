"""Backends by name: a format's class, its options, a label's variant ("lmdb.jpeg")."""
from __future__ import annotations

import importlib

from .base import Backend
from .registry import FORMATS, PACKAGE


def names() -> list[str]:
    return list(FORMATS)


def module(name: str) -> str:
    """The module a backend (or a label "name.encoding") lives in, e.g. "imgbench.backends.disk"."""
    name = name.partition(".")[0]
    if name not in FORMATS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(FORMATS)}")
    return f"{PACKAGE}.{FORMATS[name][0]}"


def backend_class(name: str) -> type[Backend]:
    """The class of backend `name` (a name, not a label with an encoding)."""
    if name not in FORMATS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(FORMATS)}")
    return getattr(importlib.import_module(module(name)), FORMATS[name][1])


def options(name: str) -> dict:
    """The options a backend takes, with their defaults."""
    return backend_class(name).option_defaults()


def get(name: str, **opts) -> Backend:
    """A backend by name, with options (e.g. get("disk", compress_level=1))."""
    if not isinstance(name, str):  # e.g. a manifest's "backend" that is a list: unhashable
        raise ValueError(f"a backend name is text, got {type(name).__name__} {str(name)[:40]!r}; known backends: "
                         f"{', '.join(FORMATS)}")
    if name not in FORMATS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(FORMATS)}")
    known = options(name)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for backend {name!r}; options: {', '.join(known)}")
    return backend_class(name)(**opts)


def split(label: str) -> tuple[str, str | None]:
    """"lmdb.jpeg" -> ("lmdb", "jpeg"); "lmdb" -> ("lmdb", None). ValueError for an unknown
    backend, or an encoding it does not offer."""
    name, _, encoding = label.partition(".")
    cls = backend_class(name)
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
    """What a backend keeps per image, precisely: "raw", "png-l6" (the zlib level), "jpeg-q90",
    "webp-q90", "avif-q90", "jxl-q90" (the quality), "webp-lossless" or "source" (Codec.coding)."""
    from ..images import Codec

    return Codec(b.encoding, getattr(b, "quality", 90), getattr(b, "compress_level", 6)).coding
