"""article-lmdb: the article's LMDB, a pickled Python object per image.

The article "Three Ways of Storing and Accessing Lots of Images in Python" pickles each image with
its label into LMDB; this backend does what its published code does in every step that costs time,
so its choices can be timed beside `lmdb`'s. The class docstring says what it reproduces and what it
does differently; like every store it is written atomically with a manifest, and it keeps
`checksums.npy` (its pickled value with its label, see checksums.py) beside the article's files.

Reading a pickle can run code, and a store may come from anyone: values are unpickled through
imgbench.safepickle's allow-list (ArticleImage and numpy's integer-scalar rebuilders), so
nothing in a store runs.
"""
from __future__ import annotations

import io
import pickle

import lmdb
import numpy as np

from .. import safepickle
from . import checksums
from .base import Backend
from .errors import NotAStoreError
from .handles import Handle
from .lmdb_store import LmdbBackend, LmdbHandle, acquire, check_data_file, open_to_edit, release
from .store import Store

LMDB_MAX_ID = 99_999_999  # the article's keys are f"{i:08}": eight digits


class ArticleImage:
    """The article's `CIFAR_Image`: what article-lmdb pickles, one per image.

    Same attributes as the article's class (channels, size, the pixels as bytes, label) and the
    same `get_image()`. Stores name this class by its module path: moving or renaming it
    needs its old path in ALLOWED, or existing article-lmdb stores become unreadable.
    """

    def __init__(self, image, label):
        self.channels = image.shape[2]
        self.size = image.shape[:2]
        self.image = image.tobytes()
        self.label = label

    def get_image(self):
        image = np.frombuffer(self.image, dtype=np.uint8)
        return image.reshape(*self.size, self.channels)


_numpy_scalar = np.int64(0).__reduce__()[0]  # numpy's scalar(dtype, bytes) rebuilder, wherever it lives
_INTEGER_DTYPES = frozenset(f"{k}{b}" for k in "iu" for b in (1, 2, 4, 8))


def _dtype(spec, align=False, copy=False):
    """numpy.dtype, as a pickled label's dtype calls it, for plain integer types only."""
    if type(spec) is not str or spec not in _INTEGER_DTYPES:
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}: an article image's label is an integer")
    return np.dtype(spec, bool(align), bool(copy))


def _scalar(dtype, data):
    """numpy's scalar rebuilder, for an integer label from its bytes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "iu":
        raise pickle.UnpicklingError(f"refusing a numpy scalar of {dtype!r}: an article image's label is an integer")
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("refusing a numpy scalar that is not built from its own bytes")
    return _numpy_scalar(dtype, data)


# What an article-lmdb value may name: an ArticleImage whose attributes are ints, a tuple of
# ints, bytes and the label, a numpy integer scalar (the article pickles `labels[i]`), rebuilt
# through numpy's `scalar(dtype, bytes)` and `dtype(spec, ...)`, for integer types only. Any
# other global (say `os.system`) is refused before it is looked up, so it never runs.
ALLOWED = {
    (__name__, "ArticleImage"): ArticleImage,
    # stores written when the article's three backends shared one module
    ("imgbench.backends.article", "ArticleImage"): ArticleImage,
    ("numpy._core.multiarray", "scalar"): _scalar,  # numpy 2
    ("numpy.core.multiarray", "scalar"): _scalar,  # numpy 1
    ("numpy", "dtype"): _dtype,
}


ArticleUnpickler = safepickle.restricted(ALLOWED, "an article-lmdb value holds only an ArticleImage")


def article_loads(data: bytes):
    """pickle.loads for article-lmdb values, through imgbench.safepickle's allow-list."""
    return ArticleUnpickler(io.BytesIO(data)).load()


class ArticleLmdbBackend(Backend):
    """The article's LMDB: a pickled ArticleImage per image, keys `f"{id:08}"`.

    Reproduced: `lmdb.open(path, map_size=N * image bytes * 10)` with LMDB's defaults otherwise,
    so every commit is synced to disk (`sync=True`, the article's cost; see below); one write
    transaction with one `txn.put(key, pickle.dumps(ArticleImage(image, labels[i])))` per image,
    the label pickled as the numpy integer scalar that indexing the label array gives (the
    article's labels are numpy uint8, ours int64: the same pickle, a different dtype name);
    keys are eight zero-padded digits, so ids go up to 99,999,999 and a larger one is refused
    with a ValueError before anything is written. Reading a whole store opens the environment
    as the article does, `lmdb.open(path, readonly=True)`, and gets key by key in one
    transaction, rebuilding each image with `get_image()`.

    Deliberately different:
    - Values are unpickled through an allow-list (ALLOWED), which resolves only ArticleImage and
      numpy's integer-scalar rebuilders, not by `pickle.loads`: nothing in a store runs code.
      This is the one cost we add to the article's read: per value, an io.BytesIO, an
      unpickler object and three find_class calls in Python (the article's C find_class
      imports the module names instead), and the two numpy rebuilders' argument checks.
    - Each image is copied into one (N, H, W, C) array and each label into an int64 array (the
      article keeps lists of `get_image()` views and of the unpickled labels); each value is
      checked to be an ArticleImage of the store's shape.
    - Options: `sync` (True) is LMDB's own sync at commit, which the article has by opening with
      defaults; we keep it on so that its cost is the article's, although the project's rule
      is that `fsync` (the base option, an fsync of every file after writing) is off for every
      backend alike, as it is here. `sync=False` shows what the article's sync costs.
    - Where the article's map size is too small for the store (tiny images: there its code
      fails with MapFullError), the transaction is aborted and written again in a map of lmdb's
      estimate (doubled until it fits). Everywhere the article's code works, its map size is
      the one used; the map size costs no time in any case (LMDB grows the file as it writes).
    - Readers (read_single, reads by ids, Reader) share one environment per store and process
      with the `lmdb` backend's readers, opened read-only without the lock (LMDB allows one
      environment per data file and process, and a lock-free one survives fork); a whole-store
      read uses that shared environment too when this process already holds it. Without the
      lock a reader does not register in the lock file, which only matters if a writer reused
      pages, and stores are never written after they are made.
    - The whole-store read opens without LMDB's lock file (`lock=False`; the article's open
      creates or opens lock.mdb and writes to it: in a store someone else wrote, a lock.mdb
      that is a link would be written through), after checking that every value of data.mdb lies
      inside the file (lmdb_store.check_data_file). Neither changes the time of a read beyond
      one walk of the leaf pages per open.
    - The environment lives in the store directory itself (data.mdb, lock.mdb), not in an
      `{N}_lmdb` subdirectory; we close it on errors too.
    """

    name = "article-lmdb"
    RAGGED = False  # the article's code stores one array of one shape

    def __init__(self, *, sync: bool = True, fsync: bool = False):
        """sync: LMDB's own flush to disk at commit (the article's default: on); fsync: fsync
        every file of the store after writing (off, as for every backend)."""
        super().__init__(fsync=fsync)
        self.sync = bool(sync)

    def _create(self, path, images, labels, first_id, overwrite, sources=None):
        last = first_id + len(images) - 1
        if last > LMDB_MAX_ID:
            raise ValueError(f"{self.name} keys are the article's f'{{id:08}}' (8 digits): image ids must lie in "
                             f"0..{LMDB_MAX_ID:,}, got {last:,}; use the lmdb backend for larger ids")
        return super()._create(path, images, labels, first_id, overwrite, sources)

    def _write(self, tmp, images, labels, first_id, sources):
        n = len(images)
        map_size = n * images[0].nbytes * 10  # the article's
        sums = np.empty(n, np.uint64)
        env = lmdb.open(str(tmp), map_size=map_size, sync=self.sync)  # otherwise LMDB's defaults
        try:
            while not self._put_all(env, images, labels, first_id, sums):
                # Only where the article's code fails (tiny images); the aborted transaction
                # left nothing behind, so write again with room.
                value_bytes = len(pickle.dumps(ArticleImage(images[0], labels[0])))
                map_size = max(2 * map_size, LmdbBackend.estimate_map_size(n, value_bytes))
                env.set_mapsize(map_size)
        finally:
            env.close()
        return checksums.save(tmp, sums)

    def _sums(self, store):
        return checksums.load(store)

    def _change_label(self, path, store, pos):
        env = open_to_edit(path)
        try:
            with env.begin(write=True) as txn:
                key = f"{store.first_id + pos:08}".encode("ascii")
                obj = article_loads(txn.get(key))
                obj.label = type(obj.label)(obj.label + 1)
                txn.put(key, pickle.dumps(obj))
        finally:
            env.close()
        return "data.mdb"

    @staticmethod
    def _put_all(env, images, labels, first_id, sums) -> bool:
        """The article's write transaction; False if the map filled up (nothing was written)."""
        try:
            with env.begin(write=True) as txn:
                for i in range(len(images)):
                    value = pickle.dumps(ArticleImage(images[i], labels[i]))
                    sums[i] = checksums.checksum(value, labels[i])  # ours
                    txn.put(f"{first_id + i:08}".encode("ascii"), value)
        except lmdb.MapFullError:
            return False
        return True

    def _read_all(self, store):
        n = store.count
        try:
            check_data_file(store)  # ours: every value inside the file (no SIGBUS)
            # the article's open, but without the lock file (see the class's notes)
            env, shared = lmdb.open(store.file(""), readonly=True, lock=False), False
        except lmdb.Error as e:
            if "already open" not in str(e):
                raise NotAStoreError(f"{store.path} is not a readable {self.name} store ({e})") from None
            env, shared = acquire(store, True), True  # this process's readers hold it already
        try:
            entries = env.stat()["entries"]
            if entries != n:  # before room for n images is allocated
                raise NotAStoreError(f"{store.path}: lmdb holds {entries} values, its manifest says {n} "
                                     "images; the store is damaged")
            images = np.empty((n, *store.shape), np.uint8)
            labels = np.empty(n, np.int64)
            with env.begin() as txn:
                _unpickle_into(store, txn, range(store.first_id, store.first_id + n), images, labels)
        finally:
            if shared:
                release(env)
            else:
                env.close()
        return images, labels

    def _env(self, store: Store) -> lmdb.Environment:  # for the handle, as lmdb_store's
        return acquire(store, True)

    def _handle(self, store):
        return _ArticleLmdbHandle(self, store)


def _unpickle_into(store: Store, txn, ids, out: np.ndarray, labels: np.ndarray) -> None:
    """Get and unpickle the values of image `ids` into out[k] and labels[k], k = 0, 1, ..."""
    shape = store.shape
    k = image_id = -1
    try:
        for k, image_id in enumerate(ids):
            value = txn.get(f"{image_id:08}".encode("ascii"))
            if value is None:
                raise NotAStoreError(f"{store.path}: image id {image_id} is missing from the lmdb data; "
                                     "the store is damaged")
            c = ArticleUnpickler(io.BytesIO(value)).load()  # article_loads, inlined
            if type(c) is not ArticleImage:
                raise ValueError(f"it holds a {type(c).__name__}, not an ArticleImage")
            image = c.get_image()
            if image.shape != shape:
                raise ValueError(f"its image has shape {image.shape}, the store's is {shape}")
            out[k] = image
            labels[k] = c.label
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, EOFError, OverflowError) as e:
        raise NotAStoreError(f"{store.path}: the lmdb value of image id {image_id} is not an article image "
                             f"({e}); the store is damaged or not written by {ArticleLmdbBackend.name}") from None


class _ArticleLmdbHandle(LmdbHandle):
    """lmdb_store's handle (one shared, lock-free environment and one long read transaction),
    reading the article's pickles."""

    stored_range = Handle.stored_range  # not lmdb_store's cursor walk: other keys, other values

    def stored(self, pos):
        value = self.txn.get(f"{self.store.first_id + pos:08}".encode("ascii"))
        if value is None:
            raise NotAStoreError(f"{self.store.path}: image id {self.store.first_id + pos} is missing from the "
                                 "lmdb data; the store is damaged")
        labels = np.empty(1, np.int64)
        _unpickle_into(self.store, self.txn, (self.store.first_id + pos,), np.empty((1, *self.store.shape), np.uint8),
                       labels)
        return value, int(labels[0])

    def get(self, pos):
        out = np.empty((1, *self.store.shape), np.uint8)
        labels = np.empty(1, np.int64)
        _unpickle_into(self.store, self.txn, (self.store.first_id + pos,), out, labels)
        return out[0], int(labels[0])

    def batch(self, pos, out):
        labels = np.empty(len(pos), np.int64)
        _unpickle_into(self.store, self.txn, (pos + self.store.first_id).tolist(), out, labels)
        return labels


