"""Decoders (Pillow, simplejpeg, OpenCV, imagecodecs) on real stores, decoding at training size,
and JPEG XL's lossless recompression of JPEG files."""
import io

import numpy as np
import pytest
from PIL import Image

from imgbench import backends, decoders
from imgbench.images import Codec, DecodeError, psnr
from imgbench.data import sample

# Decoders may differ from Pillow in their IDCT and chroma upsampling; this much they must agree.
AGREE_DB = 40.0


@pytest.fixture(scope="module")
def photos():
    """Crops of four of the varied sample's photographs, 3 colour and 1 grey, of different sizes."""
    out = []
    for k, (name, h, w) in enumerate([("astronaut", 200, 160), ("coffee", 96, 130), ("chelsea", 120, 90),
                                      ("camera", 80, 112)]):
        a = sample.photograph(name)
        out.append(np.ascontiguousarray(a[10 * k:10 * k + h, 5 * k:5 * k + w]))
    return out


@pytest.mark.parametrize("encoding", ["jpeg", "png", "webp", "webp-lossless", "avif", "jxl"])
def test_every_decoder_reads_a_store_as_pillow_does(tmp_path, photos, encoding):
    b = backends.get("lmdb", encoding=encoding)
    b.store_many(tmp_path / "s", photos, np.arange(len(photos)))
    reference, _ = b.read_many(tmp_path / "s")  # Pillow (imagecodecs for JPEG XL, which Pillow does not read)
    lossless = encoding in ("png", "webp-lossless")
    for decoder in decoders.DECODERS:
        got, labels = b.read_many(tmp_path / "s", decoder=decoder)
        np.testing.assert_array_equal(labels, np.arange(len(photos)))
        if lossless:  # a lossless file has one right answer
            for a, want in zip(got, photos):
                np.testing.assert_array_equal(a, want)
        else:
            assert psnr(got, reference) >= AGREE_DB, decoder
        with b.reader(tmp_path / "s", decoder=decoder) as r:  # a reader, as training code reads
            np.testing.assert_array_equal(r[2][0], got[2])


def test_decoders_read_what_they_say_and_hand_the_rest_to_pillow():
    assert decoders.reads("simplejpeg", "jpeg-q90") and not decoders.reads("simplejpeg", "png-l6")
    assert decoders.reads("imagecodecs", "jxl-q90") and not decoders.reads("opencv", "jxl-q90")
    assert decoders.reads("opencv", "source")  # a folder's files: mostly JPEG
    grey = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48, 1)
    gif = io.BytesIO()
    Image.fromarray(grey[:, :, 0]).save(gif, format="GIF")
    got = Codec("source", decoder="simplejpeg").decode(gif.getvalue(), (64, 48, 1))  # by Pillow
    np.testing.assert_array_equal(got, grey)
    with pytest.raises(ValueError, match="decoder must be one of pillow, simplejpeg"):
        Codec("jpeg", decoder="libjpeg")


def _jpeg(a, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_a_source_file_is_applied_by_every_decoder(orientation):
    a = sample.photograph("rocket")[:90, :140]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _jpeg(a, exif=exif, quality=90)
    shape = (140, 90, 3) if orientation >= 5 else (90, 140, 3)
    want = Codec("source").decode(data, shape)  # Pillow's exif_transpose
    for decoder in decoders.DECODERS:
        np.testing.assert_array_equal(Codec("source", decoder=decoder).decode(data, shape), want)


def _declaring(data: bytes, h: int, w: int) -> bytes:
    """A JPEG whose frame header says h x w (its scan is left as it was)."""
    i = data.index(b"\xff\xc0")
    return data[:i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9:]


def test_a_file_declaring_another_size_is_refused_before_decoding():
    data = _declaring(_jpeg(sample.photograph("coffee")[:64, :64]), 30000, 30000)  # 2.7 GB if decoded
    for encoding in ("jpeg", "source"):
        for decoder in decoders.DECODERS:
            # ours names both sizes; Pillow's own bomb check may refuse it first
            refused = "declares a 30000 x 30000 image, the store says 64 x 64|900000000 pixels"
            with pytest.raises(DecodeError, match=refused):
                Codec(encoding, decoder=decoder).decode(data, (64, 64, 3))
            with pytest.raises(DecodeError, match=refused):
                Codec(encoding, decoder=decoder).decode_resized(data, (64, 64, 3), 32)


def test_decoding_at_training_size_uses_the_dct_scaling_and_stays_close():
    a = sample.photograph("retina")  # 1411 x 1411
    data = _jpeg(a, quality=90)
    for decoder in decoders.DECODERS:
        c = Codec("jpeg", decoder=decoder)
        reduced = c.decode_resized(data, a.shape, 224)
        full = c.decode_resized(data, a.shape, 224, reduce=False)
        assert reduced.shape == full.shape == (224, 224, 3)
        assert psnr(reduced[None], full[None]) >= 35.0, decoder
    # the scale is the largest that keeps the shorter side at least 224: 1411 / 4 = 353, not / 8
    assert decoders._factor(1411, 1411, 224) == 4 and decoders._factor(400, 300, 224) == 1
    assert decoders.training_size(300, 500, 224) == (224, 373)


def test_a_reader_gives_training_size_images(tmp_path, photos):
    b = backends.get("sqlite", encoding="jpeg")
    b.store_many(tmp_path / "s", photos, np.arange(len(photos)))
    with b.reader(tmp_path / "s", decode_size=64, decoder="simplejpeg") as r:
        image, label = r[0]
        assert image.shape == (80, 64, 3) and label == 0  # 200 x 160 -> shorter side 64
        batch, labels = r.get_batch([3, 1])
        assert [x.shape for x in batch] == [(64, 90, 1), (64, 87, 3)] and list(labels) == [3, 1]


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "444", "exif"])
def test_jpeg_xl_recompression_gives_back_the_file_bit_for_bit(kind):
    a = sample.photograph("chelsea")
    if kind == "grey":
        a = np.asarray(Image.fromarray(a).convert("L"))[:, :, None]
    exif = Image.Exif()
    exif[0x0112] = 6
    kw = {"baseline": {}, "progressive": {"progressive": True}, "grey": {}, "444": {"subsampling": 0},
          "exif": {"exif": exif}}[kind]
    data = _jpeg(a, quality=85, **kw)
    small = decoders.recompress_jpeg(data)
    assert decoders.restore_jpeg(small) == data
    assert len(small) < len(data)


def test_a_jpeg_jpeg_xl_cannot_take_is_refused_by_name():
    cmyk = io.BytesIO()
    Image.fromarray(sample.photograph("coffee")[:64, :64]).convert("CMYK").save(cmyk, format="JPEG")
    png = io.BytesIO()
    Image.fromarray(sample.photograph("coffee")[:64, :64]).save(png, format="PNG")
    with pytest.raises(decoders.DecodeError, match="it is not a JPEG file"):
        decoders.recompress_jpeg(png.getvalue())
    try:  # libjxl takes CMYK JPEGs in some versions: then they too must come back exactly
        small = decoders.recompress_jpeg(cmyk.getvalue())
    except decoders.DecodeError as e:
        assert "cannot recompress it losslessly" in str(e)
    else:
        assert decoders.restore_jpeg(small) == cmyk.getvalue()
