"""Decoders: what turns a stored image's bytes back into pixels, and at what size.

DECODERS, and the file formats each reads itself:
- "pillow": JPEG (its libjpeg-turbo), PNG, WebP, AVIF (and GIF, BMP, TIFF in source stores);
- "simplejpeg": libjpeg-turbo through its own small binding, JPEG only;
- "opencv": cv2.imdecode (opencv-python-headless): JPEG, PNG, WebP, AVIF;
- "imagecodecs": libjpeg-turbo, libspng, libwebp, libavif, libjxl: JPEG, PNG, WebP, AVIF, JPEG XL.
A file a decoder does not read goes to Pillow (and JPEG XL, which Pillow does not read, to
imagecodecs): so a source store's GIFs read with any decoder, and `reads(decoder, coding)`
says whether a measurement of a decoder on a coding would measure that decoder at all.

Every decoder gives what Pillow gives: (H, W, C) uint8 with the store's channels (see `fit`). In
a source store the files' EXIF orientation is applied, as Pillow's path does: the other decoders
read JPEG files there (any other file goes to Pillow), and the orientation tag is read from the
JPEG's APP1 segment here. Before a decoder allocates, the file's declared size is checked
against the store's (from the header, or by decoding into the caller's array).

Every decoder runs on one thread: the readers decode in processes, one per core.

`decode_resized` decodes at training size (the shorter side `size`): a JPEG at the largest
DCT scaling (1/2, 1/4, 1/8) that keeps the shorter side at least `size` where the decoder
offers one (Pillow's `draft`, simplejpeg's min_height/min_width, OpenCV's IMREAD_REDUCED_*;
imagecodecs has none), then Pillow's antialiased bilinear resize to exactly that size.
"""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

DECODERS = ("pillow", "simplejpeg", "opencv", "imagecodecs")
DEFAULT = "pillow"
READS = {"pillow": ("jpeg", "png", "webp", "avif"), "simplejpeg": ("jpeg",),
         "opencv": ("jpeg", "png", "webp", "avif"), "imagecodecs": ("jpeg", "png", "webp", "avif", "jxl")}
SCALES = ("pillow", "simplejpeg", "opencv")  # the decoders with a reduced-size (DCT-scaled) JPEG decode
MODULES = {"simplejpeg": "simplejpeg", "opencv": "cv2", "imagecodecs": "imagecodecs"}
PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}

try:  # one thread per decode: the readers' processes are the parallelism (Pillow's default: every core)
    from PIL import AvifImagePlugin

    AvifImagePlugin.DEFAULT_MAX_THREADS = 1
except ImportError:  # a Pillow without AVIF
    pass


class DecodeError(ValueError):
    pass


def check_decoder(decoder: str) -> str:
    """`decoder` if it is one of DECODERS and installed, else ValueError saying the fix."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    module = MODULES.get(decoder)
    if module:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            package = {"cv2": "opencv-python-headless"}.get(module, module)
            raise ValueError(f"decoder {decoder} needs the package {package}: pip install {package}")
    return decoder


def kind_of_coding(coding: str) -> str:
    """The file format of a coding ("png-l6" -> "png", "webp-lossless" -> "webp", "source" -> "jpeg":
    a folder's files are mostly JPEG)."""
    base = coding.partition("-")[0]
    return "jpeg" if base == "source" else base


def reads(decoder: str, coding: str) -> bool:
    """Whether `decoder` itself decodes the files of `coding` (not by handing them to Pillow)."""
    return kind_of_coding(coding) in READS[decoder]


def kind(data) -> str:
    """The file format of an image file's bytes: jpeg, png, webp, avif, jxl, or "other"."""
    head = bytes(data[:16])
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\0\0\0\x0cJXL \r\n\x87\n":
        return "jxl"
    return "other"


# ------------------------------------------------------------------------- JPEG headers


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header(data) -> tuple[int, int, int, int]:
    """(height, width, components, orientation) of a JPEG from its markers up to the frame header
    (orientation: the EXIF tag, 1 if none). DecodeError if there is no frame header."""
    data = bytes(data[:1 << 20]) if not isinstance(data, bytes) else data
    i, n, orientation = 2, len(data), 1
    while i + 4 <= n:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack_from(">H", data, i + 2)[0]
        if marker in _SOF and i + 10 <= n:
            _, h, w, comps = struct.unpack_from(">BHHB", data, i + 4)
            return h, w, comps, orientation
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\0\0":
            orientation = _exif_orientation(data[i + 10:i + 2 + length])
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise DecodeError("its JPEG markers hold no frame header")


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag (0x0112) of IFD0 of an EXIF TIFF block; 1 if absent or unreadable."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    e = "<" if tiff[:2] == b"II" else ">"
    off = struct.unpack_from(e + "I", tiff, 4)[0]
    if off + 2 > len(tiff):
        return 1
    for k in range(struct.unpack_from(e + "H", tiff, off)[0]):
        p = off + 2 + 12 * k
        if p + 12 > len(tiff):
            return 1
        tag, typ = struct.unpack_from(e + "HH", tiff, p)
        if tag == 0x0112 and typ == 3:
            value = struct.unpack_from(e + "H", tiff, p + 8)[0]
            return value if 1 <= value <= 8 else 1
    return 1


def orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """`a` turned upright as EXIF `orientation` says (what Pillow's exif_transpose does)."""
    if orientation in (2, 4, 5, 7):
        a = a[:, ::-1] if orientation == 2 else a[::-1] if orientation == 4 else a
    if orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 5:
        a = a.transpose(1, 0, 2)
    elif orientation == 6:
        a = a.transpose(1, 0, 2)[:, ::-1]
    elif orientation == 7:
        a = a.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        a = a.transpose(1, 0, 2)[::-1]
    return a


def png_size(data) -> tuple[int, int]:
    w, h = struct.unpack_from(">II", bytes(data[16:24]))
    return h, w


# ------------------------------------------------------------------------- channels


def fit(a: np.ndarray, channels: int) -> np.ndarray:
    """A decoder's array (H, W) or (H, W, k), uint8 or uint16, as (H, W, channels) uint8 the way
    Pillow converts modes: 16 bits scaled (/257, rounded), grey repeated, alpha dropped or 255,
    colour to grey by ITU-R 601-2 luma with Pillow's integer rounding."""
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    k = a.shape[2]
    if k == channels:
        return a
    if k in (1, 2):  # grey, grey + alpha
        g = a[:, :, :1]
        if channels == 1:
            return g
        rgb = np.repeat(g, 3, axis=2)
        return rgb if channels == 3 else np.concatenate([rgb, a[:, :, 1:2] if k == 2 else _opaque(a)], axis=2)
    rgb = a[:, :, :3]
    if channels == 3:
        return rgb
    if channels == 4:
        return np.concatenate([rgb, _opaque(a)], axis=2)
    c = rgb.astype(np.uint32)
    return ((c[:, :, 0] * 19595 + c[:, :, 1] * 38470 + c[:, :, 2] * 7471 + 0x8000) >> 16).astype(np.uint8)[:, :, None]


def _opaque(a):
    return np.full(a.shape[:2] + (1,), 255, np.uint8)


# ------------------------------------------------------------------------- decoding


def _pillow(data, fmt: str | None, channels: int, size, source: bool, draft=None) -> np.ndarray:
    """Pillow's decode; `size` (H, W) the image must declare (checked before decoding)."""
    from .images import FILE_FORMATS, to_array

    with Image.open(io.BytesIO(data), formats=(fmt,) if fmt else FILE_FORMATS) as im:
        declared = (im.height, im.width)
        if size is not None and declared != tuple(size) and not (source and declared == tuple(size)[::-1]):
            _check(size, declared)
        if draft is not None and im.format == "JPEG":
            im.draft(im.mode, draft)
        im.load()
        if source:
            return to_array(im, {1: "L", 3: "RGB", 4: "RGBA"}[channels])
        a = np.asarray(im)
    return fit(a, channels)


def decode(data, channels: int, decoder: str = DEFAULT, size=None, source: bool = False, out=None,
           scale_to: int | None = None) -> np.ndarray:
    """The image file `data` as (H, W, channels) uint8, by `decoder` (into `out` when given).

    size: the (H, W) the store says it has (after EXIF orientation, for `source`), checked before
    anything is allocated; source: the bytes are an original file (any of Pillow's FILE_FORMATS,
    EXIF orientation applied); scale_to: decode a JPEG at the smallest DCT scale whose shorter side
    is at least this (see decode_resized)."""
    k = kind(data)
    if k == "jxl":
        if source:
            raise DecodeError("it is a JPEG XL file, which a source store does not keep")
        decoder = "imagecodecs"
    elif decoder != "pillow" and (k not in READS[decoder] or (source and k != "jpeg")):
        decoder = "pillow"
    if decoder == "pillow":
        fmt = None if source else PILLOW_FORMATS.get(k, "?")
        if k == "jpeg" and scale_to:
            h, w, _, _ = jpeg_header(data)
            f = _factor(h, w, scale_to)
            a = _pillow(data, fmt, channels, size, source, draft=(-(-w // f), -(-h // f)))
        else:
            a = _pillow(data, fmt, channels, size, source)
        return _into(out, a)
    orientation, f = 1, 1
    if k == "jpeg":
        h, w, comps, orientation = jpeg_header(data)
        if not source:
            orientation = 1
        if size is not None:
            _check(size, (w, h) if orientation >= 5 else (h, w))
        if comps == 4:  # CMYK or YCCK: only Pillow converts them as Pillow does
            return _into(out, _pillow(data, None if source else "JPEG", channels, None, source))
        f = _factor(h, w, scale_to) if scale_to else 1
    elif k == "png" and size is not None:
        _check(size, png_size(data))
    elif k in ("webp", "avif") and size is not None and decoder == "opencv":
        with Image.open(io.BytesIO(data), formats=(PILLOW_FORMATS[k],)) as im:  # its header only
            _check(size, (im.height, im.width))
    if decoder == "simplejpeg":
        a = _simplejpeg(data, channels, f, out if orientation == 1 and f == 1 else None, (h, w) if f > 1 else None)
    elif decoder == "opencv":
        a = _opencv(data, k, channels, f if k == "jpeg" else 1)
    else:
        a = _imagecodecs(data, k, channels, size if k in ("webp", "avif", "jxl") else None,
                         out if orientation == 1 and not scale_to else None)
    a = fit(a, channels)
    if orientation != 1:
        a = orient(a, orientation)
    return _into(out, a)


def _check(size, declared) -> None:
    if tuple(size[:2]) != tuple(declared):
        raise DecodeError(f"it declares a {declared[0]} x {declared[1]} image, the store says "
                          f"{size[0]} x {size[1]}")


def _into(out, a):
    if out is None:
        return a
    if out.shape != a.shape:
        raise DecodeError(f"it holds a {a.shape} image, the store says {out.shape}")
    if out is not a:
        out[...] = a
    return out


def _factor(h: int, w: int, size: int) -> int:
    """The largest JPEG DCT scale-down (1, 2, 4, 8) that keeps the shorter side at least `size`."""
    short = min(h, w)
    return next((f for f in (8, 4, 2) if -(-short // f) >= size), 1)


def _simplejpeg(data, channels: int, factor: int, out, hw=None):
    import simplejpeg

    space = {1: "GRAY", 3: "RGB", 4: "RGBA"}[channels]
    if factor > 1:  # it picks the smallest scale of at least these sides
        return simplejpeg.decode_jpeg(data, colorspace=space, min_height=-(-hw[0] // factor),
                                      min_width=-(-hw[1] // factor))
    if out is not None and out.flags.c_contiguous:
        simplejpeg.decode_jpeg(data, colorspace=space, buffer=out)
        return out
    return simplejpeg.decode_jpeg(data, colorspace=space)


def _opencv(data, k: str, channels: int, factor: int):
    import cv2

    buf = np.frombuffer(data, np.uint8)
    if channels == 4:
        a = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if a is not None and a.ndim == 3:
            a = cv2.cvtColor(a, cv2.COLOR_BGRA2RGBA if a.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    else:
        flag = {1: cv2.IMREAD_GRAYSCALE, 3: cv2.IMREAD_COLOR_RGB}[channels]
        if factor > 1:
            flag = {(1, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2, (1, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
                    (1, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8, (3, 2): cv2.IMREAD_REDUCED_COLOR_2,
                    (3, 4): cv2.IMREAD_REDUCED_COLOR_4, (3, 8): cv2.IMREAD_REDUCED_COLOR_8}[channels, factor]
            if channels == 3:  # the reduced colour flags give BGR
                a = cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION)
                return None if a is None else cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
        a = cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if a is None:
        raise DecodeError("OpenCV cannot decode it")
    return a


def _imagecodecs(data, k: str, channels: int, size, out):
    import imagecodecs as ic

    if k == "jpeg":
        space = "GRAY" if channels == 1 else "RGB"
        if out is not None and channels != 4:
            return ic.jpeg8_decode(data, outcolorspace=space, out=out)
        return ic.jpeg8_decode(data, outcolorspace=space)
    if k == "png":
        return ic.spng_decode(data)
    if size is not None:  # decoded into an array of the store's size: a file declaring another is refused
        for c in sorted({channels, 3, 4, 1}, key=lambda c: c != channels):
            try:
                return _ic_decode(ic, k, data, np.empty((size[0], size[1], c), np.uint8) if c > 1
                                  else np.empty(tuple(size[:2]), np.uint8))
            except ValueError as e:
                if "shape" not in str(e):
                    raise
        raise DecodeError(f"it does not decode to an image of {size[0]} x {size[1]}")
    return _ic_decode(ic, k, data, None)


def _ic_decode(ic, k, data, out):
    if k == "webp":
        return ic.webp_decode(data, out=out)
    if k == "avif":
        return ic.avif_decode(data, numthreads=1, out=out)
    return ic.jpegxl_decode(data, numthreads=1, out=out)


def training_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(H, W) with the shorter side `size` and the aspect kept (as training's Resize(size))."""
    if h <= w:
        return size, max(1, round(w * size / h))
    return max(1, round(h * size / w)), size


def resize(a: np.ndarray, hw) -> np.ndarray:
    """`a` resized to (H, W) by Pillow's antialiased bilinear filter (torchvision's Resize on an image)."""
    if a.shape[:2] == tuple(hw):
        return a
    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    r = np.asarray(im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
    return r[:, :, None] if r.ndim == 2 else r


def decode_resized(data, channels: int, size: int, decoder: str = DEFAULT, shape=None, source: bool = False,
                   reduce: bool = True) -> np.ndarray:
    """The image at training size: shorter side `size` (see training_size). `reduce`: decode a JPEG
    at a DCT scale (where the decoder has one) before the resize; else decode in full, then resize.
    `shape`: the (H, W, C) the store says, checked before decoding."""
    a = decode(data, channels, decoder, None if shape is None else shape[:2], source,
               scale_to=size if reduce else None)
    if shape is not None:
        h, w = shape[:2]
    else:
        h, w = a.shape[:2]
    return resize(a, training_size(h, w, size))


# ------------------------------------------------------------------------- JPEG XL recompression


def recompress_jpeg(data) -> bytes:
    """A JPEG file losslessly recompressed as JPEG XL (libjxl through imagecodecs): restore_jpeg
    gives back the original bytes. DecodeError naming why for a JPEG it cannot take."""
    import imagecodecs as ic

    if kind(data) != "jpeg":
        raise DecodeError("it is not a JPEG file")
    try:
        return bytes(ic.jpegxl_encode_jpeg(bytes(data)))
    except ic.JpegxlError as e:
        raise DecodeError(f"JPEG XL cannot recompress it losslessly ({e})") from None


def restore_jpeg(data) -> bytes:
    """The original JPEG file of a recompress_jpeg output, bit for bit."""
    import imagecodecs as ic

    return bytes(ic.jpegxl_decode_jpeg(bytes(data)))
