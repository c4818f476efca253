"""An offline stand-in for CIFAR-10: 32x32 crops of a photograph that matplotlib ships.

Each label is a region of the photo (a 5 x 2 grid); a crop is centred in its label's region,
at a random scale and with a random mirror, so the images are natural pictures whose PNG
sizes and decode times resemble CIFAR's, not noise. Deterministic for a given seed.

`build_folder` makes the same kind of crops as a folder of photo files of varied sizes and
formats (mostly JPEG; some PNG, grey, RGBA and EXIF-rotated), for the folder dataset.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserError

PHOTO = "grace_hopper.jpg"
PRESENT = "Minduka_Present_Blue_Pack.png"  # a 128 x 128 RGBA photo, for files with real transparency
MARKER = ".imgbench-sample"  # hidden, so the folder dataset skips it; lets a rebuild delete the folder
# Kinds of file in a sample folder and their shares.
KINDS = ("jpeg", "png", "grey-jpeg", "grey-png", "rgba-png", "rotated-jpeg")
KIND_P = (0.75, 0.15, 0.025, 0.025, 0.03, 0.02)
JPEG_EXTS, JPEG_EXT_P = (".jpg", ".JPG", ".jpeg"), (0.8, 0.1, 0.1)
PNG_EXTS, PNG_EXT_P = (".png", ".PNG"), (0.9, 0.1)
ROWS, COLS = 5, 2
CLASSES = [f"{r}-{c}" for r in ("top", "upper", "middle", "lower", "bottom") for c in ("left", "right")]


def photo(name: str = PHOTO, mode: str = "RGB") -> np.ndarray:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data(name)) as im:
        return np.asarray(im.convert(mode))


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


def build_folder(root, n_files: int = 2000, seed: int = 0) -> None:
    """A folder of n_files photo files in class folders (root/{class}/{i:05d}.jpg, ...): crops of
    the photo, class = region as in make_images, sides 64..640 drawn log-uniformly (most are
    small), of the KINDS above. Built beside root and renamed into place; a root that exists is
    replaced only if it is empty or an earlier build_folder's output."""
    root = Path(os.path.abspath(root))  # "." has no name to put a temporary sibling beside
    _check_replaceable(root)
    src = Image.fromarray(photo())
    present = Image.fromarray(photo(PRESENT, "RGBA"))
    h_src, w_src = src.height, src.width
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(len(CLASSES)), n_files)
    rng.shuffle(labels)
    # log-uniform sides: mean area about (576 / ln 10)^2 = 63k pixels
    sides = np.exp(rng.uniform(np.log(64), np.log(641), (n_files, 2))).astype(int).clip(64, 640)
    kinds = rng.choice(len(KINDS), n_files, p=KIND_P)
    fy, fx, scale, flip, pick = rng.random((5, n_files))
    qualities = rng.integers(75, 96, n_files)
    jpeg_ext = rng.choice(len(JPEG_EXTS), n_files, p=JPEG_EXT_P)
    png_ext = rng.choice(len(PNG_EXTS), n_files, p=PNG_EXT_P)

    def write(i: int) -> None:
        kind = KINDS[kinds[i]]
        h, w = int(sides[i, 0]), int(sides[i, 1])
        row, col = divmod(int(labels[i]), COLS)
        # the largest crop of the image's aspect that fits the photo, times 0.25..1
        ch = min(h_src, w_src * h / w) * (0.25 + 0.75 * scale[i])
        cw = ch * w / h
        y = float(np.clip((row + fy[i]) * h_src / ROWS - ch / 2, 0, h_src - ch))
        x = float(np.clip((col + fx[i]) * w_src / COLS - cw / 2, 0, w_src - cw))
        if kind == "rgba-png" and pick[i] < 0.5:
            im = present.resize((w, h), Image.Resampling.BILINEAR)
        else:
            im = src.resize((w, h), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch), reducing_gap=2.0)
            if flip[i] < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if kind.startswith("grey"):
            im = im.convert("L")
        elif kind == "rgba-png" and im.mode != "RGBA":  # alpha fading from opaque at the top
            alpha = np.linspace(255, 32, h).astype(np.uint8)[:, None].repeat(w, axis=1)
            im.putalpha(Image.fromarray(alpha, "L"))
        ext = PNG_EXTS[png_ext[i]] if kind.endswith("png") else JPEG_EXTS[jpeg_ext[i]]
        path = tmp / CLASSES[labels[i]] / f"{i:05d}{ext}"
        if kind.endswith("png"):
            im.save(path, format="PNG", compress_level=1)  # level 6: 3x the time for 7% smaller files
        elif kind == "rotated-jpeg":
            # stored as a camera held sideways stores it: the tag says how to turn it upright
            orientation = 6 if pick[i] < 0.5 else 8
            exif = Image.Exif()
            exif[0x0112] = orientation
            stored = im.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
            stored.save(path, format="JPEG", quality=int(qualities[i]), exif=exif)
        else:
            im.save(path, format="JPEG", quality=int(qualities[i]))

    tmp = root.with_name(f".{root.name}.tmp")  # fixed: a killed build's is deleted by the next
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for c in CLASSES:
            (tmp / c).mkdir(parents=True)
        (tmp / MARKER).write_text(f"imgbench sample folder: n_files={n_files} seed={seed}\n")
        # Pillow releases the GIL to resize, encode and write, so threads use every core; every
        # random number was drawn above, so the files do not depend on the order threads run in
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(write, range(n_files)))
        _check_replaceable(root)
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(root: Path) -> None:
    if not root.exists() and not root.is_symlink():
        return
    if not root.is_dir() or root.is_symlink():
        raise UserError(f"{root} exists and is not a plain directory; remove it or choose another path for the "
                        "sample folder")
    if (root / MARKER).exists() or not any(root.iterdir()):
        return
    raise UserError(f"{root} exists and is not a sample folder imgbench built (no {MARKER} in it); "
                    "remove it or choose another path for the sample folder")
