"""What the workflow checks before it submits anything to a SLURM cluster."""
from __future__ import annotations

import subprocess


def sacct_problem(timeout: float = 30) -> str | None:
    """Why `sacct` cannot report job states on this cluster (its own words), or None when it
    can or is not installed (the SLURM executor plugin then asks squeue by itself). Clusters
    without job accounting keep `sacct` installed but answer every query with an error, and
    the plugin, told to use it, waits for job states that never come."""
    try:
        r = subprocess.run(["sacct", "-X", "--noheader", "--format=JobIdRaw,State", "--starttime", "now-1hours"],
                           capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        return f"sacct did not answer in {timeout:.0f} s"
    if r.returncode == 0:
        return None
    words = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return words[-1] if words else f"sacct exited with {r.returncode}"


def check_status_command(executor: str | None, status_command: str | None) -> str | None:
    """A one-line error when the SLURM executor would poll a `sacct` that does not work."""
    if executor != "slurm" or status_command != "sacct":
        return None
    problem = sacct_problem()
    if problem is None:
        return None
    return (f"the SLURM executor would ask sacct for job states, but sacct fails here ({problem}): this cluster "
            "has no job accounting; add --slurm-status-command squeue (see profiles/slurm/config.yaml)")
