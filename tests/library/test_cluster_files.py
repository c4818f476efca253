"""The cluster files agree with the project: conda env = pyproject dependencies, every rule has it."""
import re

import yaml

from helpers import REPO

# pyproject name -> conda-forge name; snakemake itself is not needed inside a rule's env.
CONDA_NAMES = {"pillow": "pillow", "lmdb": "python-lmdb", "matplotlib": "matplotlib-base", "pyyaml": "pyyaml",
               "xxhash": "python-xxhash", "opencv-python-headless": "py-opencv"}


def _requirements() -> dict:
    """pyproject's dependencies: PyPI name (lower case) -> version bound."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.match(r"([A-Za-z0-9_-]+)(\[[^\]]*\])?\s*(.*)", d)
        out[m.group(1).lower()] = m.group(3).replace(" ", "")
    return out


def _pyproject_deps() -> dict:
    return {CONDA_NAMES.get(name, name): bound for name, bound in _requirements().items() if name != "snakemake"}


def test_conda_env_has_the_pyproject_dependencies_and_bounds():
    env = yaml.safe_load((REPO / "envs/imgbench.yaml").read_text())
    conda = {}
    for d in env["dependencies"]:
        name, _, bound = d.partition(" ")
        conda[name] = bound.replace(" ", "")
    python = conda.pop("python")
    assert python == ">=3.11"
    assert conda == _pyproject_deps()


def test_every_python_rule_uses_the_conda_env():
    for smk in (REPO / "rules").glob("*.smk"):
        rules = re.split(r"\n(?=rule \w+:)", smk.read_text())
        for r in rules:
            if "script:" in r:
                name = re.match(r"rule (\w+):", r).group(1)
                assert "conda:\n        CONDA_ENV" in r, f"{smk.name}: rule {name} has no conda env"
    common = (REPO / "rules/common.smk").read_text()
    assert 'CONDA_ENV = "../envs/imgbench.yaml"' in common


# Imported by the library, not declared: what zarr itself brings for its crc32c codec (zarr_store
# tries both names, as zarr does).
THROUGH_ZARR = {"google_crc32c", "crc32c"}


def test_every_library_and_script_import_is_a_declared_dependency():
    """A fresh install gets what the rule scripts import: the report's table once needed itables,
    which only a hand-installed machine had."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    import tomllib

    declared = set(_requirements())
    # the torch-* loaders import PyTorch only when asked, and the litdata backend LitData: each
    # is left out without its extra
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared |= {re.match(r"[A-Za-z0-9_-]+", d).group(0).lower() for d in extras["torch"] + extras["litdata"]}
    dists = packages_distributions()
    missing = set()
    for path in [*(REPO / "imgbench").rglob("*.py"), *(REPO / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top in THROUGH_ZARR or top in ("imgbench", "_setup"):
                    continue
                names_of = {d.lower() for d in dists.get(top, [top])}
                if not names_of & declared:
                    missing.add(f"{top} ({path.relative_to(REPO)})")
    assert not missing, f"imported but not in pyproject's dependencies: {sorted(missing)}"
