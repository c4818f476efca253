"""Unpickling data from outside without running it: an allow-list of globals, nothing else.

A pickle names the functions and classes it calls to rebuild itself, so `pickle.loads` of a
file someone else wrote can run anything. The CIFAR archive (from the network) and article-lmdb
stores (the article pickles each image) are read through an unpickler made by `restricted`,
which resolves only the (module, name) pairs of its allow-list, each mapped to a function that
checks its arguments, and refuses every other global and persistent id before it is looked up.
"""
from __future__ import annotations

import io
import pickle


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only `allowed` {(module, name): callable}; `what` says in an
    error what the data may hold. Subclasses set both (see `restricted`): nothing is set up per
    call, so one value costs what pickle's own C unpickler costs, plus find_class."""

    allowed: dict = {}
    what = "nothing may be loaded"
    persistent = "refusing a persistent id"

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: {self.what}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(self.persistent)


def restricted(allowed: dict, what: str, persistent: str | None = None) -> type[RestrictedUnpickler]:
    """An unpickler class resolving only `allowed`; `what` ends its refusals of other globals,
    `persistent` is its refusal of persistent ids."""
    return type("Restricted", (RestrictedUnpickler,), {
        "allowed": allowed, "what": what, "persistent": persistent or f"refusing a persistent id: {what}"})


def loads(data: bytes, unpickler: type[RestrictedUnpickler], **kwargs):
    """pickle.loads through `unpickler` (kwargs: e.g. encoding="bytes" for Python 2 pickles)."""
    return unpickler(io.BytesIO(data), **kwargs).load()
