"""The lance backend: Lance's own library reads the store; a process forked from one that
called Lance reads through a server process (readers across processes: test_reader.py)."""
import os

import numpy as np
import pytest

from imgbench import backends
from imgbench.backends import _lance_server, lance_store
from helpers import images_and_labels

lance = pytest.importorskip("lance")


@pytest.mark.parametrize("encoding", ["raw", "png"])
def test_lance_reads_the_store_as_its_docs_show(tmp_path, encoding):
    images, labels = images_and_labels(200)
    backends.get("lance", encoding=encoding).store_many(tmp_path / "s", images, labels)
    ds = lance.dataset(str(tmp_path / "s/images.lance"))
    t = ds.take([3, 150], columns=["id", "label", "image"])
    assert t.column("id").to_pylist() == [3, 150] and t.column("label").to_pylist() == labels[[3, 150]].tolist()
    if encoding == "raw":
        got = np.frombuffer(t.column("image")[1].as_py(), np.uint8).reshape(images.shape[1:])
        np.testing.assert_array_equal(got, images[150])


def test_a_child_forked_from_a_process_that_called_lance_reads_through_a_server(tmp_path):
    """Lance's thread pools do not survive fork (a forked child's first take spun for ever, one
    test run in three): such a child never calls Lance itself."""
    images, labels = images_and_labels(300)
    b = backends.get("lance")
    b.store_many(tmp_path / "s", images, labels)
    r = b.reader(tmp_path / "s")
    r.get_batch([1, 2])
    assert isinstance(r._h.d.ds, lance_store._Local)  # this process calls Lance itself
    read_r, write_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's reader, reopened here
        try:
            got, got_labels = r.get_batch([5, 299, 5])
            ok = (isinstance(r._h.d.ds, _lance_server.Remote) and np.array_equal(got, images[[5, 299, 5]])
                  and np.array_equal(got_labels, labels[[5, 299, 5]]))
            server = r._h.d.ds.proc
            r.close()
            ok = ok and server.wait(10) == 0  # the server ends with the reader
            os.write(write_w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_w)
    assert os.read(read_r, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read_r)


def test_a_data_file_outside_the_store_is_refused(tmp_path):
    """Lance's manifests may name files under other base paths; a store's stay in its data/."""
    images, labels = images_and_labels(50)
    b = backends.get("lance")
    b.store_many(tmp_path / "s", images, labels)
    data = tmp_path / "s/images.lance/data"
    (f,) = list(data.iterdir())
    f.rename(tmp_path / f.name)  # the manifest now names a file the store does not have
    with pytest.raises(backends.NotAStoreError, match="not a file of the store's data/"):
        b.read_many(tmp_path / "s")
