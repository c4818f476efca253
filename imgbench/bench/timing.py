"""Measuring tools: wall time with peak memory, cold caches, bytes on disk, the machine."""
from __future__ import annotations

import gc
import os
import platform
import resource
import socket
import time
from importlib import metadata

import numpy as np


def _vm_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so each repeat gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss() -> int:
    """This process's resident set now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn, *args, **kwargs) -> tuple[float, int, int, object]:
    """Run fn once: (seconds, peak RSS of this process during the call, RSS just before it, result).

    Garbage is collected before the clock starts so an earlier repeat's leftovers are not
    paid for here. The resident set before is read after that collection and the peak's reset:
    read any earlier, freed garbage could put it above the peak (a CI run saw it). The peak
    counts the returned arrays (see _touch). Where the peak cannot be reset, it is the
    process's peak so far.
    """
    gc.collect()
    reset = _reset_peak()
    before = rss()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    _touch(result)
    peak = _vm_hwm() if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return seconds, peak, before, result


def _touch(result) -> None:
    """Map every page of the returned arrays into this process (after the clock stopped).

    An array that worker processes filled in shared memory is not yet in this process's
    resident set; touching it counts it, as the caller will. Resident arrays cost nothing.
    """
    for a in result if isinstance(result, (tuple, list)) else (result,):
        if isinstance(a, np.ndarray) and a.size and a.flags.c_contiguous:
            a.reshape(-1).view(np.uint8)[::4096].max()


def _files(path) -> list[str]:
    """Every file under `path` (or `path` itself), as strings: a pathlib.Path for each of a
    store's 100,000 PNG files cost more than evicting them (measured: 10 of the 27 s of an epoch
    job of the article's PNG store)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    return [os.path.join(dirpath, n) for dirpath, _, names in os.walk(path) for n in names]


def disk_usage(path) -> dict:
    """Apparent bytes (file sizes), allocated bytes (blocks on disk) and the number of files."""
    apparent = allocated = files = 0
    for f in _files(path):
        if os.path.basename(f) == ".snakemake_timestamp":  # Snakemake's marker in directory() outputs
            continue
        st = os.stat(f)
        apparent += st.st_size
        allocated += st.st_blocks * 512
        files += 1
    return {"bytes_apparent": apparent, "bytes_allocated": allocated, "files": files}


def _drop(files: list[str]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def evict(path) -> bool:
    """Drop the store's files from the page cache (DONTNEED drops only clean pages, so one
    sync() first writes every dirty page back: ten times cheaper than an fsync per file when a
    store is 100,000 files). Many files are dropped by a thread per core (open, fadvise and close
    release the GIL).

    Returns False where the OS has no posix_fadvise; reads are then not really cold.
    """
    from ..backends.parallel import available_cores

    if not hasattr(os, "posix_fadvise"):
        return False
    os.sync()
    files = _files(path)
    threads = min(available_cores(), max(1, len(files) // 1000))
    if threads == 1:
        _drop(files)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(_drop, [files[k::threads] for k in range(threads)]))
    return True


def warm(path, group: int = 256) -> None:
    """Read every byte of the store's files once, so that all of it is in the page cache (what
    a warm read assumes) without paying for decoding it. Files are announced to the kernel
    (POSIX_FADV_WILLNEED) `group` at a time before they are read, so a cold store's many small
    files are fetched together rather than one after another."""
    buf = bytearray(1 << 20)
    files = _files(path)
    for start in range(0, len(files), group):
        fds = [os.open(f, os.O_RDONLY) for f in files[start:start + group]]
        try:
            if hasattr(os, "posix_fadvise"):
                for fd in fds:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            for fd in fds:
                while os.readv(fd, [buf]):
                    pass
        finally:
            for fd in fds:
                os.close(fd)


def settle(path) -> None:
    """Put every byte of the store in the page cache in one known state: evicted, then read.

    Pages a store's writer left in the cache and pages read back from disk can differ (in size,
    and so in the cost of copying them out): reading the same warm file took 0.068 s in one
    state and 0.047 s in the other. Every warm measurement starts from this state, so none
    depends on what happened to its store before."""
    evict(path)
    warm(path)


def tree_digest(path) -> str:
    """A BLAKE2 digest of every file's relative name, size and bytes under `path`: two stores
    with the same digest hold the same bytes. The manifest counts without the uuid and digest
    that make every store unique."""
    import hashlib
    import json

    root, h = os.fspath(path), hashlib.blake2b(digest_size=32)
    names = []
    for dirpath, _, files in os.walk(root):
        names += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    buf = bytearray(1 << 22)
    for name in sorted(names):
        if name == "imgbench.json":
            with open(os.path.join(root, name), "rb") as f:
                meta = json.loads(f.read())
            h.update(json.dumps({k: v for k, v in meta.items() if k not in ("uuid", "digest")},
                                sort_keys=True).encode() + b"\0")
            continue
        with open(os.path.join(root, name), "rb", buffering=0) as f:
            h.update(f"{name}\0{os.fstat(f.fileno()).st_size}\0".encode())
            while got := f.readinto(buf):
                h.update(memoryview(buf)[:got])
    return h.hexdigest()


def filesystem(path) -> str:
    """File system type of the mount holding `path` (e.g. ext4, nfs, lustre), from /proc/mounts."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        pass
    return fstype


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(path=".") -> dict:
    """Where a measurement was taken: enough to tell results from different nodes apart."""
    import h5py

    from .. import __version__

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": cores,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "pillow": _version("Pillow"),
        "lmdb": _version("lmdb"),
        "h5py": _version("h5py"),
        "hdf5": h5py.version.hdf5_version,
        "imgbench": __version__,
        "xxhash": _version("xxhash"),
        "filesystem": filesystem(path),
    }
