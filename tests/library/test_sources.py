"""A job's code hash follows every import: editing any module a backend imports, directly or not,
changes its hash, and leaves the hash of a backend that does not import it as it was."""
import shutil

import pytest

from helpers import NAMES, REPO
from imgbench.backends.lookup import module
from imgbench.workflow import sources


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A copy of the imgbench package to edit."""
    root = tmp_path_factory.mktemp("pkg") / "imgbench"
    shutil.copytree(REPO / "imgbench", root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _names(paths, root):
    return {str(p.relative_to(root)) for p in paths}


def test_imports_are_found_from_the_source_not_a_pattern():
    npy = _names(sources.files([module("npy")]), sources.ROOT)
    # `from . import checksums, flat`, `from .. import progress` (through parallel), a name from a module
    assert {"backends/npy_store.py", "backends/checksums.py", "backends/flat.py", "progress.py", "images.py",
            "backends/base.py", "backends/store.py"} <= npy
    # a package's __init__ only when a name is imported from it; the table of formats never
    assert "backends/__init__.py" not in npy and "__init__.py" not in npy and "backends/registry.py" not in npy
    assert "backends/lmdb_store.py" not in npy
    assert {"backends/lmdb_store.py", "safepickle.py"} <= _names(sources.files([module("article-lmdb")]), sources.ROOT)


def test_editing_any_module_a_backend_imports_changes_its_hash_and_no_one_elses(package):
    files = {name: sources.files([module(name)], package) for name in NAMES}  # an added comment keeps them
    deps = {name: _names(paths, package) for name, paths in files.items()}
    edited = set().union(*deps.values())
    assert {"backends/checksums.py", "backends/flat.py", "backends/_zarr_shards.py"} <= edited
    for rel in sorted(edited):
        before = {name: sources.digest(files[name], package) for name in NAMES}
        f = package / rel
        text = f.read_text()
        f.write_text(text + "\n# an edit\n")
        try:
            after = {name: sources.digest(files[name], package) for name in NAMES}
        finally:
            f.write_text(text)
        for name in NAMES:
            if rel in deps[name]:
                assert after[name] != before[name], f"editing {rel} did not change {name}'s hash"
            else:
                assert after[name] == before[name], f"editing {rel} changed {name}'s hash, which does not import it"


def test_a_rule_scripts_hash_covers_its_helper_and_the_harness_it_imports(package, tmp_path):
    scripts = tmp_path / "scripts"
    shutil.copytree(REPO / "scripts", scripts)
    h = sources.script_hash.__wrapped__
    before = h(scripts / "epoch.py", package)
    for edit in (scripts / "_setup.py", package / "bench/loader.py", package / "data/dataset.py"):
        text = edit.read_text()
        edit.write_text(text + "\n# an edit\n")
        try:
            assert h(scripts / "epoch.py", package) != before, edit
        finally:
            edit.write_text(text)
    # the table of formats is every backend's own business (adding one reruns only its jobs)
    reg = package / "backends/registry.py"
    text = reg.read_text()
    reg.write_text(text + "\n# an edit\n")
    try:
        assert h(scripts / "epoch.py", package) == before
    finally:
        reg.write_text(text)
