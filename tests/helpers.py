"""What the tests share: the repository, small workflow configs and runs, a real HTTP server,
images to store, and the checks every backend's round trip goes through."""
import multiprocessing
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "tests/workflow/configs"
NAMES = None  # every backend's name, set below (importing imgbench needs REPO on sys.path)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def bad_configs() -> list[tuple[dict, str]]:
    """(keys over the tiny config, the start of the one-line error they stop the run with)."""
    return [(b["change"], b["message"]) for b in yaml.safe_load((CONFIGS / "bad.yaml").read_text())]


def small_config(name: str = "tiny", **overrides) -> dict:
    """The default config.yaml with tests/workflow/configs/NAME.yaml's keys over it (tiny: the
    default config shrunk to seconds), and `overrides` over those."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()))
    cfg.update(overrides)
    return cfg


# Two timing jobs at once, one thread each: the suite's runs check rows, files and plans, never
# figures, and a tiny job is mostly Python starting (the workflow's own limit of one timing job
# at a time, on every core, is for measuring).
OVERLAP = ("--max-threads", "1", "--resources", "timing=2")


def snakemake(workdir: Path, *args, config: dict | None = None, configfile: Path | None = None,
              snakefile: Path | None = None, timeout=900, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` as a user would, and return the finished process.

    `config` is written to workdir/config.yaml; `configfile` uses another file instead; `prefix`
    runs the command through another (a namespace, say).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cfgfile = configfile or workdir / "config.yaml"
    if config is not None:
        cfgfile.write_text(yaml.safe_dump(config))
    elif not cfgfile.exists():
        cfgfile.write_text((REPO / "config.yaml").read_text())
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile or REPO / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(cfgfile), "--cores", "2", *args]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([*(prefix or []), *cmd], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=workdir)


def jobs_run(proc: subprocess.CompletedProcess) -> list[str]:
    """Rule names of the jobs Snakemake ran (or would run, in a dry run), from its log."""
    return re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, flags=re.M)


class ArchiveServer:
    """A real HTTP server on 127.0.0.1 serving bytes; can cut the first N responses half way."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_first = 0
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                server.requests += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_first > 0:
                    server.drop_first -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ images and round trips

from imgbench import backends  # noqa: E402  (after REPO is on sys.path)
from imgbench.backends.lookup import backend_class  # noqa: E402

# every backend this install can run: one of an optional extra that is missing (litdata) is
# left out here as runs leave it out, and its own tests are skipped
NAMES = [n for n in backends.names() if not backend_class(n).missing()]


def photos(n, channels=3, seed=0, size=(32, 32)):
    """Smooth, photo-like images (so PNG really compresses), not flat noise."""
    from imgbench.data.sample import make_images

    images, _ = make_images(n, seed)
    if size != (32, 32):
        images = np.stack([np.resize(im, (*size, 3)) for im in images])
    if channels == 1:
        images = images[..., :1]
    elif channels == 4:
        alpha = (np.arange(n * size[0] * size[1]) % 256).astype(np.uint8).reshape(n, *size, 1)
        images = np.concatenate([images, alpha], axis=3)
    # within a byte, which the article's HDF5 layout (U8BE labels) can hold; see test_wide_labels
    labels = np.random.default_rng(seed).integers(0, 256, n)
    return np.ascontiguousarray(images), labels


def images_and_labels(n, channels=3, size=(32, 32), seed=0):
    """Noise images (incompressible) and labels outside a byte."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size, channels), dtype=np.uint8)
    return images, rng.integers(-5, 1000, n)


def assert_reads_back(b, path, images, labels, ids=None) -> None:
    """The whole store, and `ids` (any order, repeats) if given, read back bit for bit."""
    got, got_labels = b.read_many(path)
    assert got.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(got_labels, labels)
    if ids is not None:
        got, got_labels = b.read_many(path, ids)
        np.testing.assert_array_equal(got, images[ids])
        np.testing.assert_array_equal(got_labels, labels[ids])


def check_batches(reader, images, labels, seed) -> int:
    """Shuffled batches with repeats, each compared with the source; returns how many were read."""
    rng = np.random.default_rng(seed)
    for _ in range(5):
        ids = rng.integers(0, len(images), 40)
        ids[:3] = ids[3]  # repeats
        got, got_labels = reader.get_batch(ids)
        assert np.array_equal(got, images[ids]) and np.array_equal(got_labels, labels[ids])
        assert got_labels.dtype == np.int64
    return 5


def _child_reads(reader, images, labels, seed, conn):
    try:
        conn.send(("ok", check_batches(reader, images, labels, seed), os.getpid()))
    except BaseException as e:  # report, so the parent's assertion names it
        conn.send(("error", f"{type(e).__name__}: {e}", os.getpid()))


def in_children(ctx_name, reader, images, labels):
    """Two child processes each read checked batches through `reader`; their batch counts."""
    ctx = multiprocessing.get_context(ctx_name)
    counts, pids = [], set()
    for seed in (11, 12):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child_reads, args=(reader, images, labels, seed, child))
        p.start()
        status, result, pid = parent.recv()
        p.join(60)
        assert status == "ok" and p.exitcode == 0, result
        counts.append(result)
        pids.add(pid)
    assert len(pids) == 2 and os.getpid() not in pids
    return counts


def survives_fork_and_spawn(reader, images, labels) -> None:
    """A reader used in the parent, then in 2 forked children, then in the parent again, then
    pickled into 2 spawned children: every batch checked against the source."""
    check_batches(reader, images, labels, seed=10)  # opened and used in the parent before the fork
    assert in_children("fork", reader, images, labels) == [5, 5]
    check_batches(reader, images, labels, seed=13)  # and still right in the parent afterwards
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._h is None and clone.path == reader.path and repr(clone.backend) == repr(reader.backend)
    assert in_children("spawn", reader, images, labels) == [5, 5]


# A store under a file-size limit, in its own process: a real I/O failure part way through.
STORE_UNDER_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    from imgbench import backends
    from imgbench.data.sample import make_images
    images, labels = make_images({n})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a too-large write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    backends.get({name!r}).store_many({path!r}, images, labels)
""")


# ---------------------------------------------------------------- untrusted stores, in a box

def _operate(op: str, name: str, path: str, extra_memory: int, env: dict, conn) -> None:
    """`op` on the store at `path` with backend `name`, in this (child) process, under an
    address-space limit of what it has now plus `extra_memory`; the outcome sent on `conn`."""
    import resource

    os.environ.update(env)
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (now + extra_memory, now + extra_memory))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        from imgbench import backends
        b = backends.get(name)
        if op == "read_many":
            images, labels = b.read_many(path)
            out = ("ok", [np.asarray(a) for a in images], np.asarray(labels))
        elif op == "reader":
            with b.reader(path) as r:
                first = r.store.first_id
                image, label = r[first]
                batch, labels = r.get_batch(np.arange(first, first + len(r)))
            out = ("ok", [image, *batch[1:]], np.asarray(labels))
        elif op == "verify":
            report = b.verify(path)
            out = ("verified" if report.ok else "damaged", report.summary(), None)
        else:
            raise ValueError(op)
    except BaseException as e:
        out = ("error", type(e).__name__, str(e))
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    conn.send((*out, grew))
    conn.close()


def boxed(op: str, name: str, path, seconds: float = 30, extra_memory: int = 2**32, env=None) -> tuple:
    """Run `op` ("read_many", "reader" or "verify") on a store in a fresh process forked from a
    clean server, as a person checking a downloaded store would, and say what happened:
    ("ok", images, labels, peak growth in bytes), ("verified" | "damaged", summary, None, growth),
    ("error", exception type, message, growth), ("signal", number) if the process was killed
    (SIGBUS...), ("timeout",) if it took longer than `seconds`, ("nomemory",) if it hit the
    address-space limit so hard that it could not report."""
    ctx = multiprocessing.get_context("forkserver")
    from imgbench.backends import lookup
    # imported once by the server, so each boxed process starts in milliseconds
    ctx.set_forkserver_preload(["helpers", *(lookup.module(n) for n in lookup.names())])
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_operate, args=(op, name, str(path), extra_memory, env or {}, child))
    p.start()
    child.close()
    try:
        if not parent.poll(seconds):
            p.kill()
            p.join()
            return ("timeout",)
        try:
            return parent.recv()
        except EOFError:
            p.join()
            return ("signal", -p.exitcode) if p.exitcode and p.exitcode < 0 else ("nomemory",)
    finally:
        p.join(10)
        parent.close()
