"""The dataset stage through Snakemake (download from a real local server, the sample archive),
and bad configs that stop the run before any job."""
import hashlib
import json
import time

import numpy as np
import pytest

from helpers import jobs_run, small_config, snakemake
from imgbench.data import sample


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ------------------------------------------------------------------ through Snakemake

DATA_OUTPUTS = ["classes.json", "images.npy", "labels.npy", "images_2500.npy", "labels_2500.npy"]


@pytest.mark.slow
def test_download_rule_against_local_server(tmp_path, http_server, tiny_archive):
    path, train, labels = tiny_archive
    body = path.read_bytes()
    http_server.files["/cifar-10-python.tar.gz"] = body
    cfg = small_config(dataset="cifar10", n_images=250,
                       cifar10={"url": http_server.url + "/cifar-10-python.tar.gz", "md5": _md5(body)})
    p = snakemake(tmp_path, "dataset", config=cfg)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "data/raw/cifar-10-python.tar.gz").read_bytes() == body
    images = np.load(tmp_path / "data/cifar10/images_250.npy")
    np.testing.assert_array_equal(images, np.concatenate([train, train, train[:50]]))
    assert "downloading" in (tmp_path / "logs/dataset/download_cifar10.log").read_text()


@pytest.mark.slow
def test_download_rule_offline_fails_within_a_minute_with_one_clear_line(tmp_path, http_server):
    url = http_server.url + "/cifar-10-python.tar.gz"
    http_server.close()
    cfg = small_config(dataset="cifar10", cifar10={"url": url, "md5": "0" * 32})
    t = time.monotonic()
    p = snakemake(tmp_path, "dataset", config=cfg)
    assert time.monotonic() - t < 60
    assert p.returncode != 0
    line = [x for x in p.stderr.splitlines() if x.startswith("imgbench error")]
    assert len(line) == 1 and "data/raw/cifar-10-python.tar.gz" in line[0] and "dataset=sample" in line[0]
    assert not list((tmp_path / "data").rglob("*.gz")) and not list((tmp_path / "data").rglob("*.part"))


@pytest.mark.slow
def test_sample_dataset_stage_end_to_end_and_rerun_does_nothing(tmp_path):
    cfg = small_config()
    p = snakemake(tmp_path, "dataset", config=cfg)
    assert p.returncode == 0, p.stderr
    for name in DATA_OUTPUTS:
        assert (tmp_path / "data/sample" / name).is_file(), name
    assert (tmp_path / "data/raw/sample-python.tar.gz").is_file()
    images = np.load(tmp_path / "data/sample/images.npy")
    labels = np.load(tmp_path / "data/sample/labels.npy")
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8 and labels.shape == (1000,)
    big = np.load(tmp_path / "data/sample/images_2500.npy")
    np.testing.assert_array_equal(big[1000:2000], images)
    np.testing.assert_array_equal(big[2000:], images[:500])
    assert json.loads((tmp_path / "data/sample/classes.json").read_text()) == sample.CLASSES
    # The archive is reproducible: the same config builds the same bytes.
    first = (tmp_path / "data/raw/sample-python.tar.gz").read_bytes()
    again = snakemake(tmp_path, "dataset", config=cfg)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert jobs_run(again) == []
    sample.build_archive(tmp_path / "b.tar.gz", images_per_batch=200)
    assert (tmp_path / "b.tar.gz").read_bytes() == first


BAD_CONFIGS = [
    ({"datset": "sample"}, "datset: unknown key"),
    ({"dataset": "imagenet"}, "dataset: 'imagenet' is not allowed; choose one of: cifar10, sample, sample-folder, "
                              "folder"),
    ({"cutoffs": [10, 5000]}, "cutoffs: 5000 is larger than n_images (2500)"),
    ({"backends": ["disk", "jpeg-files"]}, "backends[1]: 'jpeg-files' is not a backend; choose one of: article-disk, "
                                           "article-lmdb, article-hdf5, disk, lmdb, hdf5, npy, zarr, tar, parquet"),
    ({"backends": ["disk", "npy.png"]}, "backends: npy.png: npy stores images as raw, not 'png'"),
    ({"backends": ["lmdb.source"]}, "backends: lmdb.source stores the original image files, which only folder "
                                    "datasets have"),
    ({"dataset": "folder"}, "folder.path: not set; dataset folder needs folder.path"),
    ({"dataset": "folder", "folder": {"path": "/nowhere"}}, "folder.path: /nowhere is not a directory"),
    ({"dataset": "sample-folder", "backends": ["article-hdf5"]}, "backends: article-hdf5 store only images of one "
                                                                 "shape, and a folder's images may differ: none is "
                                                                 "left to run; choose others (e.g. hdf5)"),
    ({"repeats": "three"}, "repeats: 'three' is not of type integer"),
    ({"repeats": 0}, "repeats: 0 is out of range; it must be at least 1"),
]


@pytest.mark.parametrize("change,message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, change, message):
    p = snakemake(tmp_path, config=small_config(**change))
    assert p.returncode != 0
    errors = [x for x in (p.stdout + p.stderr).splitlines() if "config error" in x]
    assert errors == [f"config error: {message}" + errors[0][len(f"config error: {message}"):]], p.stderr
    assert message in errors[0]
    assert not (tmp_path / "data").exists() and jobs_run(p) == []
