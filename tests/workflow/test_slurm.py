"""The tiny config through --executor slurm on a real one-node SLURM, compared with a local run.

.ci/run starts SLURM (tests/cluster/slurm-local.sh) before the tests and sets IMGBENCH_SLURM=required,
so there a SLURM that cannot be used fails the test instead of skipping it. Elsewhere the test runs
when a SLURM answers, and is skipped with the reason otherwise.
"""
import os
import re
import subprocess
import time

import pandas as pd
import pytest
from PIL import Image

from helpers import OVERLAP, REPO, small_config, snakemake

pytestmark = pytest.mark.slow
SCRIPT = REPO / "tests/cluster/slurm-local.sh"
KEYS = ["experiment", "backend", "n", "cache", "order", "workers", "repeat"]


def _slurm_or_skip():
    """Use a running SLURM; start one only when asked (it installs system packages)."""
    mode = os.environ.get("IMGBENCH_SLURM", "")
    if subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, timeout=30).returncode == 0:
        return
    if mode not in ("start", "required"):
        pytest.skip("no SLURM is running; `bash tests/cluster/slurm-local.sh start` (root, Debian) or "
                    "IMGBENCH_SLURM=start starts a local one, as .ci/run does")
    p = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        why = f"a local SLURM could not be started: {(p.stderr or p.stdout).strip()}"
        pytest.fail(why) if mode == "required" else pytest.skip(why)


def test_tiny_config_on_slurm_matches_a_local_run(tmp_path, capsys):
    _slurm_or_skip()
    # one backend at one cutoff: every kind of job once (9 jobs), each a few seconds of Snakemake
    # start-up on a node that runs one at a time; imgbench's client only (the clients are the
    # same Python on a node: test_workflow runs both)
    # and a path tier (a directory standing for a cluster's shared file system), its random reads
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cfg = small_config(backends=["disk"], cutoffs=[100], clients=["imgbench"], claims={"experiments": []},
                       storage={"tiers": [{"name": "scratch", "path": str(scratch)}], "experiments": ["random_read"]})
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    # The dataset stage runs locally in both, so the cluster DAG is shallow (every level of
    # jobs costs a status-polling round).
    t0 = time.monotonic()
    p = snakemake(local, *OVERLAP, config=cfg)
    local_s = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]

    assert snakemake(cluster, "dataset", config=cfg).returncode == 0
    t0 = time.monotonic()
    p = snakemake(cluster, "--workflow-profile", str(REPO / "profiles/slurm"), "--slurm-no-account",
                  "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                  # the timing jobs run one at a time: each waits for the next round of checks
                  # (the profile's pace, for a real cluster, cost the suite 12 s a job)
                  "--seconds-between-status-checks", "1", "--max-status-checks-per-second", "20",
                  "--latency-wait", "5", "--slurm-keep-successful-logs", "--resources", "timing=2", config=cfg,
                  timeout=900)
    slurm_s = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-5000:]

    # Every timing job went through sbatch, and SLURM ran each to completion.
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    # per backend: store_many per cutoff, single; per client read_many per cutoff, an epoch job (every
    # worker count in it) and random_read; and the limit (np.save / np.load) per cutoff
    n_timing = len(cfg["backends"]) * (len(cfg["cutoffs"]) + len(cfg["clients"]) * (
        len(cfg["cutoffs"]) + 1 + 1 + 1) + 1) + len(cfg["cutoffs"])  # + 1: the path tier's job
    # and jobs that are not timed: encoding the images as disk's PNGs once, for its reads' limit, and
    # the fault battery per backend
    n_other = 1 + len(cfg["backends"])
    assert len(ids) == n_timing + n_other, out[-3000:]
    assert re.search(r"rule encode:", out) and re.search(r"rule integrity:", out), out[-3000:]
    states = dict(line.split() for line in subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout.splitlines())
    assert [states.get(i) for i in ids] == ["COMPLETED"] * len(ids), states
    with capsys.disabled():  # the evidence, in CI's log too
        print(f"\n[slurm] {len(ids)} jobs ({n_timing} timing jobs, an encode job and {n_other - 1} integrity jobs) "
              "went through sbatch as SLURM jobs "
              f"{', '.join(ids)}, all COMPLETED;"
              f" tiny config end to end: local {local_s:.1f}s, SLURM {slurm_s:.1f}s (after the dataset stage)")

    a = pd.read_csv(local / "results/sample/timings.csv", keep_default_na=False)
    b = pd.read_csv(cluster / "results/sample/timings.csv", keep_default_na=False)
    assert list(a.columns) == list(b.columns)
    assert a[KEYS].values.tolist() == b[KEYS].values.tolist()
    assert b["verified"].all()
    for t in (a, b):  # the path tier read on the node, its file system recorded
        tier = t[t["tier"] == "scratch"]
        assert len(tier) == cfg["repeats"] and (tier["tier_fs"] != "").all() and (tier["tier_path"] == str(scratch)).all()
    for name in ("store_many", "read_many", "single", "epoch", "latency", "disk_usage", "memory"):
        with Image.open(cluster / f"results/sample/plots/{name}.png") as im, \
                Image.open(local / f"results/sample/plots/{name}.png") as ref:
            assert im.format == ref.format == "PNG" and im.size == ref.size


def test_a_cluster_without_job_accounting_is_named_before_anything_is_submitted(tmp_path):
    """This SLURM has no accounting, as many small clusters: sacct is installed but answers every
    query with an error, and the executor told to poll it would wait for ever. The workflow
    stops at start-up with the fix instead, and submits nothing."""
    _slurm_or_skip()
    before = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i"], capture_output=True, text=True,
                            timeout=30).stdout.split()
    cfg = small_config(backends=["npy"])
    assert snakemake(tmp_path, "dataset", config=cfg).returncode == 0
    p = snakemake(tmp_path, "--workflow-profile", str(REPO / "profiles/slurm"), "--slurm-no-account",
                  "--slurm-status-command", "sacct", config=cfg, timeout=300)
    lines = (p.stdout + p.stderr).strip().splitlines()
    assert p.returncode != 0
    assert any(line.startswith("cluster error: ") and "--slurm-status-command squeue" in line
               and "accounting" in line for line in lines), "\n".join(lines[-20:])
    after = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i"], capture_output=True, text=True,
                           timeout=30).stdout.split()
    assert sorted(after) == sorted(before)  # nothing was submitted
