"""Images of any size, and the codecs that store them as bytes.

A batch of images is either a 4-D uint8 array (N, H, W, C), when every image has one shape, or
an `ImageList`: images of different shapes in one flat uint8 buffer, image i being
``data[offsets[i]:offsets[i] + h*w*c].reshape(shapes[i])``. Offsets may repeat (a dataset
repeated to n images shares its pixels), so an ImageList of n images costs its unique pixels.

A `Codec` turns an image into stored bytes and back: `raw` (the pixels), `png`, `jpeg`, `webp`,
`webp-lossless`, `avif` (Pillow's encoders), `jxl` (libjxl through imagecodecs: Pillow has no
JPEG XL), or `source` (the original file's bytes, decoded as the folder dataset decodes them);
decoded by one of decoders.DECODERS.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from . import decoders

CHANNELS = (1, 3, 4)
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16- and 32-bit grey: scaled to 8 bits
ENCODINGS = ("raw", "png", "jpeg", "webp", "webp-lossless", "avif", "jxl", "source")
LOSSY = ("jpeg", "webp", "avif", "jxl")  # what a store of these reads back differs from the source
# File types a `source` store's members and files are named by, from the bytes themselves.
SIGNATURES = [(b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
              (b"BM", ".bmp"), (b"II*\0", ".tif"), (b"MM\0*", ".tif")]


class ImageList(Sequence):
    """Images of different shapes sharing one flat uint8 buffer (see the module docstring).

    `il[i]` is image i as an (H, W, C) view; `il[idx]` with a slice or an index array is an
    ImageList of those images over the same buffer; `list(il)` gives the arrays."""

    def __init__(self, data: np.ndarray, offsets, shapes):
        self.data = data
        self.offsets = np.asarray(offsets, np.int64)
        self.shapes = np.asarray(shapes, np.int64).reshape(-1, 3)
        self.sizes = self.shapes.prod(axis=1)
        if len(self.offsets) != len(self.shapes):
            raise ValueError(f"ImageList: {len(self.offsets)} offsets for {len(self.shapes)} shapes")
        if len(self.offsets) and (self.offsets.min() < 0 or (self.offsets + self.sizes).max() > len(data)):
            raise ValueError("ImageList: an image lies outside the data buffer")

    @classmethod
    def allocate(cls, shapes, buffer: np.ndarray | None = None) -> "ImageList":
        """Images of `shapes` laid out one after another, in `buffer` (flat uint8) or a new one."""
        shapes = np.asarray(shapes, np.int64).reshape(-1, 3)
        sizes = shapes.prod(axis=1)
        offsets = np.cumsum(sizes) - sizes
        total = int(sizes.sum())
        data = np.empty(total, np.uint8) if buffer is None else buffer[:total]
        return cls(data, offsets, shapes)

    @classmethod
    def from_arrays(cls, arrays) -> "ImageList":
        shapes = [a.shape for a in arrays]
        out = cls.allocate(shapes)
        for k, a in enumerate(arrays):
            out[k][...] = a
        return out

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            if not -len(self) <= i < len(self):
                raise IndexError(f"image {i} of an ImageList of {len(self)}")
            o, s = int(self.offsets[i]), self.shapes[i]
            return self.data[o:o + int(self.sizes[i])].reshape(s)
        return ImageList(self.data, self.offsets[i], self.shapes[i])

    @property
    def nbytes(self) -> int:
        """Bytes of pixels of all images (repeated images counted every time)."""
        return int(self.sizes.sum())

    def packed(self) -> "ImageList":
        """The same images laid out one after another in a new buffer (unless they already are)."""
        if len(self) and self.offsets[0] == 0 and np.array_equal(np.cumsum(self.sizes)[:-1], self.offsets[1:]):
            return self
        out = ImageList.allocate(self.shapes)
        for k in range(len(self)):
            out[k][...] = self[k]
        return out

    def flat(self) -> np.ndarray:
        """All pixels one image after another: a view of the buffer when they already lie so."""
        p = self.packed()
        return p.data[:p.nbytes]

    def __repr__(self):
        return f"ImageList({len(self)} images, {self.nbytes:,} bytes of pixels)"


class Blobs(Sequence):
    """Byte strings of different lengths in one flat uint8 buffer (the original files of a folder
    dataset): `b[i]` is a memoryview of item i; `b[idx]` with a slice or index array, a Blobs."""

    def __init__(self, data: np.ndarray, offsets, sizes):
        self.data = data
        self.offsets = np.asarray(offsets, np.int64)
        self.sizes = np.asarray(sizes, np.int64)

    @classmethod
    def from_bytes(cls, items) -> "Blobs":
        sizes = np.array([len(x) for x in items], np.int64)
        data = np.empty(int(sizes.sum()), np.uint8)
        offsets = np.cumsum(sizes) - sizes
        for o, x in zip(offsets.tolist(), items):
            data[o:o + len(x)] = np.frombuffer(x, np.uint8)
        return cls(data, offsets, sizes)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            if not -len(self) <= i < len(self):
                raise IndexError(f"item {i} of Blobs of {len(self)}")
            o = int(self.offsets[i])
            return memoryview(self.data[o:o + int(self.sizes[i])])
        return Blobs(self.data, self.offsets[i], self.sizes[i])

    @property
    def nbytes(self) -> int:
        return int(self.sizes.sum())

    def flat(self) -> np.ndarray:
        """All items' bytes one after another: a view of the buffer when they already lie so."""
        o, s = self.offsets, self.sizes
        if len(o) == 0 or (o[0] == 0 and np.array_equal(np.cumsum(s)[:-1], o[1:])):
            return self.data[:self.nbytes]
        return np.concatenate([self.data[a:a + b] for a, b in zip(o.tolist(), s.tolist())])


def as_blobs(items) -> Blobs:
    """`items` (byte strings, or Blobs) as Blobs, copied only if they are not Blobs already."""
    return items if isinstance(items, Blobs) else Blobs.from_bytes(items)


def check_images(images):
    """A 4-D uint8 array (N, H, W, C) as it is, or a sequence of (H, W, C) uint8 arrays: stacked
    into a 4-D array when all have one shape, else an ImageList. ValueError naming the problem."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}; scale to 0..255 and use .astype(np.uint8)")
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}; add a channel axis for "
                             "grey images, use store_single for one image, or pass a list of (H, W, C) arrays")
        if len(images) == 0:
            raise ValueError("images is an empty batch (N = 0); there is nothing to store")
        _check_shape(images.shape[1:], "images")
        return np.ascontiguousarray(images)
    if isinstance(images, ImageList):
        shapes = images.shapes
    else:
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ValueError(f"images must be a numpy array (N, H, W, C) of uint8 or a sequence of (H, W, C) "
                             f"uint8 arrays, got {type(images).__name__}")
        for k, a in enumerate(images):
            if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3:
                raise ValueError(f"images[{k}] must be an (H, W, C) uint8 array, got "
                                 f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
        shapes = np.array([a.shape for a in images], np.int64).reshape(-1, 3)
    if len(shapes) == 0:
        raise ValueError("images is an empty batch (N = 0); there is nothing to store")
    for k, s in enumerate(shapes):
        _check_shape(tuple(s), f"images[{k}]")
    if (shapes == shapes[0]).all():  # one shape: today's fixed-shape layout
        if isinstance(images, ImageList):
            o, size = images.offsets, int(images.sizes[0])
            if len(o) and np.array_equal(o, o[0] + size * np.arange(len(o))):  # already contiguous
                return images.data[o[0]:o[0] + size * len(o)].reshape(len(o), *shapes[0])
            return np.stack([images[k] for k in range(len(images))])
        return np.ascontiguousarray(np.stack(images))
    return images if isinstance(images, ImageList) else ImageList.from_arrays(images)


def _check_shape(shape, what: str) -> None:
    if shape[2] not in CHANNELS or 0 in shape[:2]:
        raise ValueError(f"{what} must have 1, 3 or 4 channels and a non-empty height and width, got shape "
                         f"{tuple(int(x) for x in shape)}")


def shapes_of(images) -> np.ndarray:
    """(N, 3) int64 shapes of a 4-D array or an ImageList."""
    if isinstance(images, ImageList):
        return images.shapes
    return np.broadcast_to(np.array(images.shape[1:], np.int64), (len(images), 3))


def image_bytes(images) -> float:
    """Mean bytes of pixels per image."""
    return images.nbytes / max(1, len(images))


# ---------------------------------------------------------------------------- decoding files


def to_array(im: Image.Image, mode: str = "RGB") -> np.ndarray:
    """A Pillow image as (H, W, C) uint8, upright (EXIF orientation applied), in `mode`: "RGB",
    "L", or "keep" (grey stays 1 channel, with alpha 4 channels, anything else 3).

    16-bit and 32-bit grey ("I;16", "I") is scaled to 8 bits (value / 257, rounded), not clipped:
    a 16-bit scan then looks as it does in a viewer instead of turning white."""
    im = ImageOps.exif_transpose(im)
    if im.mode in WIDE_MODES:
        a = np.asarray(im).astype(np.float64)
        a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L")
    if mode == "keep":
        if im.mode in ("1", "L"):
            mode = "L"
        elif im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
            mode = "RGBA"
        else:
            mode = "RGB"
    if im.mode != mode:
        im = im.convert(mode)
    a = np.asarray(im)
    return a[:, :, None] if a.ndim == 2 else a


# The file formats a folder of photographs may hold, and all that a store's image bytes are ever
# opened as: Pillow tries only these, so bytes of another format (EPS or PostScript, which Pillow
# hands to Ghostscript, a program) are an error, never run.
FILE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
# Pixel bytes per file byte, at most: deflate (PNG, TIFF) stops at 1,032; WebP's and GIF's back
# references go further. A store declaring more is refused before anything is decoded.
MAX_RATIO = 4096


def check_size(im: Image.Image, shape, where: str, turned: bool = False) -> None:
    """DecodeError unless the opened (not yet decoded) `im` is an image of `shape` (H, W, ...):
    its declared size is read from its header, so a huge image is refused before any pixel is
    decoded. `turned`: EXIF orientation may swap height and width."""
    h, w = shape[:2]
    if im.size != (w, h) and not (turned and im.size == (h, w)):
        raise DecodeError(f"{where} declares a {im.size[1]} x {im.size[0]} image, the store says {h} x {w}; "
                          "the store is damaged")


def decode_file(data, mode: str = "RGB", shape=None, where: str = "the image") -> np.ndarray:
    """The bytes of an image file (one of FILE_FORMATS) as (H, W, C) uint8 (see to_array);
    `shape`: the (H, W, C) it must decode to, checked before its pixels are decoded."""
    with Image.open(io.BytesIO(data), formats=FILE_FORMATS) as im:
        if shape is not None:
            check_size(im, shape, where, turned=True)
        im.load()
        return to_array(im, mode)


def file_suffix(data) -> str:
    """The file name suffix of an image file's bytes (".jpg", ".png", ...; ".img" if unknown)."""
    head = bytes(data[:12])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    for sig, ext in SIGNATURES:
        if head.startswith(sig):
            return ext
    return ".img"


# ---------------------------------------------------------------------------- codecs


class DecodeError(ValueError):
    pass


class Codec:
    """How a store's images are kept as bytes, and decoded. `encode(image) -> bytes` (not for
    source); `decode_into(dst, data)` fills the (H, W, C) view `dst` and checks the shape.
    `decoder`: one of decoders.DECODERS (a file it does not read goes to Pillow)."""

    def __init__(self, encoding: str = "raw", quality: int = 90, compress_level: int = 6,
                 decoder: str = decoders.DEFAULT):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        self.encoding, self.quality, self.compress_level = encoding, quality, compress_level
        self.decoder = decoders.check_decoder(decoder)
        self.format = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "webp-lossless": "WEBP",
                       "avif": "AVIF"}.get(encoding)

    @classmethod
    def from_coding(cls, coding: str, decoder: str = decoders.DEFAULT) -> "Codec":
        """The codec of a coding string: "raw", "png-l6", "jpeg-q90", "webp-q90", "webp-lossless",
        "avif-q60", "jxl-q90", "source"."""
        if coding.startswith("png-l"):
            return cls("png", compress_level=int(coding[5:]), decoder=decoder)
        for e in LOSSY:
            if coding.startswith(f"{e}-q"):
                return cls(e, quality=int(coding[len(e) + 2:]), decoder=decoder)
        return cls(coding, decoder=decoder)

    @property
    def coding(self) -> str:
        """"png-l6", "jpeg-q90", ...: the encoding with what sets its size."""
        if self.encoding == "png":
            return f"png-l{self.compress_level}"
        return f"{self.encoding}-q{self.quality}" if self.encoding in LOSSY else self.encoding

    def reading(self, decoder: str) -> "Codec":
        """This codec with another decoder."""
        return Codec(self.encoding, self.quality, self.compress_level, decoder)

    def encode(self, image: np.ndarray) -> bytes:
        if self.encoding == "raw":
            return image.tobytes()
        if self.encoding == "source":
            raise ValueError("a source store keeps the original files' bytes: pass them as sources=")
        if self.encoding == "jpeg" and image.shape[2] == 4:
            raise ValueError("jpeg cannot store 4-channel (RGBA) images; use png, or the folder option mode: RGB")
        if self.encoding == "jxl":
            import imagecodecs

            return bytes(imagecodecs.jpegxl_encode(image[:, :, 0] if image.shape[2] == 1 else image,
                                                   level=self.quality, numthreads=1))
        buf = io.BytesIO()
        im = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        if self.encoding == "png":
            im.save(buf, format="PNG", compress_level=self.compress_level)
        elif self.encoding == "webp-lossless":
            im.save(buf, format="WEBP", lossless=True, exact=True)  # exact: keeps RGB under alpha 0
        elif self.encoding == "avif":
            im.save(buf, format="AVIF", quality=self.quality, max_threads=1)
        else:  # jpeg, webp
            im.save(buf, format=self.format, quality=self.quality)
        return buf.getvalue()

    def decode_into(self, dst: np.ndarray, data, where: str = "") -> None:
        if self.encoding == "raw":
            if len(data) != dst.nbytes:
                raise DecodeError(f"{where} has {len(data)} bytes, not the {dst.nbytes} of an image of shape "
                                  f"{dst.shape}; the store is damaged")
            dst.reshape(-1)[:] = np.frombuffer(data, np.uint8)
            return
        if dst.nbytes > MAX_RATIO * len(data) + 2**16:
            raise DecodeError(f"{where} has {len(data):,} bytes, too few for an image of shape {dst.shape} (no file "
                              f"format here decodes to more than {MAX_RATIO:,} times its size); the store is damaged")
        try:
            if self.decoder != "pillow" or self.encoding == "jxl":
                decoders.decode(data, dst.shape[2], self.decoder, dst.shape[:2], self.encoding == "source", out=dst)
                return
            if self.format:
                with Image.open(io.BytesIO(data), formats=(self.format,)) as im:  # no probing of other formats
                    check_size(im, dst.shape, where)
                    im.load()
                    a = decoders.fit(np.asarray(im), dst.shape[2])
            else:
                a = decode_file(data, MODES[dst.shape[2]], dst.shape, where)
        except DecodeError:
            raise
        except decoders.DecodeError as e:
            raise DecodeError(f"{where}: {e}; the store is damaged") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # Pillow's, for bad data
            raise DecodeError(f"{where} cannot be decoded ({e}); the store is damaged") from None
        except Exception as e:  # another decoder's own error types (cv2.error, imagecodecs' errors)
            raise DecodeError(f"{where} cannot be decoded by {self.decoder} ({e}); the store is damaged") from None
        if a.shape != dst.shape:
            raise DecodeError(f"{where} holds a {a.shape} image, the store says {dst.shape}; the store is damaged")
        dst[...] = a

    def decode(self, data, shape) -> np.ndarray:
        out = np.empty(shape, np.uint8)
        self.decode_into(out, data)
        return out

    def decode_resized(self, data, shape, size: int, where: str = "", reduce: bool = True) -> np.ndarray:
        """The image of stored `shape` at training size: its shorter side `size` (decoders.decode_resized;
        `reduce`: at a JPEG DCT scale where the decoder has one). Raw pixels are resized alone."""
        if self.encoding == "raw":
            return decoders.resize(self.decode(data, shape), decoders.training_size(shape[0], shape[1], size))
        if np.prod(shape) > MAX_RATIO * len(data) + 2**16:
            raise DecodeError(f"{where} has {len(data):,} bytes, too few for an image of shape {tuple(shape)}; "
                              "the store is damaged")
        try:
            return decoders.decode_resized(data, shape[2], size, self.decoder, shape, self.encoding == "source",
                                           reduce)
        except (decoders.DecodeError, DecodeError) as e:
            raise DecodeError(f"{where}: {e}; the store is damaged") from None
        except Exception as e:
            raise DecodeError(f"{where} cannot be decoded by {self.decoder} ({e}); the store is damaged") from None


def psnr(got, reference) -> float:
    """Peak signal-to-noise ratio in dB of `got` against `reference` over all their pixels
    (4-D arrays or ImageLists of one shape each); inf when they are equal."""
    sq, count = 0.0, 0
    if isinstance(got, ImageList) or isinstance(reference, ImageList):
        for a, b in zip(got, reference):
            d = a.astype(np.int64) - b
            sq += float(np.dot(d.ravel(), d.ravel()))
            count += d.size
    else:
        for s in range(0, len(got), 1024):
            d = got[s:s + 1024].astype(np.int32) - reference[s:s + 1024]
            sq += float(np.dot(d.ravel().astype(np.int64), d.ravel()))
            count += d.size
    if sq == 0:
        return float("inf")
    return float(10 * np.log10(255.0 ** 2 / (sq / count)))
