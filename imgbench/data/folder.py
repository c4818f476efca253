"""A folder of the user's images as a dataset: scan it, decode every file, save the arrays.

Class labels come from the folder layout (`labels: parent`: the file's parent directory,
relative to the root, is its class) or there are none (`labels: none`). Besides the pixels,
the original files' bytes are kept, so a `source` store can hold the files as they were.
"""
from __future__ import annotations

import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .dataset import save_npy
from ..errors import UserError
from ..images import FILE_FORMATS, WIDE_MODES, Blobs, ImageList, to_array

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABELS = ("parent", "none")
DECODE_MODES = ("RGB", "L", "keep")
ON_BAD_FILE = ("error", "skip")
FIX_PATH = "set folder.path to a directory of images"
SHOWN_BAD = 5
POOL_MIN_FILES = 256  # below this, threads gain too little to matter


class FolderError(UserError, ValueError):
    pass


class BadFilesError(FolderError):
    """Files with an image extension that Pillow cannot decode; `bad` lists (path, reason)."""

    def __init__(self, root, bad: list[tuple[str, str]]):
        self.bad = bad
        shown = "; ".join(f"{p} ({r})" for p, r in bad[:SHOWN_BAD])
        more = f"; and {len(bad) - SHOWN_BAD} more" if len(bad) > SHOWN_BAD else ""
        super().__init__(f"{_count(len(bad), 'file')} under {root} cannot be decoded: {shown}{more}; "
                         "fix or remove them, or set folder.on_bad_file: skip")


@dataclass
class FolderData:
    """A folder's images (in `files` order), their labels and original bytes, and what was left out."""
    images: ImageList
    labels: np.ndarray
    classes: list[str]
    files: list[str]
    sources: Blobs
    bad: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def scan(root) -> tuple[list[str], dict]:
    """The image files under root (POSIX paths relative to it, sorted) and counts of what was skipped:
    {"hidden": hidden files and hidden directories (not entered, so a .git costs nothing),
    "not_image": files without an image extension, "linked_dirs": symlinked directories (not
    followed, which rules out loops; symlinked files are included)}."""
    root = os.fspath(root)
    if not os.path.exists(root):
        raise FolderError(f"folder {root} does not exist; {FIX_PATH}")
    if not os.path.isdir(root):
        raise FolderError(f"folder {root} is not a directory; {FIX_PATH}")

    def unreadable(e: OSError):
        raise FolderError(f"cannot read directory {e.filename} ({e.strerror}); fix its permissions or remove it")

    files, hidden, not_image, linked = [], 0, 0, 0
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        kept = []
        for d in dirnames:
            if d.startswith("."):
                hidden += 1
            elif os.path.islink(os.path.join(dirpath, d)):
                linked += 1  # os.walk would not enter it either; counted so an empty result can say why
            else:
                kept.append(d)
        dirnames[:] = kept
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for name in filenames:
            if name.startswith("."):
                hidden += 1
            elif os.path.splitext(name)[1].lower() in EXTENSIONS:
                files.append(prefix + name)
            else:
                not_image += 1
    files.sort()  # code-point order of the relative path: the same on every machine
    return files, {"hidden": hidden, "not_image": not_image, "linked_dirs": linked}


def _skipped_text(skipped: dict) -> str:
    text = f"{skipped.get('hidden', 0)} hidden, {skipped.get('not_image', 0)} not images"
    if skipped.get("linked_dirs"):
        text += f", {_count(skipped['linked_dirs'], 'symlinked directory', 'symlinked directories')} not followed"
    return text


def _reason(e: Exception) -> str:
    """One short line saying why a file could not be decoded."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image: cannot identify image file"
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _decode(data: bytes, mode: str) -> tuple[np.ndarray, bool]:
    """decode_file, also saying whether the image was 16- or 32-bit grey (scaled to 8 bits)."""
    with Image.open(io.BytesIO(data), formats=FILE_FORMATS) as im:
        im.load()
        return to_array(im, mode), im.mode in WIDE_MODES


def _read_and_decode(job):
    """(rel, bytes, array, wide, None) for a good file, (rel, None, None, False, reason) for a bad one."""
    root, rel, mode = job
    try:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
    except OSError as e:
        return rel, None, None, False, f"cannot read: {e.strerror or e}"
    if not data:
        return rel, None, None, False, "zero bytes"
    try:
        a, wide = _decode(data, mode)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return rel, None, None, False, _reason(e)
    return rel, data, a, wide, None


def _results(root: str, files: list[str], mode: str, workers: int | None):
    jobs = [(root, rel, mode) for rel in files]
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if len(files) > POOL_MIN_FILES else 1
    if workers <= 1:
        return map(_read_and_decode, jobs)
    # Threads, not processes: Pillow releases the GIL to read and decode, and the arrays need no
    # pickling back (with a process pool, 2 cores decoded no faster than 1; with threads, 1.8x).
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(_read_and_decode, jobs))


def load(root, labels: str = "parent", mode: str = "RGB", on_bad_file: str = "error", log=print,
         workers: int | None = None) -> FolderData:
    """Every image under root, decoded in `mode` ("RGB", "L" or "keep"; see images.to_array), in
    scan order. `labels`: "parent" (the parent directory is the class) or "none". Files that
    cannot be decoded raise BadFilesError (listing them all at once) or, with on_bad_file="skip",
    are left out and listed in FolderData.bad. `workers`: decoding threads (default: one per core,
    up to 8, when there are more than 256 files)."""
    for name, value, allowed in (("labels", labels, LABELS), ("mode", mode, DECODE_MODES),
                                 ("on_bad_file", on_bad_file, ON_BAD_FILE)):
        if value not in allowed:
            raise FolderError(f"folder.{name} must be one of {', '.join(allowed)}, got {value!r}")
    root = os.fspath(root)
    files, skipped = scan(root)
    if not files:
        raise FolderError(f"folder {root} has no image files ({', '.join(EXTENSIONS)}); skipped "
                          f"{_skipped_text(skipped)}; {FIX_PATH}")
    broken = [f for f in files if "\n" in f or "\r" in f]
    if broken:  # files.txt keeps one path a line
        raise FolderError(f"file name {broken[0]!r} under {root} contains a line break; rename it")
    if labels == "parent":
        loose = [f for f in files if "/" not in f]
        if loose:
            raise FolderError(f"{_count(len(loose), 'image')} directly under {root} have no class folder (first: "
                              f"{loose[0]}); put them in class folders, or set folder.labels: none")

    kept, arrays, sources, bad, wide_count = [], [], [], [], 0
    for rel, data, a, wide, reason in _results(root, files, mode, workers):
        if reason is not None:
            bad.append((rel, reason))
            if on_bad_file == "skip":
                log(f"skipping {rel}: {reason}")
            continue
        kept.append(rel)
        arrays.append(a)
        sources.append(data)
        wide_count += wide
    if bad and on_bad_file == "error":
        raise BadFilesError(root, bad)
    if not kept:
        raise FolderError(f"none of the {len(files)} image files under {root} can be decoded (first: {bad[0][0]} "
                          f"({bad[0][1]})); fix them, or {FIX_PATH}")

    images = ImageList.allocate([a.shape for a in arrays])
    for k in range(len(arrays)):
        images[k][...] = arrays[k]
        arrays[k] = None  # freed as copied: peak memory stays near one copy of the pixels
    if labels == "parent":
        parents = [rel.rsplit("/", 1)[0] for rel in kept]
        classes = sorted(set(parents))  # of the files kept: a class whose every file was bad has no label
        index = {c: i for i, c in enumerate(classes)}
        label_array = np.array([index[p] for p in parents], np.int64)
    else:
        classes, label_array = ["all"], np.zeros(len(kept), np.int64)
    summary = (f"{_count(len(kept), 'image')} in {_count(len(classes), 'class', 'classes')} "
               f"from {root}; skipped: {_skipped_text(skipped)}, {_count(len(bad), 'bad file')}")
    if wide_count:
        summary += f"; {wide_count} 16-bit images scaled to 8 bits"
    log(summary)
    return FolderData(images=images, labels=label_array, classes=classes, files=kept,
                      sources=Blobs.from_bytes(sources), bad=bad, skipped=skipped)


def _write_text(path: Path, text: str) -> None:
    """A text file through a temporary sibling, as save_npy does for arrays."""
    tmp = path.with_name(f".{path.name}.tmp")  # fixed: a killed write's is replaced by the next
    try:
        tmp.write_bytes(text.encode("utf-8", "surrogateescape"))  # names that are not UTF-8 round-trip
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save(data: FolderData, out_dir) -> None:
    """data as files in out_dir (see load_saved), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_npy(out / "pixels.npy", data.images.flat())
    save_npy(out / "shapes.npy", np.asarray(data.images.shapes, np.int64))
    save_npy(out / "labels.npy", np.asarray(data.labels, np.int64))
    _write_text(out / "classes.json", json.dumps(data.classes, indent=1) + "\n")
    save_npy(out / "sources.npy", data.sources.flat())
    save_npy(out / "source_sizes.npy", np.asarray(data.sources.sizes, np.int64))
    _write_text(out / "files.txt", "".join(f + "\n" for f in data.files))
    _write_text(out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in data.bad))


def _lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    return text.split("\n")[:-1]  # not splitlines: it also splits at \x1c, \u2028 and the like


def load_saved(out_dir) -> FolderData:
    """What save wrote, with the pixels and file bytes memory-mapped (they may be large)."""
    out = Path(out_dir)
    shapes = np.load(out / "shapes.npy")
    sizes = shapes.prod(axis=1) if len(shapes) else np.zeros(0, np.int64)
    images = ImageList(np.load(out / "pixels.npy", mmap_mode="r"), np.cumsum(sizes) - sizes, shapes)
    source_sizes = np.load(out / "source_sizes.npy")
    sources = Blobs(np.load(out / "sources.npy", mmap_mode="r"), np.cumsum(source_sizes) - source_sizes,
                    source_sizes)
    labels = np.load(out / "labels.npy")
    files = _lines(out / "files.txt")
    if not len(images) == len(labels) == len(files) == len(sources):
        raise ValueError(f"{out} holds {len(images)} images, {len(labels)} labels, {len(files)} file names and "
                         f"{len(sources)} sources; it is damaged, delete it to rebuild it")
    bad = [tuple(line.rsplit("\t", 1)) for line in _lines(out / "skipped.txt")]
    return FolderData(images=images, labels=labels, classes=json.loads((out / "classes.json").read_text()),
                      files=files, sources=sources, bad=bad)


def fingerprint(root) -> str:
    """A hash of the image files' names, sizes and modification times: it changes when the
    folder's images do (the workflow reruns the dataset stage then), without reading a file."""
    import hashlib

    files, _ = scan(root)
    h = hashlib.sha256()
    for rel in files:
        st = os.stat(os.path.join(root, rel))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


ROOM_SHARE = 4  # a raw store of n images may take at most this share (1/4) of the free space


def check_room(data: FolderData, n_images: int, where) -> None:
    """FolderError if a raw store of the folder repeated to n_images would not fit several times
    in the free space under `where`: the benchmark writes one per raw backend, and repeats."""
    import shutil

    mean = data.images.nbytes / max(1, len(data.images))
    need = n_images * mean
    path = Path(where).resolve()
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free
    if need > free / ROOM_SHARE:
        raise FolderError(f"n_images={n_images:,} of these images ({mean / 1e3:,.0f} kB of pixels each on average) "
                          f"makes raw stores of {need / 1e9:,.1f} GB, more than a quarter of the {free / 1e9:,.0f} GB "
                          f"free under {path}; lower n_images and cutoffs (config/sample-folder.yaml sets both "
                          "for the sample)")
