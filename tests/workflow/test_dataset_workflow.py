"""The dataset stage through Snakemake (download from a real local server, the sample archive),
and bad configs that stop the run before any job."""
import hashlib
import json
import time

import numpy as np
import pytest

from helpers import bad_configs, jobs_run, small_config, snakemake

BAD_CONFIGS = bad_configs()
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


# Every bad config's message is checked in tests/library/test_config.py; two go through Snakemake
# here: one the schema finds, one the workflow's own checks find.
@pytest.mark.parametrize("change,message", [BAD_CONFIGS[0], BAD_CONFIGS[8]], ids=["schema", "workflow"])
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, change, message):
    p = snakemake(tmp_path, config=small_config(**change))
    assert p.returncode != 0
    errors = [x for x in (p.stdout + p.stderr).splitlines() if "config error" in x]
    assert errors == [f"config error: {message}" + errors[0][len(f"config error: {message}"):]], p.stderr
    assert message in errors[0]
    assert not (tmp_path / "data").exists() and jobs_run(p) == []
