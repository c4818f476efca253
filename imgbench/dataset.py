"""The dataset stage: an archive -> arrays on disk -> the training set repeated to n images."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """np.save through a temporary sibling, so a crash never leaves a truncated .npy."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
