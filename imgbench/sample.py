"""An offline stand-in for CIFAR-10: 32x32 crops of a photograph that matplotlib ships.

Each label is a region of the photo (a 5 x 2 grid); a crop is centred in its label's region,
at a random scale and with a random mirror, so the images are natural pictures whose PNG
sizes and decode times resemble CIFAR's, not noise. Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

PHOTO = "grace_hopper.jpg"
ROWS, COLS = 5, 2
CLASSES = [f"{r}-{c}" for r in ("top", "upper", "middle", "lower", "bottom") for c in ("left", "right")]


def photo() -> np.ndarray:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data(PHOTO)) as im:
        return np.asarray(im.convert("RGB"))


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 32, 32, 3) uint8 and balanced labels (n,) uint8 in 0..9."""
    src = photo()
    h, w, _ = src.shape
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(len(CLASSES), dtype=np.uint8), n)
    rng.shuffle(labels)
    sizes = rng.integers(32, 193, n)
    fy, fx, flip = rng.random(n), rng.random(n), rng.random(n) < 0.5
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        row, col = divmod(int(labels[i]), COLS)
        s = int(sizes[i])
        cy = (row + fy[i]) * h / ROWS
        cx = (col + fx[i]) * w / COLS
        y = int(np.clip(cy - s / 2, 0, h - s))
        x = int(np.clip(cx - s / 2, 0, w - s))
        crop = Image.fromarray(src[y:y + s, x:x + s]).resize((32, 32), Image.Resampling.BILINEAR)
        a = np.asarray(crop)
        out[i] = a[:, ::-1] if flip[i] else a
    return out, labels


def build_archive(path, images_per_batch: int = 10000, seed: int = 0) -> None:
    """A CIFAR-10 python archive of sample images: 5 training batches and a test batch."""
    from . import cifar

    train, train_labels = make_images(5 * images_per_batch, seed)
    test, test_labels = make_images(images_per_batch, seed + 1)
    cifar.write_archive(path, train, train_labels, test, test_labels, CLASSES)
