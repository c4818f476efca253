"""What goes in the container: codecs and decoders on the dataset's own images (docs/codecs.md).

One job, one table of rows (codecs.csv), each a timed pass over every image, in `workers` forked
processes (the processes a store's read decodes with), from bytes already in memory unless said:
- `encode`: every image encoded once (sizes; the time is a by-product, not repeated);
- `decode`: a decoder alone on the coding's bytes (the limit a store's read is held to);
- `read`: a store of the coding in `backend`, read whole with that decoder, timed alternately
  with `decode` so both see the same machine;
- `full-resize` and `reduced-resize` at `decode_size`: decode in full then resize, against a
  JPEG decoded at a DCT scale first, the shorter side `decode_size` either way;
- `jxl-recompress` and `jxl-restore`: every JPEG file (the folder's, or the jpeg coding's bytes)
  losslessly recompressed as JPEG XL and given back, each checked bit for bit.
Every decode is checked off the clock: a lossless coding's against the source pixels exactly, a
lossy one's against Pillow's decode of the same bytes (`psnr_pillow_db`; inf when equal); a store's
read against the same decoder from memory, exactly. `psnr_db`: Pillow's decode against the
source pixels (inf: lossless). The first pass of each is an untimed warm-up.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .. import decoders as _decoders
from ..backends import parallel
from ..images import Blobs, Codec, ImageList, psnr, shapes_of
from .many import decode_from_memory
from .rows import VerificationError, _check
from .timing import timed

COLUMNS = ["experiment", "coding", "decoder", "backend", "workers", "decode_size", "repeat", "images", "seconds",
           "bytes", "psnr_db", "psnr_pillow_db", "subset", "dataset"]
AGREE_DB = 30.0  # a decoder whose pixels are further than this from Pillow's on the same bytes is wrong
LARGE = 800  # the decode_size rows are also given for images whose longer side is over this


def encode(images, codec: Codec, workers: int) -> Blobs:
    parts = parallel.run(parallel.encode_range, len(images), dict(images=images, codec=codec), workers)
    return Blobs.from_bytes([x for p in parts for x in p])


def decode(blobs, codec: Codec, shapes, workers: int):
    """The decoder alone, as an encoded store's read is timed against it (many.decode_from_memory)."""
    return decode_from_memory(workers, blobs, codec, None, shapes)


def _resized_range(bounds):
    j = parallel.job
    for i in range(*bounds):
        j["out"][i][...] = j["codec"].decode_resized(j["blobs"][i], tuple(j["shapes"][i]), j["size"], f"image {i}",
                                                     j["reduce"])


def decode_resized(blobs, codec: Codec, shapes, size: int, reduce: bool, workers: int) -> ImageList:
    """Every image at training size, into one result in shared memory (as `decode`): the sizes
    are known from the stored shapes, so nothing is sent back through pipes."""
    from ..decoders import training_size

    shapes = np.asarray(shapes)
    targets = np.array([(*training_size(int(h), int(w), size), c) for h, w, c in shapes], np.int64).reshape(-1, 3)
    out = parallel.allocate(None, targets, len(blobs), workers > 1)
    parallel.run(_resized_range, len(blobs), dict(blobs=blobs, codec=codec, shapes=shapes, size=size,
                                                  reduce=reduce, out=out), workers)
    return out


def _jxl_range(bounds):
    j = parallel.job
    out = []
    for i in range(*bounds):
        data = bytes(j["blobs"][i])
        try:
            out.append(_decoders.recompress_jpeg(data) if j["forward"] else _decoders.restore_jpeg(data))
        except _decoders.DecodeError as e:
            out.append(str(e))
    return out


def run(images, labels, sources, codings, decoder_names, backend: str, decode_size: int | None, repeats: int,
        workers: int | None, scratch, dataset: str, log=print) -> list[dict]:
    """The rows above for `images` (an ImageList or 4-D array; `sources`: the files' bytes, or None)."""
    from .. import backends

    scratch = Path(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    n = len(images)
    workers = parallel.processes(n, workers)
    shapes = shapes_of(images)
    if not isinstance(images, ImageList):  # one shape: the same pixels viewed as an ImageList
        size = int(np.prod(images.shape[1:]))
        images = ImageList(images.reshape(-1), np.arange(n, dtype=np.int64) * size, shapes)
    rows = []

    def row(experiment, coding, seconds, **kw):
        r = dict(experiment=experiment, coding=coding, seconds=seconds, images=n, workers=workers,
                 dataset=dataset, **kw)
        rows.append(r)
        return r

    try:
        jpegs = None
        for coding in codings:
            codec = Codec.from_coding(coding)
            if coding == "source":
                if sources is None:
                    log("codecs: source needs a folder dataset (its files); left out")
                    continue
                blobs = sources
            else:
                seconds, _, _, blobs = timed(encode, images, codec, workers)
                row("encode", coding, seconds, bytes=blobs.nbytes)
            if coding.startswith("jpeg") and jpegs is None:
                jpegs = blobs
            pillow = decode(blobs, codec, shapes, workers)  # the reference every decoder is held to
            quality = psnr(pillow, images)
            log(f"codecs {coding}: {blobs.nbytes / n:,.0f} bytes an image, PSNR {quality:.2f} dB against the source")
            row("size", coding, np.nan, bytes=blobs.nbytes, psnr_db=quality)
            store, b = None, None
            if backend:  # written untimed: what is timed is its read
                store = scratch / f"{backend}-{coding}"
                b = backends.get(backend, encoding=codec.encoding, quality=codec.quality,
                                 compress_level=codec.compress_level)
                b.store_many(store, images, labels, sources=blobs if coding == "source" else None)
            for name in decoder_names:
                if not _decoders.reads(name, coding):  # it would hand them to another decoder
                    continue
                rows += _decoder_rows(name, coding, codec, blobs, pillow, images, shapes, workers, repeats,
                                      store, b, n, dataset, log)
                if decode_size and _decoders.kind_of_coding(coding) == "jpeg" and name in _decoders.SCALES:
                    rows += _resize_rows(name, coding, codec, blobs, shapes, decode_size, workers, repeats, n,
                                         dataset, log)
            if store is not None:
                shutil.rmtree(store, ignore_errors=True)
        files = _jpeg_files(sources) if sources is not None else jpegs
        if files is not None and any(c.startswith("jxl") for c in codings):
            rows += _recompress_rows(files, workers, repeats, dataset, log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def _decoder_rows(name, coding, codec, blobs, pillow, images, shapes, workers, repeats, store, b, n,
                  dataset, log) -> list[dict]:
    """`decode` rows of decoder `name` on the coding's bytes and, with a store, `read` rows of `b`
    reading it with that decoder."""
    c = codec.reading(name)
    got = decode(blobs, c, shapes, workers)  # untimed: warm-up and the pixels to check
    lossless = coding.startswith(("png", "webp-lossless"))
    if lossless:
        _check(f"{coding} decoded by {name}", got, images)
        agree = float("inf")
    else:
        agree = psnr(got, pillow)
        if agree < AGREE_DB:
            raise VerificationError(f"{coding} decoded by {name}: {agree:.1f} dB from Pillow's decode of the same "
                                    f"bytes (at least {AGREE_DB} expected)")
    common = dict(coding=coding, decoder=name, workers=workers, images=n, dataset=dataset, psnr_pillow_db=agree,
                  bytes=blobs.nbytes)
    rows = []
    if b is not None:
        _check(f"{b.name} store of {coding} read by {name}", b.read_many(store, decoder=name)[0], got)
    for r in range(1, repeats + 1):
        seconds, _, _, again = timed(decode, blobs, c, shapes, workers)
        _check(f"{coding} decoded by {name} again", again, got)
        del again
        rows.append(dict(experiment="decode", backend="memory", repeat=r, seconds=seconds, **common))
        if b is not None:
            seconds, _, _, (read, _) = timed(b.read_many, store, decoder=name)
            _check(f"{b.name} store of {coding} read by {name}", read, got)
            del read
            rows.append(dict(experiment="read", backend=b.name, repeat=r, seconds=seconds, **common))
    log(f"codecs {coding} {name}: decode {np.median([x['seconds'] for x in rows if x['experiment'] == 'decode']):.3f}s"
        + (f", {b.name} read {np.median([x['seconds'] for x in rows if x['experiment'] == 'read']):.3f}s"
           if b is not None else "") + f"; {agree:.1f} dB from Pillow's pixels")
    return rows


def _resize_rows(name, coding, codec, blobs, shapes, size, workers, repeats, n, dataset, log) -> list[dict]:
    c = codec.reading(name)
    full = decode_resized(blobs, c, shapes, size, False, workers)  # untimed: warm-up and the reference
    reduced = decode_resized(blobs, c, shapes, size, True, workers)
    large = np.flatnonzero(np.asarray(shapes)[:, :2].max(axis=1) > LARGE)
    quality = {"all": psnr(reduced, full)}
    if len(large):
        quality[f"over {LARGE} px"] = psnr(reduced[large], full[large])
    rows = []
    for r in range(1, repeats + 1):
        for reduce in (False, True):
            seconds, _, _, got = timed(decode_resized, blobs, c, shapes, size, reduce, workers)
            _check(f"{coding} at {size} by {name}", got, reduced if reduce else full)
            rows.append(dict(experiment="reduced-resize" if reduce else "full-resize", coding=coding, decoder=name,
                             backend="memory", decode_size=size, workers=workers, repeat=r, seconds=seconds,
                             images=n, subset="all", psnr_pillow_db=quality["all"] if reduce else np.inf,
                             bytes=blobs.nbytes, dataset=dataset))
    if len(large):  # the large photographs alone: where the DCT scaling is meant to pay
        sub = blobs[large]
        for r in range(1, repeats + 1):
            for reduce in (False, True):
                seconds, _, _, _ = timed(decode_resized, sub, c, np.asarray(shapes)[large], size, reduce, workers)
                rows.append(dict(experiment="reduced-resize" if reduce else "full-resize", coding=coding,
                                 decoder=name, backend="memory", decode_size=size, workers=workers, repeat=r,
                                 seconds=seconds, images=len(large), subset=f"over {LARGE} px",
                                 psnr_pillow_db=quality[f"over {LARGE} px"] if reduce else np.inf,
                                 bytes=sub.nbytes, dataset=dataset))
    med = {k: np.median([x["seconds"] for x in rows if x["experiment"] == k and x["subset"] == "all"])
           for k in ("full-resize", "reduced-resize")}
    log(f"codecs {coding} {name} at {size}: full + resize {med['full-resize']:.3f}s, reduced + resize "
        f"{med['reduced-resize']:.3f}s ({med['full-resize'] / med['reduced-resize']:.2f}x), "
        f"PSNR {quality['all']:.1f} dB")
    return rows


def _jpeg_files(sources) -> Blobs | None:
    keep = [i for i in range(len(sources)) if _decoders.kind(sources[i]) == "jpeg"]
    return sources[np.array(keep, np.int64)] if keep else None


def _recompress_rows(files: Blobs, workers, repeats, dataset, log) -> list[dict]:
    n = len(files)
    run_ = lambda blobs, forward: [x for p in parallel.run(_jxl_range, len(blobs), dict(blobs=blobs, forward=forward),  # noqa: E731
                                                           workers) for x in p]
    small = run_(files, True)
    refused = [(i, x) for i, x in enumerate(small) if isinstance(x, str)]
    ok = np.array([i for i, x in enumerate(small) if not isinstance(x, str)], np.int64)
    kept = Blobs.from_bytes([small[i] for i in ok])
    back = run_(kept, False)
    for k, i in enumerate(ok.tolist()):
        if back[k] != bytes(files[i]):
            raise VerificationError(f"JPEG file {i} recompressed as JPEG XL does not come back bit for bit")
    originals = int(files.sizes[ok].sum())
    log(f"codecs jxl-recompress: {len(ok):,} of {n:,} JPEG files, every one back bit for bit; "
        f"{kept.nbytes / max(1, originals):.3f} of their size" + (f"; {len(refused)} refused, kept as they are "
                                                                   f"(first: JPEG file {refused[0][0]}: {refused[0][1]})" if refused else ""))
    rows = []
    for r in range(1, repeats + 1):
        seconds, _, _, _ = timed(run_, files[ok], True)
        rows.append(dict(experiment="jxl-recompress", coding="jxl-jpeg", backend="memory", repeat=r, seconds=seconds,
                         images=len(ok), bytes=kept.nbytes, workers=workers, dataset=dataset,
                         subset=f"{originals} bytes of JPEG; {len(refused)} refused"))
        seconds, _, _, _ = timed(run_, kept, False)
        rows.append(dict(experiment="jxl-restore", coding="jxl-jpeg", backend="memory", repeat=r, seconds=seconds,
                         images=len(ok), bytes=originals, workers=workers, dataset=dataset, subset="bit for bit"))
    return rows


def write(rows, path) -> None:
    from .rows import write_csv

    write_csv(rows, path, COLUMNS)

