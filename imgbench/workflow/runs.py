"""What a workflow run records of itself: results/DATASET/run.json (when, which commit, how long,
how many jobs, the command), written when a run that did something succeeds. `imgbench publish`
names the run by it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path


def _git(basedir, *args) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(basedir), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _jobs(logfile) -> int | None:
    """Jobs the run finished, from Snakemake's log ("N of M steps (100%) done")."""
    try:
        found = re.findall(r"(\d+) of \d+ steps? \(\d+%\) done", Path(logfile).read_text())
    except (OSError, TypeError):
        return None
    return int(found[-1]) if found else None


def record(path, basedir, started: float | None, logfile=None) -> dict:
    """Write run.json at `path` (results/DATASET/run.json) for the run that started at `started`."""
    finished = time.time()
    commit = _git(basedir, "rev-parse", "--short=12", "HEAD")
    dirty = bool(_git(basedir, "status", "--porcelain", "--untracked-files=no")) if commit else None
    run = {"started": None if started is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
           "seconds": None if started is None else round(finished - started, 1),
           "jobs": _jobs(logfile), "commit": commit, "dirty": dirty,
           "command": " ".join(["snakemake", *sys.argv[1:]])}
    path = Path(path)
    if path.parent.is_dir():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(run, indent=1) + "\n")
        tmp.replace(path)
    return run
