"""Faults done to real stores: what bit rot, a cut copy, a lost file, an edited label or manifest,
a killed writer, a full disk and a concurrent writer do, and what each backend then does.

Used by the integrity experiment (scripts/integrity.py) and by the tests. Damage is done to the
files themselves, as it happens outside: a byte of an image's stored bytes is found in the
store's files and flipped; a file is cut to half; a file is deleted. Only a label change needs
to know each format: each backend's `_change_label` does it where its labels live.

    python -m imgbench.bench.faults disk-full BACKEND OPTIONS SIZE DIR   # in a private tmpfs (see disk_full)
"""
from __future__ import annotations

import json
import mmap
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..backends import get, manifest, variant
from ..backends.atomic import leftovers
from ..backends.store import MANIFEST
from .rows import DAMAGE


def _files(path: Path) -> list[Path]:
    return sorted((p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST),
                  key=lambda p: -p.stat().st_size)


def locate(path, image_id: int) -> tuple[Path, int, int]:
    """(file, offset, size) of the bytes the store keeps for image `image_id`, found verbatim in
    its files; the largest file's middle third if they are not stored verbatim (compressed)."""
    path = Path(path)
    b = get(manifest(path)["backend"])
    store = b.open(path)
    h = b._handle(store)
    try:
        data = h.stored(image_id - store.first_id)[0]
        needle = bytes(data)
        at = h.locate(image_id - store.first_id)
        if at is not None:  # the format knows where its live copy is (LMDB)
            return path / at[0], at[1], len(needle)
    finally:
        h.close()
    files = _files(path)
    for f in files:
        with open(f, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < len(needle) or not size:
                continue
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                at = mm.find(needle)
        if at >= 0:
            return f, at, len(needle)
    f = files[0]
    size = f.stat().st_size
    return f, size // 3, max(1, size // 3)


def flip_byte(path, image_id: int) -> str:
    """Flip every bit of the middle byte of an image's stored bytes; the file changed."""
    f, offset, size = locate(path, image_id)
    with open(f, "r+b") as fh:
        fh.seek(offset + size // 2)
        byte = fh.read(1)
        fh.seek(offset + size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return str(f.relative_to(path))


def truncate(path, image_id: int) -> str:
    """Cut the file holding an image's bytes to half its length."""
    f = locate(path, image_id)[0]
    os.truncate(f, f.stat().st_size // 2)
    return str(f.relative_to(path))


def delete_file(path, image_id: int) -> str:
    """Delete the file holding an image's bytes."""
    f = locate(path, image_id)[0]
    f.unlink()
    return str(f.relative_to(path))


def change_label(path, image_id: int) -> str:
    """Add 1 to an image's label where the store keeps it (each format's own `_change_label`)."""
    path = Path(path)
    b = get(manifest(path)["backend"])
    store = b.open(path)
    return b._change_label(path, store, image_id - store.first_id)


def mismatch_manifest(path, image_id: int = 0) -> str:
    """The manifest says one image fewer than the store holds (its digest left as it was)."""
    f = Path(path) / MANIFEST
    meta = json.loads(f.read_text())
    meta["count"] -= 1
    f.write_text(json.dumps(meta) + "\n")
    return MANIFEST


INJECT = dict(zip(DAMAGE, (flip_byte, truncate, delete_file, change_label, mismatch_manifest)))


# ------------------------------------------------------------------------------- what happens


def _same(got, want) -> bool:
    if len(got) != len(want):
        return False
    if isinstance(got, np.ndarray) and isinstance(want, np.ndarray):
        return np.array_equal(got, want)
    return all(np.array_equal(a, b) for a, b in zip(got, want))


def judge(read, images, labels) -> str:
    """What `read()` -> (images, labels) gives against the truth: correct, wrong pixels, wrong
    labels, a wrong number of images, or the error it raised."""
    try:
        got, got_labels = read()
    except Exception as e:  # any error counts as noticed: its type and message are the detail
        return f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if len(got) != len(images):
        return f"wrong count: {len(got)} images of {len(images)}"
    if not _same(got, images):
        return "wrong pixels"
    if not np.array_equal(np.asarray(got_labels), labels):
        return "wrong labels"
    return "correct"


def in_child(fn, *args, timeout: float = 600):
    """fn(*args) in a forked process, so a crash (SIGBUS from a cut memory-mapped file, a segfault
    in a library) is an outcome, not the end of the caller: its result, or "crash: SIGNAL"."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def run():
        try:
            send.send(fn(*args))
        except BaseException as e:  # reported to the parent, whatever it was
            send.send(f"error: {type(e).__name__}: {e}")

    p = ctx.Process(target=run)
    p.start()
    send.close()
    result = None
    if recv.poll(timeout):
        try:
            result = recv.recv()
        except EOFError:  # it died without answering
            pass
    p.join(10)
    if result is None:
        if p.exitcode is None:
            p.kill()
            p.join()
            return f"hang: no answer in {timeout:.0f}s"
        if p.exitcode < 0:
            return f"crash: {signal.Signals(-p.exitcode).name}"
        return f"crash: exit status {p.exitcode}"
    return result


def damage(label: str, options: dict, images, labels, root: Path, fault: str, image_id: int | None = None,
           sources=None, expected=None) -> dict:
    """One store of `images`, `fault` done to it, then what verify, a plain read_many and a
    reader with verify=True make of it (`expected`: what the store reads back when intact, if
    not `images`: a JPEG store's decode)."""
    b = variant(label, **options)
    truth = images if expected is None else expected
    path = Path(root) / f"{label}-{fault.replace(' ', '-')}"
    shutil.rmtree(path, ignore_errors=True)
    b.store_many(path, images, labels, sources=sources)
    image_id = len(images) // 2 if image_id is None else image_id
    where = INJECT[fault](path, image_id)

    def verify():
        r = b.verify(path)
        return "missed" if r.ok else "detected: " + r.summary(1).splitlines()[-1].removeprefix("DAMAGED: ")

    def verified():
        with b.reader(path, verify=True) as r:
            return r.get_batch(np.arange(len(images)))

    row = {"fault": fault, "file": where, "image_id": image_id,
           "verify": in_child(verify),
           "read": in_child(judge, lambda: b.read_many(path), truth, labels),
           "verified_read": in_child(judge, verified, truth, labels)}
    shutil.rmtree(path, ignore_errors=True)
    return row


# ------------------------------------------------------------------------------- events


def _running_in_group(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Zombies do not count: the killed writer's
    coding workers are reaped by whoever adopted them, maybe never (kill(0) answered for a zombie
    until the 10 s wait ran out, twice per tar store in a folder run)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _own_progress_lock() -> None:
    """In the writer about to be killed: a tqdm lock of its own. tqdm's progress bars (which
    datasets and LitData draw while writing) share one multiprocessing lock with the process
    that forked them; a writer killed while holding it left every later bar here, and so this
    job, waiting for ever."""
    try:
        import threading

        import tqdm.std as t
    except ImportError:
        return
    lock = t.TqdmDefaultWriteLock
    if hasattr(lock, "mp_lock"):
        del lock.mp_lock  # create_mp_lock makes a new one only where there is none
    lock.th_lock = threading.RLock()  # a parent's thread may have held it as it forked
    fresh = lock()
    todo = [t.tqdm]  # a subclass (datasets', LitData's) keeps the lock it first used as its own
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is t.tqdm or "_lock" in vars(cls):
            cls._lock = fresh


def killed_store(label: str, options: dict, images, labels, root: Path, sources=None, tries: int = 3) -> dict:
    """SIGKILL a process (and its coding workers) storing `images` over an existing store, as soon
    as it has written a file; then what is at the path, what is left beside it, and whether the
    same store again succeeds and cleans up."""
    b = variant(label, **options)
    path = Path(root) / f"{label}-killed"
    shutil.rmtree(path, ignore_errors=True)
    k = max(1, len(images) // 10)
    b.store_many(path, images[:k], labels[:k], sources=None if sources is None else sources[:k])
    for _ in range(tries):
        pid = os.fork()
        if pid == 0:  # the writer: its own process group, so its forked coders die with it
            try:
                os.setpgid(0, 0)
                _own_progress_lock()
                b.store_many(path, images, labels, sources=sources, overwrite=True)
            finally:
                os._exit(0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            tmp = [p for p in path.parent.glob(f".{path.name}.tmp-*")]
            if tmp and any(os.scandir(tmp[0])) or os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.0005)
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10 and _running_in_group(pid):  # its coding workers die a moment later
                time.sleep(0.005)
        except (ProcessLookupError, ChildProcessError):
            pass
        old = b.verify(path)
        if old.count == k:  # killed before it finished (else the new store is there: try again)
            break
        b.store_many(path, images[:k], labels[:k], sources=None if sources is None else sources[:k], overwrite=True)
    else:
        return {"fault": "killed store", "file": "-", "verify": "-", "read": "not run: it always finished first",
                "verified_read": "-"}
    left = leftovers(path)
    b.store_many(path, images, labels, sources=sources, overwrite=True)
    again = b.verify(path)
    row = {"fault": "killed store", "file": ", ".join(left) or "-",
           "verify": "old store intact" if old.ok else "old store damaged: " + old.summary(1).splitlines()[-1],
           "read": f"{len(left)} leftover(s) beside it",
           "verified_read": ("stored again: verified, leftovers swept" if again.ok and not leftovers(path)
                             else f"stored again: ok={again.ok}, left {leftovers(path)}")}
    shutil.rmtree(path, ignore_errors=True)
    return row


def concurrent_overwrite(label: str, options: dict, images, labels, root: Path, sources=None, expected=None) -> dict:
    """A reader opens a store and reads a batch; another process replaces the store with other
    images (overwrite=True); then the reader reads every image again, and a new reader opens."""
    b = variant(label, **options)
    path = Path(root) / f"{label}-overwrite"
    shutil.rmtree(path, ignore_errors=True)
    b.store_many(path, images, labels, sources=sources)
    order = np.arange(len(images))[::-1]  # the new store: the same images in reverse order
    new_images = images[order]
    new_sources = None if sources is None else [sources[i] for i in order]
    truth = images if expected is None else expected
    new_truth = truth[order]
    reader = b.reader(path)
    reader.get_batch([0, 1])
    pid = os.fork()
    if pid == 0:
        try:
            b.store_many(path, new_images, labels[order], sources=new_sources, overwrite=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    ids = np.arange(len(images))
    try:
        got, got_labels = reader.get_batch(ids)
        if _same(got, truth) and np.array_equal(got_labels, labels):
            old = "old images"
        elif _same(got, new_truth):
            old = "new images"
        else:
            old = "a mix of old and new"
    except Exception as e:  # the guarantee allows a clear error
        old = f"error: {type(e).__name__}: {str(e).splitlines()[0]}"
    reader.close()
    with b.reader(path) as fresh:
        got, _ = fresh.get_batch(ids)
    new = "new images" if _same(got, new_truth) else "not the new images"
    shutil.rmtree(path, ignore_errors=True)
    return {"fault": "concurrent overwrite", "file": "-", "verify": "-", "read": old,
            "verified_read": f"a new reader: {new}"}


# ------------------------------------------------------------------------------- a full disk


PROBE_DUMP = 120  # seconds: the probe takes one or two; past this it prints its threads' stacks and exits


def disk_full(label: str, options: dict | None = None, size: int = 2**21, timeout: float = PROBE_DUMP + 30) -> dict:
    """Store into a small file system of `size` bytes (a tmpfs in a private mount namespace, so
    nothing outside sees it or outlives the probe): a small store first, then a larger one over it
    (overwrite=True) that cannot fit. Needs root, or unprivileged user namespaces."""
    row = {"fault": "disk full", "file": "-", "verify": "-", "read": "-", "verified_read": "-"}
    unshare = shutil.which("unshare")
    if not unshare or not shutil.which("mount"):
        row["read"] = "not run: no unshare or mount command"
        return row
    flags = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    mnt = tempfile.mkdtemp(prefix="imgbench-full-")  # the mount point; the mount is the probe's alone
    cmd = [unshare, *flags, sys.executable, "-m", "imgbench.bench.faults", "disk-full", label,
           json.dumps(options or {}), str(size), mnt]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        row["read"] = f"hang: no answer in {timeout:.0f}s"
        return row
    finally:
        shutil.rmtree(mnt, ignore_errors=True)  # empty here: what the probe wrote was in its tmpfs
    if p.returncode != 0 or not p.stdout.strip():
        lines = p.stderr.strip().splitlines() or ["no output"]
        why = lines[-1]
        if any("Timeout" in x and "Thread" in x for x in lines) or "most recent call first" in p.stderr:
            why = "hang: " + " < ".join(x.strip() for x in lines if x.strip().startswith("File"))[:400]
        row["read"] = f"not run: {why}"
        return row
    return {**row, **json.loads(p.stdout.strip().splitlines()[-1])}


def _disk_full_probe(label: str, options: dict, size: int, mnt: str) -> dict:
    from ..backends import DiskFullError

    mnt = Path(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    b = variant(label, **options)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 32, 32, 3), np.uint8)  # noise: PNG and JPEG cannot shrink it
    big = rng.integers(0, 256, (2 * size // small[0].nbytes, 32, 32, 3), np.uint8)
    sources = None
    if b.encoding == "source":
        from PIL import Image
        import io

        def png(a):
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "PNG")
            return buf.getvalue()

        sources = [png(a) for a in big]
    path = mnt / "store"
    b.store_many(path, small, np.arange(len(small)) % 10, sources=None if sources is None else sources[:8])
    try:
        b.store_many(path, big, np.arange(len(big)) % 10, sources=sources, overwrite=True)
        error = "no error: the store fitted"
    except DiskFullError as e:
        error = f"DiskFullError: {e}"
    except Exception as e:  # any other error is the finding
        error = f"{type(e).__name__}: {e}"
    report = b.verify(path)
    old = "old store intact" if report.ok and report.count == len(small) else "old store damaged"
    left = leftovers(path)
    return {"verify": old, "read": error.splitlines()[0],
            "verified_read": "no temporary left" if not left else f"left {', '.join(left)}",
            "file": f"a tmpfs of {size:,} bytes"}


if __name__ == "__main__":
    if sys.argv[1:2] == ["disk-full"]:
        import faulthandler

        # a probe that hangs says where, in the row, before the parent gives up on it
        faulthandler.dump_traceback_later(PROBE_DUMP, exit=True)
        print(json.dumps(_disk_full_probe(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
    else:
        sys.exit("usage: python -m imgbench.bench.faults disk-full BACKEND OPTIONS_JSON SIZE MOUNT_POINT")
