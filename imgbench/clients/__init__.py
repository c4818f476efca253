"""Clients: who reads a store. `imgbench` is imgbench's own reader (what the layout allows);
`stock` is the format's own library used as its documentation shows (what a person who picked
the format gets), one short module per format."""
from __future__ import annotations

import numpy as np

from .base import StockReader

CLIENTS = ("imgbench", "stock")

# backend name -> (module, class) of its stock reader
STOCK = {
    "article-disk": ("article", "ArticleFiles"),
    "article-lmdb": ("article_lmdb", "ArticleLmdb"),
    "article-hdf5": ("article", "ArticleHdf5"),
    "disk": ("files", "Files"),
    "lmdb": ("lmdb", "Lmdb"),
    "hdf5": ("hdf5", "Hdf5"),
    "npy": ("npy", "Npy"),
    "zarr": ("zarr", "Zarr"),
    "tar": ("tar", "Tar"),
    "parquet": ("parquet", "Parquet"),
    "sqlite": ("sqlite", "Sqlite"),
    "lance": ("lance", "Lance"),
    "hfdatasets": ("hfdatasets", "HfDatasets"),
    "litdata": ("litdata", "Litdata"),
}


def stock(backend: str, path) -> StockReader:
    """The stock reader of a store written by `backend` (a name, or a label such as "tar.png")."""
    return reader_class(backend)(path)


def reader_class(backend: str) -> type[StockReader]:
    import importlib

    name = backend.partition(".")[0]
    if name not in STOCK:
        raise ValueError(f"no stock reader for backend {backend!r}; there is one for {', '.join(STOCK)}")
    module, cls = STOCK[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


class Whole:
    """A whole store read by its stock reader, behind the backends' `read_many(path, ids=None)`:
    the library's read of everything at once (or of the images with `ids`, through its batch
    path where it has random access)."""

    def __init__(self, backend: str):
        self.backend = backend

    def read_many(self, path, ids=None):
        ds = stock(self.backend, path)
        with ds:
            if ids is None:
                return ds.read_all()
            ids = np.asarray(ids, np.int64) - ds.first_id  # ids to positions
            if ds.random_access:
                return ds[ids]
            images, labels = ds.read_all()
            return (images[ids] if not isinstance(images, list) else [images[i] for i in ids]), labels[ids]
