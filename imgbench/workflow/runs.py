"""What a workflow run records of itself, in results/DATASET/run.json: when, which commit, how
long, how many jobs (and how many were timing jobs), the command. A run that did something
appends its entry when it succeeds; `imgbench publish` names the run that measured (the last
one with timing jobs) and the last one (which may only have redrawn the report)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

# the rules whose jobs time something (rules/benchmark.smk, rules/access.smk)
TIMING_RULES = ("store_many", "read_many", "limit", "single", "epoch", "random_read")
KEEP = 50  # entries kept


def _git(basedir, *args) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(basedir), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _jobs(logfile) -> tuple[int | None, int | None]:
    """Jobs the run finished, and how many of them were timing jobs, from Snakemake's log (a path,
    or the list of them that Snakemake 9 gives onsuccess)."""
    if isinstance(logfile, (list, tuple)):
        logfile = logfile[0] if logfile else None
    try:
        text = Path(logfile).read_text()
    except (OSError, TypeError):
        return None, None
    done = re.findall(r"(\d+) of \d+ steps? \(\d+%\) done", text)
    rules = re.findall(r"^(?:local)?rule (\w+):", text, re.M)
    return (int(done[-1]) if done else None), sum(r in TIMING_RULES for r in rules)


def load(path) -> list[dict]:
    """The runs recorded in run.json, oldest first (none if it is missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    runs = data.get("runs", [data])  # a file of one run, as the first release of this wrote it
    return [r for r in runs if isinstance(r, dict)]


def record(path, basedir, started: float | None, logfile=None) -> dict:
    """Append this run (started at `started`) to run.json at `path` (results/DATASET/run.json)."""
    finished = time.time()
    commit = _git(basedir, "rev-parse", "--short=12", "HEAD")
    dirty = bool(_git(basedir, "status", "--porcelain", "--untracked-files=no")) if commit else None
    jobs, timing = _jobs(logfile)
    run = {"started": None if started is None else time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
           "seconds": None if started is None else round(finished - started, 1),
           "jobs": jobs, "timing_jobs": timing, "commit": commit, "dirty": dirty,
           "command": " ".join(["snakemake", *sys.argv[1:]])}
    path = Path(path)
    if path.parent.is_dir():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"runs": (load(path) + [run])[-KEEP:]}, indent=1) + "\n")
        tmp.replace(path)
    return run
