import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def small_config(**overrides) -> dict:
    """The default config shrunk to seconds: sample data, few images, two cutoffs."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(dataset="sample", sample={"images_per_batch": 200}, n_images=2500,
               cutoffs=[10, 100], repeats=2,
               # a pass counts only MIN_BATCHES (8) of its 25 batches, so the time limit's path runs too
               epoch={"batch_size": 4, "workers": [0, 2], "orders": ["sequential", "shuffled"], "seconds": 1e-6},
               random_read={"k": 50}, integrity={"images": 50, "killed_images": 2000})
    cfg.update(overrides)
    return cfg


def snakemake(workdir: Path, *args, config: dict | None = None, configfile: Path | None = None,
              snakefile: Path | None = None, timeout=900) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` as a user would, and return the finished process.

    `config` is written to workdir/config.yaml; `configfile` uses another file instead.
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
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)


def jobs_run(proc: subprocess.CompletedProcess) -> list[str]:
    """Rule names of the jobs Snakemake ran (or would run, in a dry run), from its log."""
    import re

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


@pytest.fixture
def http_server():
    s = ArchiveServer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CIFAR-format archive of 5 x 20 known images, and the arrays it must decode to."""
    from imgbench import cifar

    rng = np.random.default_rng(7)
    train = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 100).astype(np.uint8)
    test = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("archive") / "cifar-10-python.tar.gz"
    cifar.write_archive(path, train, labels, test, labels[:20], [f"class{i}" for i in range(10)])
    return path, train, labels
