"""The workflow on a folder of images: photos of many sizes, every encoding, bad files."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import OVERLAP, jobs_run, small_config, snakemake
from imgbench import backends
from imgbench.data.sample import build_folder

pytestmark = pytest.mark.slow

BACKENDS = ["disk.source", "lmdb.jpeg", "hdf5", "npy", "zarr", "tar.png", "parquet.source"]


def make_folder(root):
    """40 photographs in class folders (JPEG and PNG, some grey, RGBA, EXIF-rotated), plus what must be
    skipped: a text file, a hidden file, an empty .png."""
    build_folder(root, n_files=40, seed=5)
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0" * 10)
    cls = sorted(p for p in root.iterdir() if p.is_dir())[0]
    (cls / "empty.png").write_bytes(b"")
    return root


# the article's backends take images of one shape only: a folder run leaves them out
LEFT_OUT = ["article-disk", "article-hdf5"]


def folder_config(root, **overrides):
    cfg = small_config(dataset="folder", folder={"path": str(root), "name": "photos", "on_bad_file": "skip"},
                       n_images=60, cutoffs=[60], backends=LEFT_OUT + BACKENDS, random_read={"k": 10},
                       # the suite's time: the tiny run has every backend's fault battery and epochs
                       # through forked workers; here the folder's own store (its files) and 0 workers
                       integrity={**small_config()["integrity"], "backends": ["disk.source"]},
                       epoch={**small_config()["epoch"], "workers": [0]},
                       # codecs and decoders on the folder's photographs, at a training size of 64
                       codecs={"codings": ["png-l6", "jpeg-q90", "webp-q90", "jxl-q90", "source"],
                               "decoders": ["pillow", "simplejpeg", "opencv", "imagecodecs"], "backend": "lmdb",
                               "decode_size": 64})
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("images") / "holiday")
    work = tmp_path_factory.mktemp("wf")
    cfg = folder_config(root)
    p = snakemake(work, *OVERLAP, config=cfg)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    left = [x for x in p.stderr.splitlines() if x.startswith("imgbench: left out of this run: ")]
    assert len(left) == 1 and all(f"{b} (it takes images of one shape only" in left[0] for b in LEFT_OUT), left
    return work, cfg, root


def test_codecs_and_decoders_on_the_folder(run):
    work, cfg, root = run
    out = work / "results/folder-photos"
    c = pd.read_csv(out / "codecs.csv")
    size = c[c["experiment"] == "size"].set_index("coding")
    assert set(size.index) == {"png-l6", "jpeg-q90", "webp-q90", "jxl-q90", "source"}
    assert size.loc["png-l6", "psnr_db"] == np.inf and 30 < size.loc["webp-q90", "psnr_db"] < 60
    dec = c[c["experiment"] == "decode"]
    # each decoder on what it reads itself: simplejpeg JPEG only, JPEG XL by imagecodecs only
    assert set(dec[dec["decoder"] == "simplejpeg"]["coding"]) == {"jpeg-q90", "source"}
    assert set(dec[dec["coding"] == "jxl-q90"]["decoder"]) == {"imagecodecs"}
    assert len(dec[(dec["coding"] == "png-l6")]) == 3 * cfg["repeats"]  # pillow, opencv, imagecodecs
    read = c[c["experiment"] == "read"]
    assert set(read["backend"]) == {"lmdb"} and len(read) == len(dec)
    resized = c[c["experiment"].isin(["full-resize", "reduced-resize"])]
    assert set(resized["decoder"]) == {"pillow", "simplejpeg", "opencv"} and set(resized["decode_size"]) == {64}
    rec = c[c["experiment"] == "jxl-recompress"]
    assert len(rec) == cfg["repeats"] and rec["images"].iloc[0] >= 25  # the folder's JPEG files, all taken
    summary = (out / "summary.md").read_text()
    assert "## codecs and decoders" in summary and "**Smallest without changing a pixel**" in summary
    assert (out / "plots/codecs.png").stat().st_size > 10_000


def test_folder_run_end_to_end(run):
    work, cfg, root = run
    out = work / "results/folder-photos"
    df = pd.read_csv(out / "timings.csv")
    assert df["verified"].all() and set(df["dataset"]) == {"folder-photos"}
    data = work / "data/folder-photos"
    assert (data / "skipped.txt").read_text().startswith(f"{sorted(p.name for p in root.iterdir() if p.is_dir())[0]}"
                                                         "/empty.png\t")
    classes = json.loads((data / "classes.json").read_text())
    assert classes == sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    shapes = np.load(data / "shapes.npy")
    assert len(shapes) == 40 and len(np.unique(shapes, axis=0)) > 20  # 40 kept files of many sizes
    stores = df[df["experiment"] == "store_many"].groupby("backend")
    assert set(stores["encoding"].first()) == {"source", "jpeg-q90", "raw", "png-l6"}
    psnr = stores["psnr_db"].first()
    assert 30 < psnr["lmdb.jpeg"] < 60 and psnr["disk.source"] == np.inf and np.isnan(psnr["hdf5"])
    # every encoded store's warm reads are paired with Pillow alone on the same bytes in memory
    dec = df[df["experiment"] == "decode"]
    assert set(dec["backend"]) == {"disk.source", "lmdb.jpeg", "tar.png", "parquet.source"}
    assert len(dec) == 4 * cfg["repeats"] and set(dec["images"]) == {60}
    # image_bytes: the mean pixels per image of what was stored
    big = df[(df["experiment"] == "store_many") & (df["n"] == 60)].groupby("backend")["image_bytes"].first()
    assert big["npy"] == pytest.approx(np.prod(shapes, axis=1)[np.arange(60) % 40].mean())
    for exp in ("epoch", "random_read", "read_single"):
        assert set(df.loc[df["experiment"] == exp, "backend"]) == set(BACKENDS), exp
    summary = (out / "summary.md").read_text()
    assert "**Left out of this run**: article-disk: it takes images of one shape only" in summary
    assert "article-hdf5: it takes images of one shape only" in (out / "report/landing.rst").read_text()
    assert "## encodings" in summary and "| lmdb.jpeg | jpeg-q90 |" in summary
    assert (out / "plots/encodings.png").stat().st_size > 10_000
    # the source store holds the files themselves, in class folders
    src = out / "stores/disk.source/60"
    width = len(str(len(classes) - 1))
    assert sorted(p.name for p in src.iterdir() if p.is_dir()) == [f"{i:0{width}d}" for i in range(len(classes))]


def test_the_readmes_own_folder_command_plans_every_backend_that_takes_photos_of_many_sizes(run, tmp_path):
    """The README's command on a folder of photographs, with the default config.yaml's backends."""
    work, cfg, root = run
    clean = tmp_path / "clean"
    for f in root.rglob("*"):  # the folder without its bad files, as a user's would be
        if f.is_file() and f.stat().st_size and f.suffix.lower() in (".jpg", ".png"):
            (clean / f.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            (clean / f.relative_to(root)).write_bytes(f.read_bytes())
    p = snakemake(tmp_path / "wf", "-n", "--config", "dataset=folder", f"folder={{path: {clean}}}", "n_images=50",
                  "cutoffs=[10,50]")
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    planned = set(re.findall(r"wildcards: .*backend=([\w.-]+)", out))
    article = [b for b in backends.names() if b.startswith("article-")]
    assert planned == set(small_config()["backends"]) - set(article), planned  # config.yaml's
    left = [x for x in p.stderr.splitlines() if x.startswith("imgbench: left out of this run: ")]
    assert len(left) == 1 and all(b in left[0] for b in article), p.stderr[-2000:]


def test_changing_the_folder_reruns_its_dataset_stage(run):
    work, cfg, root = run
    p = snakemake(work, "-n", config=cfg)
    assert "Nothing to be done" in p.stdout + p.stderr, p.stdout
    cls = sorted(p for p in root.iterdir() if p.is_dir())[0]
    Image.new("RGB", (70, 90), "red").save(cls / "new.png")
    try:
        p = snakemake(work, "-n", config=cfg)
        assert "folder" in jobs_run(p), p.stdout
    finally:
        (cls / "new.png").unlink()


def test_two_folders_get_two_result_directories(run, tmp_path):
    work, cfg, root = run
    other = folder_config(root, folder={**cfg["folder"], "name": None})
    p = snakemake(work, "-n", config=other)
    assert "results/folder-holiday/timings.csv" in p.stdout + p.stderr and "folder-photos" not in p.stdout


def test_bad_file_stops_the_dataset_stage_with_one_line(run, tmp_path):
    work, cfg, root = run
    cfg = folder_config(root, folder={**cfg["folder"], "on_bad_file": "error", "name": "strict"})
    p = snakemake(tmp_path, "dataset", config=cfg)
    assert p.returncode != 0
    line = [x for x in (p.stdout + p.stderr).splitlines() if x.startswith("imgbench error in rule folder")]
    assert len(line) == 1 and "1 file under" in line[0] and "empty.png (" in line[0], p.stderr[-2000:]
    assert "set folder.on_bad_file: skip" in line[0]
    assert not (tmp_path / "data/folder-strict/pixels.npy").exists()


def test_sample_folder_dataset_stage(tmp_path):
    cfg = small_config(dataset="sample-folder", sample_folder={"files": 50}, n_images=50, cutoffs=[50],
                       backends=["lmdb"])
    p = snakemake(tmp_path, "dataset", config=cfg)
    assert p.returncode == 0, p.stderr[-2000:]
    files = list((tmp_path / "data/sample-folder/files").rglob("*.*"))
    assert len([f for f in files if not f.name.startswith(".")]) == 50
    assert len(np.load(tmp_path / "data/sample-folder/shapes.npy")) == 50


def test_too_many_images_for_the_disk_is_a_clear_error(tmp_path):
    cfg = small_config(dataset="sample-folder", sample_folder={"files": 20}, n_images=10**9, cutoffs=[10],
                       backends=["lmdb"])
    p = snakemake(tmp_path, "dataset", config=cfg)
    assert p.returncode != 0
    line = [x for x in (p.stdout + p.stderr).splitlines() if x.startswith("imgbench error in rule folder")]
    assert len(line) == 1 and "lower n_images and cutoffs" in line[0], p.stderr[-2000:]
