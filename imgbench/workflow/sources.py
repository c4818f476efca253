"""Which code a job's results depend on, so that editing it reruns exactly those jobs.

A job's params carry a hash of the source of every module of this package its code imports,
directly or not, found from the real import statements (`ast`, every `import` and `from ...
import` anywhere in a module, functions included), not by running them. A package's
`__init__.py` counts when names are imported from it, not merely because a module inside it is
imported (importing imgbench.backends.npy_store runs imgbench/backends/__init__.py, but npy's
results do not depend on what it holds).

The table of formats (backends/registry.py, nothing but the table) is left out of the harness's
hash: what it says of a format (its module) is in that format's own hash, so adding a format
reruns only its jobs.
"""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = __name__.partition(".")[0]
ROOT = Path(__file__).resolve().parent.parent  # the package's directory


def _path(module: str, root: Path) -> Path | None:
    """The file of a module of the package under `root` (a package: its __init__.py), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path, module: str, root: Path) -> set[str]:
    """The package's modules that the source at `path` (module `module`) imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            for a in node.names:  # a submodule, or a name defined in `base` itself
                found.add(f"{base}.{a.name}" if _path(f"{base}.{a.name}", root) else base)
    return found


def _script_imports(script: Path, root: Path) -> tuple[list[Path], set[str]]:
    """A script's helper files beside it that it imports (scripts/_setup.py), those included, and
    the package modules they all import."""
    helpers, modules, todo = [], set(), [Path(script)]
    while todo:
        path = todo.pop()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
            for name in names:
                beside = path.parent / f"{name}.py"
                if beside.is_file() and beside not in helpers and beside != Path(script):
                    helpers.append(beside)
                    todo.append(beside)
        modules |= _imports(path, "__main__", root)
    return sorted(helpers), modules


def files(modules, root: Path = ROOT) -> list[Path]:
    """The source files of `modules` and of every package module they import, directly or not,
    sorted."""
    todo = list(modules)
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _path(name, root)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, name, root) - set(seen))
    return sorted(set(seen.values()))


def digest(paths, root: Path = ROOT) -> str:
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        name = p.relative_to(root) if p.is_relative_to(root) else p.name
        h.update(str(name).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def backend_hash(label: str, root: Path = ROOT) -> str:
    """A hash of the code a backend's results depend on: its module and every package module it
    imports, directly or not (e.g. npy: npy_store, base, checksums, flat, store, ..., images)."""
    from ..backends.lookup import module

    return digest(files([module(label)], root), root)


@lru_cache(maxsize=None)
def script_hash(script: Path, root: Path = ROOT) -> str:
    """A hash of the code a rule script runs besides itself (Snakemake tracks the script): its
    helpers beside it and every package module they and it import, directly or not, so editing
    the harness reruns the jobs it measures."""
    helpers, modules = _script_imports(Path(script), root)
    registry = _path(f"{PACKAGE}.backends.registry", root)
    return digest([*helpers, *(p for p in files(modules, root) if p != registry)], root)


@lru_cache(maxsize=None)
def client_hash(label: str, client: str, root: Path = ROOT) -> str:
    """A hash of the code a client's reads of a backend's store depend on beyond the harness: for
    `stock`, the format's stock reader module (and what it imports); nothing for `imgbench`,
    whose reader is in the backend's own hash."""
    if client == "imgbench":
        return ""
    from ..clients import STOCK

    return digest(files([f"{PACKAGE}.clients.{STOCK[label.partition('.')[0]][0]}"], root), root)
