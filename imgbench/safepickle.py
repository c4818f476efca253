"""Unpickling data from outside without running it: an allow-list of globals, nothing else.

A pickle names the functions and classes it calls to rebuild itself, so `pickle.loads` of a
file someone else wrote can run anything. The CIFAR archive (from the network) and article-lmdb
stores (the article pickles each image) are read through `loads(data, allowed, ...)`, which
resolves only the (module, name) pairs in `allowed`, each mapped to a function that checks its
arguments, and refuses every other global and persistent id before it is looked up.
"""
from __future__ import annotations

import io
import pickle


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only `allowed` {(module, name): callable}; `what` says in an
    error what the data may hold."""

    def __init__(self, file, allowed: dict, what: str, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed, self.what = allowed, what

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: {self.what}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"refusing a persistent id: {self.what}")


def loads(data: bytes, allowed: dict, what: str, **kwargs):
    """pickle.loads through a RestrictedUnpickler (kwargs: e.g. encoding="bytes" for Python 2)."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, what, **kwargs).load()
