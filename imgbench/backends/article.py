"""The article's three methods, as it wrote them, behind our interface.

"Three Ways of Storing and Accessing Lots of Images in Python" stores PNG files with a label CSV,
pickled Python objects in LMDB and big-endian datasets in HDF5. These backends do what its
published code does in every step that costs time, so that its choices can be timed beside ours
(`disk`, `lmdb`, `hdf5`) on the same images and through the same interface. They are written
from its description and code, not imported from it. What each one keeps and what it
deliberately does differently is in its class docstring; all three differ from the article in
what our interface needs: a store is a directory written atomically with a manifest, ids run
from a first id, reads return one array (not a list), input is checked before anything is
written, and damaged stores are reported as such. And each keeps `checksums.npy` beside the
article's files: every image's checksum (its stored bytes, the PNG file or the pickled value or
the pixels, with its label; see integrity.py), so `verify` checks them as it checks ours. The
article's formats have none (PNG's CRC per chunk aside, which decoders do not check).
"""
from __future__ import annotations

import csv
import io
import os
import pickle

import h5py
import lmdb
import numpy as np
from PIL import Image

from . import integrity
from .base import Backend, Handle, NotAStoreError, Store
from .hdf5_store import _ChunkedHandle
from .lmdb_store import LmdbBackend, _acquire, _check_size, _release
from .lmdb_store import _Handle as _LmdbHandle

# The article's CSV dialect for labels.
CSV_DIALECT = dict(delimiter=" ", quotechar="|", quoting=csv.QUOTE_MINIMAL)
LMDB_MAX_ID = 99_999_999  # the article's keys are f"{i:08}": eight digits
HDF5_LABELS = (0, 255)  # the article stores labels as unsigned 8-bit integers
SUMS = "checksums.npy"  # ours, not the article's


def _save_sums(tmp, sums: np.ndarray) -> np.ndarray:
    np.save(tmp / SUMS, sums, allow_pickle=False)
    return sums


def _load_sums(store: Store) -> np.ndarray:
    try:
        return np.load(store.file(SUMS), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise NotAStoreError(f"{store.path}/{SUMS} is unreadable ({e}); the store is damaged") from None


# ---------------------------------------------------------------------------- article-disk


class ArticleDiskBackend(Backend):
    """The article's PNG files: `{id}.png` per image and the labels in `{N}.csv`.

    Reproduced: each image is saved by `Image.fromarray(image).save(path)` (Pillow's default
    PNG settings), one after another in one process; the labels are written with the csv
    module in the article's dialect (space-delimited, `|` as quote character, minimal quoting),
    one row per label, to `{N}.csv` where N is the number of images in the store (the article's
    name), opened with `open(path, "w")` as it does (so rows end in "\\r\\n"). Reading is
    `np.array(Image.open(path))` per image and `csv.reader` over `{N}.csv` in the same dialect.

    Deliberately different: file names use our ids (first_id, first_id + 1, ...; the article's
    ids are always 0..N-1); a store of one image (store_single) is a store like any other (the
    article's single-image code writes `{id}.csv` instead); one-channel images are saved as
    greyscale ("L") PNGs, since Pillow cannot make an image of an (H, W, 1) array (the article
    only has RGB); decoded images are copied into one (N, H, W, C) array rather than kept in a
    list; each image is checked for the store's shape. The article never closes the images it
    opens; we do, with `with`. That costs nothing measurable: Pillow closes a single-frame PNG's
    file itself as soon as its pixels are loaded (which `np.array` does), so our close only
    marks an already-closed image closed; no file stays open longer in either.
    """

    name = "article-disk"
    RAGGED = False  # the article's code stores one array of one shape
    ENCODINGS = ("png",)
    encoding = "png"  # Pillow's defaults: zlib level 6

    def read_processes(self, n: int) -> int:
        return 1  # the article reads one file after another

    def __init__(self, *, fsync: bool = False):
        super().__init__(fsync=fsync)

    @staticmethod
    def _labels_file(store_dir, n: int):
        return store_dir / f"{n}.csv"

    def _write(self, tmp, images, labels, first_id, sources):
        if images.shape[3] == 1:
            images = images[:, :, :, 0]  # Pillow makes greyscale images of (H, W) arrays only
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp / f"{first_id + i}.png")
        with open(self._labels_file(tmp, len(images)), "w") as f:
            writer = csv.writer(f, **CSV_DIALECT)
            for label in labels:
                writer.writerow([label])
        # ours: each file's bytes read back (from the page cache) for its checksum
        return _save_sums(tmp, np.array([integrity.checksum((tmp / f"{first_id + i}.png").read_bytes(), lab)
                                         for i, lab in enumerate(labels.tolist())], np.uint64))

    def _sums(self, store):
        return _load_sums(store)

    def _labels(self, store: Store) -> np.ndarray:
        labels = []
        try:
            with open(store.file(f"{store.count}.csv")) as f:
                for row in csv.reader(f, **CSV_DIALECT):
                    labels.append(int(row[0]))
        except (OSError, ValueError, IndexError, csv.Error) as e:
            raise NotAStoreError(f"{store.path} has no readable label file {store.count}.csv "
                                 f"({e}); the {self.name} store is damaged") from None
        if len(labels) != store.count:
            raise NotAStoreError(f"{store.path}/{store.count}.csv lists {len(labels)} labels for "
                                 f"{store.count} images; the store is damaged")
        return np.array(labels, np.int64)

    def _read_all(self, store):
        images = np.empty((store.count, *store.shape), np.uint8)
        _ArticleDiskHandle(store, None).read_into(images, range(store.count))
        return images, self._labels(store)

    def _handle(self, store):
        return _ArticleDiskHandle(store, self._labels(store))


class _ArticleDiskHandle(Handle):
    def __init__(self, store: Store, labels):
        self.store, self.labels = store, labels

    def where(self, pos):
        return f"{self.store.first_id + pos}.png"

    def stored(self, pos):
        try:
            with open(self.store.file(self.where(pos)), "rb") as f:
                return f.read(), int(self.labels[pos])
        except FileNotFoundError:
            raise NotAStoreError(self.store.missing(self.where(pos))) from None

    def read_into(self, out: np.ndarray, positions) -> None:
        """Decode the images at `positions` into out[0], out[1], ... the article's way."""
        store = self.store
        rows = out[:, :, :, 0] if store.shape[2] == 1 else out  # greyscale PNGs decode to (H, W)
        want = rows.shape[1:]
        root, first = store.file(""), store.first_id
        for k, p in enumerate(positions):
            name = f"{first + p}.png"
            try:
                with Image.open(root + name) as im:
                    a = np.array(im)
            except FileNotFoundError:
                raise NotAStoreError(store.missing(name)) from None
            except OSError as e:  # not a PNG Pillow can read
                raise NotAStoreError(f"{store.path}/{name} is not a readable image ({e}); the store is damaged") from None
            if a.shape != want or a.dtype != np.uint8:
                raise NotAStoreError(f"{store.path}/{name} holds a {a.dtype} {a.shape} image, the store's images are "
                                     f"uint8 {store.shape}; the store is damaged")
            rows[k] = a

    def get(self, pos):
        out = np.empty((1, *self.store.shape), np.uint8)
        self.read_into(out, (pos,))
        return out[0], int(self.labels[pos])

    def batch(self, pos, out):
        self.read_into(out, pos.tolist())
        return self.labels[pos]


# ---------------------------------------------------------------------------- article-lmdb


class ArticleImage:
    """The article's `CIFAR_Image`: what article-lmdb pickles, one per image.

    Same attributes as the article's class (channels, size, the pixels as bytes, label) and the
    same `get_image()`. Stores name this class by its module path, imgbench.backends.article:
    moving or renaming it makes existing article-lmdb stores unreadable.
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


class ArticleUnpickler(pickle.Unpickler):
    """Unpickles what article-lmdb stores and nothing else: nothing in a store runs code.

    A value is an ArticleImage whose attributes are ints, a tuple of ints, bytes and the label,
    a numpy integer scalar (the article pickles `labels[i]`), which is rebuilt through numpy's
    `scalar(dtype, bytes)` and `dtype(spec, ...)`. Those are the only globals resolved, and the
    numpy ones only for integer types; any other (say `os.system`) is refused before it is
    looked up, so it never runs.
    """

    _GLOBALS = {
        (__name__, "ArticleImage"): ArticleImage,
        ("numpy._core.multiarray", "scalar"): _scalar,  # numpy 2
        ("numpy.core.multiarray", "scalar"): _scalar,  # numpy 1
        ("numpy", "dtype"): _dtype,
    }

    def find_class(self, module, name):
        try:
            return self._GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: an article-lmdb value "
                                         "holds only an ArticleImage") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id: an article-lmdb value holds only an ArticleImage")


def article_loads(data: bytes):
    """pickle.loads for article-lmdb values, through ArticleUnpickler."""
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
    as the article does, `lmdb.open(path, readonly=True)` (with LMDB's lock file), and gets
    key by key in one transaction, rebuilding each image with `get_image()`.

    Deliberately different:
    - Values are unpickled through ArticleUnpickler, which resolves only ArticleImage and
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
        return _save_sums(tmp, sums)

    def _sums(self, store):
        return _load_sums(store)

    @staticmethod
    def _put_all(env, images, labels, first_id, sums) -> bool:
        """The article's write transaction; False if the map filled up (nothing was written)."""
        try:
            with env.begin(write=True) as txn:
                for i in range(len(images)):
                    value = pickle.dumps(ArticleImage(images[i], labels[i]))
                    sums[i] = integrity.checksum(value, labels[i])  # ours
                    txn.put(f"{first_id + i:08}".encode("ascii"), value)
        except lmdb.MapFullError:
            return False
        return True

    def _read_all(self, store):
        n = store.count
        try:
            env, shared = lmdb.open(store.file(""), readonly=True), False  # the article's open
            _check_size(env, os.stat(store.file("data.mdb")).st_size, store.path)  # ours: no SIGBUS
        except lmdb.Error as e:
            if "already open" not in str(e):
                raise NotAStoreError(f"{store.path} is not a readable {self.name} store ({e})") from None
            env, shared = _acquire(store, True), True  # this process's readers hold it already
        try:
            images = np.empty((n, *store.shape), np.uint8)
            labels = np.empty(n, np.int64)
            entries = env.stat()["entries"]
            if entries != n:
                raise NotAStoreError(f"{store.path}: lmdb holds {entries} values, its manifest says {n} "
                                     "images; the store is damaged")
            with env.begin() as txn:
                _unpickle_into(store, txn, range(store.first_id, store.first_id + n), images, labels)
        finally:
            if shared:
                _release(env)
            else:
                env.close()
        return images, labels

    def _env(self, store: Store) -> lmdb.Environment:  # for the handle, as lmdb_store's
        return _acquire(store, True)

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


class _ArticleLmdbHandle(_LmdbHandle):
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


# ---------------------------------------------------------------------------- article-hdf5


class ArticleHdf5Backend(Backend):
    """The article's HDF5: `{N}_many.h5` with datasets `images` and `meta`, both big-endian uint8.

    Reproduced: `h5py.File(path, "w")`, then `create_dataset("images", shape, h5py.h5t.STD_U8BE,
    data=images)` and `create_dataset("meta", shape, h5py.h5t.STD_U8BE, data=labels)`
    (contiguous, unfiltered, in HDF5's big-endian uint8 type), and closing the file. A whole
    store is read as `np.array(f["/images"]).astype("uint8")`: h5py's read with its type
    conversion, then numpy's copy.

    Labels are stored as the article stores them, in one unsigned byte: labels outside 0..255
    are refused with a ValueError before anything is written (HDF5 would clip them silently).

    Deliberately different: the article opens the file for reading with "r+" and never closes
    it; we open it with "r" and close it. Neither changes what a read costs (the same open, the
    same read; closing is the release of a handle the article leaves to the garbage collector),
    and "r" neither needs write permission nor can change the store. Labels are returned as
    int64 (the article's `.astype("uint8")` of 0..255 labels, widened). Reads by ids and Readers
    (read_single, Reader) go through h5py: one image as `ds[i].astype("uint8")` (the article's
    single-image read), a batch as reads of the runs of consecutive ids (the hdf5 backend's
    chunked reader, correct for any order and repeats); never the hdf5 backend's memory map of
    the dataset's bytes: reading through h5py is the article's way and what is measured.
    """

    name = "article-hdf5"
    RAGGED = False  # the article's code stores one array of one shape

    def __init__(self, *, fsync: bool = False):
        super().__init__(fsync=fsync)

    @staticmethod
    def _file(store_dir, n: int):
        return store_dir / f"{n}_many.h5"

    def _create(self, path, images, labels, first_id, overwrite, sources=None):
        lo, hi = HDF5_LABELS
        if labels.min() < lo or labels.max() > hi:
            bad = labels[(labels < lo) | (labels > hi)][0]
            raise ValueError(f"{self.name} stores labels as the article does, as unsigned 8-bit integers "
                             f"(HDF5 STD_U8BE): labels must lie in {lo}..{hi}, got {bad}; "
                             "use the hdf5 backend for other labels")
        return super()._create(path, images, labels, first_id, overwrite, sources)

    def _write(self, tmp, images, labels, first_id, sources):
        # ours, not the article's: the checksums (big-endian uint8: the same bytes), hashed beside the writing
        hashing = integrity.Hashing(integrity.rows, len(images), images, labels)
        with hashing, h5py.File(self._file(tmp, len(images)), "w") as f:
            hashing.start()
            f.create_dataset("images", np.shape(images), h5py.h5t.STD_U8BE, data=images)
            f.create_dataset("meta", np.shape(labels), h5py.h5t.STD_U8BE, data=labels.astype(np.uint8))
        return _save_sums(tmp, hashing.result())

    def _sums(self, store):
        return _load_sums(store)

    def _open(self, store: Store):
        path = self._file(store.path, store.count)
        try:
            f = h5py.File(store.file(path.name), "r")
        except OSError as e:
            raise NotAStoreError(f"{store.path} is not a readable {self.name} store ({e})") from None
        images, meta = f.get("images"), f.get("meta")
        if (not isinstance(images, h5py.Dataset) or images.shape != (store.count, *store.shape)
                or not isinstance(meta, h5py.Dataset) or meta.shape != (store.count,)):
            f.close()
            raise NotAStoreError(f"{path} has no images dataset of shape {(store.count, *store.shape)} "
                                 f"and meta dataset of {store.count} labels; not an {self.name} store")
        return f, images

    def _read_all(self, store):
        f, images = self._open(store)
        with f:
            return np.array(images).astype("uint8"), np.array(f["/meta"]).astype(np.int64)

    def _handle(self, store):
        f, images = self._open(store)
        try:
            h = _ArticleHdf5Handle(f, images, np.array(f["/meta"]).astype(np.int64))
            h.file = self._file(store.path, store.count).name
            return h
        except BaseException:
            f.close()
            raise


class _ArticleHdf5Handle(_ChunkedHandle):
    """h5py reads of the big-endian dataset: one image the article's way, batches by runs."""

    def get(self, pos):
        return self.ds[pos].astype("uint8"), int(self.labels[pos])
