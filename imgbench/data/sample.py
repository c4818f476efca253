"""An offline stand-in for CIFAR-10: 32x32 crops of a photograph that matplotlib ships.

Each label is a region of the photo (a 5 x 2 grid); a crop is centred in its label's region,
at a random scale and with a random mirror, so the images are natural pictures whose PNG
sizes and decode times resemble CIFAR's, not noise. Deterministic for a given seed.

`build_folder` makes a folder of photo files for the folder dataset: crops of the 21 natural
photographs installed packages ship (scikit-image, scikit-learn, matplotlib), of varied sizes
and kept as a photo collection keeps them (mostly JPEG of varied quality, chroma subsampling and
progressive or not; some PNG, grey, RGBA and EXIF-rotated).
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


# The natural photographs that installed packages ship (no download): scikit-image's data/ (the
# ones that are photographs: not its drawings, test patterns or the horse's silhouette),
# scikit-learn's two sample images, and matplotlib's. Colour ones, then grey ones.
COLOUR = {"astronaut": "skimage", "chelsea": "skimage", "coffee": "skimage", "hubble_deep_field": "skimage",
          "immunohistochemistry": "skimage", "retina": "skimage", "rocket": "skimage", "motorcycle": "skimage",
          "china": "sklearn", "flower": "sklearn", "grace_hopper": "matplotlib"}
GREY = {"brick": "skimage", "camera": "skimage", "coins": "skimage", "grass": "skimage", "gravel": "skimage",
        "moon": "skimage", "page": "skimage", "text": "skimage", "cell": "skimage", "clock": "skimage"}
PHOTOGRAPHS = {**COLOUR, **GREY}
GREY_SHARE = 0.2  # of a folder's files: a collection is mostly colour
# How each file is kept (of a colour photograph; a grey one is a grey JPEG or PNG) and how often.
FILE_KINDS = ("jpeg", "png", "rgba-png", "rotated-jpeg")
FILE_KIND_P = (0.82, 0.12, 0.03, 0.03)
SUBSAMPLING, SUBSAMPLING_P = (2, 0, 1), (0.7, 0.2, 0.1)  # Pillow's 4:2:0, 4:4:4, 4:2:2
PROGRESSIVE_P = 0.25
LARGE_P = 0.15  # files whose longer side is 640..1024 (a camera's downsized photo); the rest 64..640
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)
MAX_UPSCALE = 2.0  # a crop is enlarged at most this much (the sources are 172..1411 pixels a side)


def photograph(name: str) -> np.ndarray:
    """One of PHOTOGRAPHS as (H, W, C) uint8 (C = 3, or 1 for the grey ones), from its package."""
    package = PHOTOGRAPHS[name]
    if package == "matplotlib":
        a = photo(f"{name}.jpg")
    elif package == "sklearn":
        from sklearn.datasets import load_sample_image

        a = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        a = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    a = np.asarray(a, np.uint8)
    return np.ascontiguousarray(a[:, :, None] if a.ndim == 2 else a[:, :, :3])


def build_folder(root, n_files: int = 1000, seed: int = 0) -> None:
    """A folder of n_files photo files in class folders, one per photograph
    (root/{photograph}/{i:05d}.jpg, ...): crops of PHOTOGRAPHS at random places and scales, the
    colour ones (four files in five) each as likely as the others, likewise the grey ones. Longer
    side 64..640 drawn log-uniformly, or for LARGE_P of them 640..1024, at a common aspect ratio
    either way up; a crop enlarged at most MAX_UPSCALE. Kept as FILE_KINDS: JPEG at quality
    70..95 with 4:2:0, 4:4:4 or 4:2:2 chroma, some progressive, some EXIF-rotated; PNG; RGBA PNG
    (matplotlib's present, or a photograph with an alpha ramp). Built beside root and renamed
    into place; a root that exists is replaced only if it is empty or an earlier
    build_folder's output. Deterministic for a given seed."""
    root = Path(os.path.abspath(root))  # "." has no name to put a temporary sibling beside
    _check_replaceable(root)
    sources = {name: Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
               for name, a in ((n, photograph(n)) for n in PHOTOGRAPHS)}
    present = Image.fromarray(photo(PRESENT, "RGBA"))
    names = list(PHOTOGRAPHS)
    p = np.array([(1 - GREY_SHARE) / len(COLOUR)] * len(COLOUR) + [GREY_SHARE / len(GREY)] * len(GREY))
    rng = np.random.default_rng(seed)
    which = rng.choice(len(names), n_files, p=p)
    large = rng.random(n_files) < LARGE_P
    longer = np.where(large, np.exp(rng.uniform(np.log(640), np.log(1025), n_files)),
                      np.exp(rng.uniform(np.log(64), np.log(641), n_files)))
    aspect = rng.choice(ASPECTS, n_files)
    portrait = rng.random(n_files) < 0.3
    kinds = rng.choice(len(FILE_KINDS), n_files, p=FILE_KIND_P)
    fy, fx, scale, flip, pick = rng.random((5, n_files))
    qualities = rng.integers(70, 96, n_files)
    subsampling = rng.choice(SUBSAMPLING, n_files, p=SUBSAMPLING_P)
    progressive = rng.random(n_files) < PROGRESSIVE_P
    jpeg_ext = rng.choice(len(JPEG_EXTS), n_files, p=JPEG_EXT_P)
    png_ext = rng.choice(len(PNG_EXTS), n_files, p=PNG_EXT_P)

    def write(i: int) -> None:
        name = names[which[i]]
        src = sources[name]
        grey = name in GREY
        kind = ("png" if pick[i] < 0.3 else "jpeg") if grey else FILE_KINDS[kinds[i]]
        big = int(longer[i])
        small = max(64, round(big / aspect[i]))
        h, w = (big, small) if portrait[i] else (small, big)
        # the largest crop of the image's aspect that fits the photograph, times 0.3..1
        ch = min(src.height, src.width * h / w) * (0.3 + 0.7 * scale[i])
        if h > MAX_UPSCALE * ch:  # enlarged at most MAX_UPSCALE: a smaller file instead
            h, w = max(64, int(MAX_UPSCALE * ch)), max(64, int(MAX_UPSCALE * ch * w / h))
        cw = ch * w / h
        y, x = fy[i] * (src.height - ch), fx[i] * max(0.0, src.width - cw)
        if kind == "rgba-png" and pick[i] < 0.5:
            im = present.resize((w, h), Image.Resampling.BILINEAR)
        else:
            im = src.resize((w, h), Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch), reducing_gap=2.0)
            if flip[i] < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if kind == "rgba-png" and im.mode != "RGBA":  # alpha fading from opaque at the top
            alpha = np.linspace(255, 32, h).astype(np.uint8)[:, None].repeat(w, axis=1)
            im.putalpha(Image.fromarray(alpha, "L"))
        ext = PNG_EXTS[png_ext[i]] if kind.endswith("png") else JPEG_EXTS[jpeg_ext[i]]
        path = tmp / name / f"{i:05d}{ext}"
        jpeg = dict(format="JPEG", quality=int(qualities[i]), subsampling=int(subsampling[i]),
                    progressive=bool(progressive[i]))
        if kind.endswith("png"):
            im.save(path, format="PNG", compress_level=1)  # level 6: 3x the time for 7% smaller files
        elif kind == "rotated-jpeg":
            # stored as a camera held sideways stores it: the tag says how to turn it upright
            orientation = 6 if pick[i] < 0.5 else 8
            exif = Image.Exif()
            exif[0x0112] = orientation
            stored = im.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
            stored.save(path, exif=exif, **jpeg)
        else:
            im.save(path, **jpeg)

    tmp = root.with_name(f".{root.name}.tmp")  # fixed: a killed build's is deleted by the next
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for c in names:
            (tmp / c).mkdir(parents=True)
        (tmp / MARKER).write_text(f"imgbench sample folder: n_files={n_files} seed={seed}\n")
        # Pillow releases the GIL to resize, encode and write, so threads use every core; every
        # random number was drawn above, so the files do not depend on the order threads run in
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(write, range(n_files)))
        for c in names:  # a class no file drew (a folder of a few files) is not an empty folder
            if not any((tmp / c).iterdir()):
                (tmp / c).rmdir()
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
