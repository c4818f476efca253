"""Storage backends behind one interface, found by name.

    from imgbench import backends
    b = backends.get("lmdb")
    b.store_many(path, images, labels)
    images, labels = b.read_many(path)          # or b.read_many(path, ids)
    backends.verify(path).ok                    # every image against its checksum

A format lives in a module of its own (registry.FORMATS names it, lookup finds it);
base.Backend says what it implements; the modules beside them hold what every format shares.
"""
from __future__ import annotations

from .base import Backend
from .errors import DamagedImageError, DiskFullError, NotAStoreError, StoreExistsError
from .lookup import coding, get, names, options, split, variant
from .store import manifest
from .verify import Report

__all__ = ["Backend", "DamagedImageError", "DiskFullError", "NotAStoreError", "Report", "StoreExistsError", "get",
           "manifest", "names", "options", "split", "coding", "variant", "verify"]


def verify(path, log=None) -> Report:
    """Check the store at `path` with the backend its manifest names: the manifest against the
    checksums, and every image's stored bytes and label against its checksum (see checksums.py).
    Damage is reported, not raised: `report.ok`, `report.bad` (id, file, what), `report.errors`."""
    try:
        name = manifest(path).get("backend")
        b = get(name)
    except (NotAStoreError, ValueError) as e:
        return Report(str(path), errors=[str(e)])
    return b.verify(path, log=log)
