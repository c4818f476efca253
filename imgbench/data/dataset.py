"""The dataset stage: an archive -> arrays on disk -> the training set repeated to n images."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """np.save through a temporary sibling, so a crash never leaves a truncated .npy."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")  # fixed: a killed write's is replaced by the next
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def unpack(archive, images_out, labels_out, classes_out) -> tuple[int, ...]:
    from .cifar import load_archive

    images, labels, classes = load_archive(archive)
    save_npy(images_out, images)
    save_npy(labels_out, labels)
    Path(classes_out).write_text(json.dumps(classes, indent=1) + "\n")
    return images.shape


def repeat_to(images: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The set repeated (whole copies, then a prefix) until it has n images, as the article doubles it."""
    if len(images) == 0:
        raise ValueError("cannot repeat an empty dataset")
    reps = -(-n // len(images))
    idx = np.tile(np.arange(len(images)), reps)[:n]
    return images[idx], labels[idx]


# ---------------------------------------------------------------------------- a job's source images

@dataclass
class Source:
    """The first n images of a dataset repeated to n images, as a benchmark job stores them.

    `images`: a 4-D array, or an ImageList when the images differ in shape (its offsets repeat:
    repeated images share their pixels); `sources`: the files' bytes (folder datasets), else None;
    `unique`: images in the dataset before it was repeated."""
    images: object
    labels: np.ndarray
    sources: object = None
    unique: int = 0

    def repeat_index(self) -> np.ndarray:
        return np.arange(len(self.labels)) % self.unique


def load_source(inputs, n: int) -> Source:
    """A job's Source from the dataset stage's files (`inputs` maps names to paths): a CIFAR-format
    dataset's `images`/`labels` (already repeated), or a folder dataset's saved arrays."""
    from .folder import load_saved
    from ..images import Blobs, ImageList

    if "shapes" not in inputs.keys():
        images = np.ascontiguousarray(np.load(inputs["images"], mmap_mode="r")[:n])
        unique = len(np.load(inputs["unique"], mmap_mode="r")) if "unique" in inputs.keys() else n
        return Source(images, np.load(inputs["labels"])[:n], None, unique)
    data = load_saved(Path(inputs["shapes"]).parent)
    m = len(data.labels)
    idx = np.arange(n) % m
    # in memory (not mapped from the file) before any clock starts, like the CIFAR arrays
    pixels = ImageList(np.array(data.images.data), data.images.offsets, data.images.shapes)
    data.sources = Blobs(np.array(data.sources.data), data.sources.offsets, data.sources.sizes)
    images = pixels[idx]
    if (images.shapes == images.shapes[0]).all():
        # one shape: a 4-D array in memory before any clock starts, the fixed layout's input
        images = np.stack([np.asarray(pixels[i]) for i in range(min(n, m))])[idx]
    return Source(images, data.labels[idx], data.sources[idx], m)


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))  # Pillow codes without the GIL


def encode_all(images, codec):
    """Every image's bytes in `codec` (Blobs), encoded in threads, in order."""
    from concurrent.futures import ThreadPoolExecutor

    from ..images import Blobs

    with ThreadPoolExecutor(_threads()) as pool:
        return Blobs.from_bytes(list(pool.map(lambda i: codec.encode(np.asarray(images[i])), range(len(images)),
                                              chunksize=64)))


def decode_reference(images, blobs, codec, log=print):
    """What a store of `codec` must read back for each image: a decode of its encoded bytes, made
    without any backend, in threads; and the PSNR of all of them against the images, in dB."""
    from concurrent.futures import ThreadPoolExecutor

    from ..images import ImageList, psnr

    n = len(images)
    out = ImageList.allocate(images.shapes) if isinstance(images, ImageList) else np.empty_like(images)
    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(lambda i: codec.decode_into(out[i], blobs[i]), range(n), chunksize=64))
    value = psnr(out, images)
    log(f"{codec.encoding} reference of {n:,} images: PSNR {value:.2f} dB against the source")
    return out, value


def load_blobs(data_path, sizes_path):
    from ..images import Blobs

    sizes = np.load(sizes_path)
    return Blobs(np.load(data_path), np.cumsum(sizes) - sizes, sizes)


def save_reference(path, images, value: float) -> None:
    from ..images import ImageList

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, images.flat() if isinstance(images, ImageList) else images)
    path.with_suffix(".json").write_text(json.dumps({"psnr_db": value}) + "\n")


def load_reference(path, source: Source):
    """A saved reference as a job's expected images (the same repeat and layout as `source`),
    and its PSNR."""
    from ..images import ImageList

    path = Path(path)
    ref = np.load(path, mmap_mode="r")
    idx = source.repeat_index()
    if ref.ndim == 4:
        expected = np.take(ref, idx, axis=0)
    else:
        shapes = np.load(path.parent.parent / "shapes.npy")
        sizes = shapes.prod(axis=1)
        full = ImageList(np.asarray(ref), np.cumsum(sizes) - sizes, shapes)
        expected = full[idx]
        if not isinstance(source.images, ImageList):
            expected = np.stack([np.asarray(full[i]) for i in range(min(len(idx), len(full)))])[idx]
    return expected, json.loads(path.with_suffix(".json").read_text())["psnr_db"]
