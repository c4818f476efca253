import hashlib
import io
import os
import pickle
import pickletools
import tarfile
import time

import numpy as np
import pytest


from imgbench.data import cifar, dataset, sample
from imgbench.data.download import DownloadError, download


def _opcodes(payload: bytes) -> set:
    return {(op.name, arg if isinstance(arg, str) else None) for op, arg, _ in pickletools.genops(payload)}


def test_written_archive_decodes_exactly(tiny_archive):
    path, train, labels = tiny_archive
    images, got_labels, classes = cifar.load_archive(path)
    assert images.dtype == np.uint8 and images.shape == (100, 32, 32, 3)
    np.testing.assert_array_equal(images, train)
    np.testing.assert_array_equal(got_labels, labels)
    assert classes == [f"class{i}" for i in range(10)]


def test_archive_has_the_official_layout_and_python2_pickles(tiny_archive):
    path, train, _ = tiny_archive
    with tarfile.open(path) as tar:
        names = tar.getnames()
        raw = tar.extractfile("cifar-10-batches-py/data_batch_1").read()
    assert names[0] == "cifar-10-batches-py"
    assert [n.split("/")[-1] for n in names[1:]] == cifar.TRAIN_BATCHES + ["test_batch", "batches.meta"]
    ops = _opcodes(raw)
    assert raw[:2] == b"\x80\x02"  # protocol 2
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert not any(name in ("BINBYTES", "SHORT_BINBYTES", "BINUNICODE") for name, _ in ops)
    # What every CIFAR tutorial does with the real file works on ours, byte keys and CHW rows.
    batch = pickle.loads(raw, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].shape == (20, 3072)
    np.testing.assert_array_equal(batch[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0), train[0])


def _archive_with(tmp_path, member_payload: bytes):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in cifar.TRAIN_BATCHES + ["batches.meta"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(member_payload)
            tar.addfile(info, io.BytesIO(member_payload))
    return path


class _RunsCommand:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("protocol", [2, 5])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _RunsCommand(f"touch {marker}")}, protocol=protocol)
    with pytest.raises(cifar.ArchiveError, match=r"refusing to load (posix|os)\.system"):
        cifar.load_archive(_archive_with(tmp_path, payload))
    assert not marker.exists()


def test_allowed_globals_with_hostile_arguments_are_refused():
    with pytest.raises(pickle.UnpicklingError, match="only uint8"):
        cifar.safe_loads(b"\x80\x02cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R.")
    with pytest.raises(cifar.ArchiveError, match="no 'data' entry"):
        cifar.decode_batch(cifar.safe_loads(cifar.py2_pickle({b"labels": [1]})))


def test_not_an_archive_gives_a_clear_error(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(cifar.ArchiveError, match="not a readable .tar.gz"):
        cifar.load_archive(bad)


def test_sample_images_are_deterministic_natural_and_balanced():
    a, la = sample.make_images(500, seed=3)
    b, lb = sample.make_images(500, seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.bincount(la, minlength=10).tolist() == [50] * 10
    # Photo crops are smooth: neighbouring pixels differ far less than in uniform noise (~85).
    assert np.abs(np.diff(a.astype(int), axis=2)).mean() < 25
    assert len({x.tobytes() for x in a}) >= 495  # crops clamped at a corner may coincide


def test_repeat_doubles_in_order():
    images = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)
    labels = np.arange(5, dtype=np.uint8)
    im, lab = dataset.repeat_to(images, labels, 12)
    assert lab.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    np.testing.assert_array_equal(im[7], images[2])


# ------------------------------------------------------------------ download


def _md5(b):
    return hashlib.md5(b).hexdigest()


def test_download_success(tmp_path, http_server):
    body = os.urandom(3 * 2**20 + 5)
    http_server.files["/a.tar.gz"] = body
    dest = tmp_path / "raw" / "a.tar.gz"
    download(http_server.url + "/a.tar.gz", dest, _md5(body), log=lambda m: None)
    assert dest.read_bytes() == body
    assert os.listdir(dest.parent) == ["a.tar.gz"]


def test_download_md5_mismatch_leaves_no_file(tmp_path, http_server):
    http_server.files["/a.tar.gz"] = b"corrupted" * 1000
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(DownloadError, match="expected 0{32}"):
        download(http_server.url + "/a.tar.gz", dest, "0" * 32, log=lambda m: None)
    assert os.listdir(tmp_path) == []


def test_download_dropped_half_way_retries_and_succeeds(tmp_path, http_server):
    body = os.urandom(2**20)
    http_server.files["/a.tar.gz"] = body
    http_server.drop_first = 1
    dest = tmp_path / "a.tar.gz"
    lines = []
    download(http_server.url + "/a.tar.gz", dest, _md5(body), backoff=0.05, log=lines.append)
    assert dest.read_bytes() == body and http_server.requests == 2
    assert any("failed" in line for line in lines)


def test_download_dropped_every_time_leaves_no_partial_file(tmp_path, http_server):
    http_server.files["/a.tar.gz"] = os.urandom(2**20)
    http_server.drop_first = 10
    with pytest.raises(DownloadError, match="after 2 tries"):
        download(http_server.url + "/a.tar.gz", tmp_path / "a.tar.gz", "0" * 32, tries=2, backoff=0.05,
                 log=lambda m: None)
    assert os.listdir(tmp_path) == []


def test_download_server_down_fails_quickly(tmp_path, http_server):
    url = http_server.url + "/a.tar.gz"
    http_server.close()
    t = time.monotonic()
    with pytest.raises(DownloadError, match="dataset=sample"):
        download(url, tmp_path / "a.tar.gz", "0" * 32, backoff=0.1, log=lambda m: None,
                 offline_hint="or run with --config dataset=sample")
    assert time.monotonic() - t < 10
    assert os.listdir(tmp_path) == []


def test_existing_file_with_wrong_md5_is_deleted(tmp_path):
    dest = tmp_path / "a.tar.gz"
    dest.write_bytes(b"placed by hand")
    with pytest.raises(DownloadError, match="deleted it"):
        download("http://127.0.0.1:9/never", dest, "0" * 32, log=lambda m: None)
    assert not dest.exists()
