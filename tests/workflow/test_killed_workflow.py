"""A killed store job, with real processes and a real Snakemake run: SIGKILL in the middle of a
store_many of 10,000 PNG files, the job's processes alone or Snakemake with them; the same
command again completes, every result verifies, and nothing temporary or half written is left
under results/. When Snakemake itself was killed, its lock is the one thing to clear
(`snakemake --unlock`); no other flag is needed: `rerun-incomplete: true` in profiles/default
remakes an output it had marked incomplete (the last test kills it just as the store is in place).

psutil comes with Snakemake (one of its requirements)."""
import base64
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from helpers import REPO, small_config
from imgbench import backends
from imgbench.backends.atomic import leftovers

pytestmark = pytest.mark.slow

N = 10_000  # PNG files: a store of a few seconds, long enough to be killed in
STORES = "results/sample/stores/disk"
TARGET = f"results/sample/timings/store_many/disk_{N}.csv"  # rule store_many's timings
KILL_AT = 2_500  # files in the repeat's temporary store when the kill comes (of N)
# What a store leaves beside its path while it is written (imgbench.backends.atomic.create) and
# what store_many writes beside it (imgbench.bench.many.store_many).
TEMPORARY = (".tmp-", ".old-", ".repeat", ".warmup")


def _config(work: Path) -> Path:
    cfg = small_config(n_images=N, cutoffs=[N], backends=["disk"], repeats=1, sample={"images_per_batch": N // 5})
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cmd(work: Path, *args) -> list[str]:
    """helpers.snakemake's command line."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
            "--configfile", str(work / "config.yaml"), "--cores", "2", *args]


ENV = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")


def _run(work: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(work, *args), capture_output=True, text=True, timeout=timeout, env=ENV, cwd=work)


def _tail(p: subprocess.CompletedProcess, k=3000) -> str:
    return p.stdout[-k:] + "\n--- stderr ---\n" + p.stderr[-k:]


def _files(d: Path) -> int:
    try:
        with os.scandir(d) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0


def _wait_for_store(work: Path, proc: subprocess.Popen, out, timeout=300) -> Path:
    """The temporary directory of the timed repeat's store once it holds KILL_AT files."""
    repeat = work / STORES / f".{N}.repeat1"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, f"snakemake ended ({proc.returncode}) before the store:\n{out.read_text()[-3000:]}"
        tmp = sorted(repeat.parent.glob(f".{repeat.name}.tmp-*"))
        if tmp and _files(tmp[0]) >= KILL_AT:
            return tmp[0]
        time.sleep(0.05)
    pytest.fail(f"no temporary store of {KILL_AT} files after {timeout}s:\n{out.read_text()[-3000:]}")


def _job_processes(snakemake_pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(snakemake_pid).children(recursive=True) if _alive(p)]
    except psutil.NoSuchProcess:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdlines(procs) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return "\n".join(lines)


def _kill_job(snakemake_pid: int, killed: list[psutil.Process]) -> str:
    """SIGKILL every process below Snakemake (the job's script and its forked coders), until none
    is left; Snakemake itself lives on. Appends them to `killed`; returns their command lines."""
    lines = []
    for _ in range(100):
        procs = _job_processes(snakemake_pid)
        if not procs:
            return "\n".join(lines)
        lines.append(_cmdlines(procs))
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
                killed.append(p)
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)
    pytest.fail(f"the job's processes would not die:\n{_cmdlines(_job_processes(snakemake_pid))}")


def _start(work: Path, out: Path) -> subprocess.Popen:
    # its own process group: the test can kill it, its jobs and their workers at once
    return subprocess.Popen(_cmd(work, TARGET), stdout=out.open("w"), stderr=subprocess.STDOUT, env=ENV, cwd=work,
                            start_new_session=True)


def _group(pgid: int) -> list[psutil.Process]:
    """The live processes of process group `pgid`."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and _alive(p):
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def _stop(proc: subprocess.Popen, stray: list[psutil.Process]) -> None:
    """Whatever happened, leave no process of ours behind."""
    if proc.poll() is None or _group(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)
    for p in stray:
        if _alive(p):
            p.kill()


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL Snakemake and its jobs at once: its whole process group."""
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    t0 = time.monotonic()
    while _group(proc.pid) and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert not _group(proc.pid), f"outlived SIGKILL of their group:\n{_cmdlines(_group(proc.pid))}"


def _recover(work: Path) -> subprocess.CompletedProcess:
    """After Snakemake was killed: the same command is refused (the lock it left); `--unlock`, the
    one step of recovery; then the same command again, and nothing else, must complete."""
    p = _run(work, TARGET)
    assert p.returncode != 0, _tail(p)
    assert "LockException" in p.stdout + p.stderr or "cannot be locked" in p.stdout + p.stderr, _tail(p)

    p = _run(work, "--unlock")
    assert p.returncode == 0, _tail(p)
    assert "Unlock" in p.stdout + p.stderr, _tail(p)

    p = _run(work, TARGET)
    # the workflow profile (profiles/default, next to the Snakefile) is read from any directory
    assert "workflow specific profile" in p.stdout + p.stderr, _tail(p)
    _check_completed(work, p)
    return p


def _temporaries(results: Path) -> list[str]:
    """Every file or directory under results/ that a store or store_many writes only for a while."""
    found = []
    for root, dirs, files in os.walk(results):
        for name in dirs + files:
            if any(t in name for t in TEMPORARY):
                found.append(os.path.relpath(os.path.join(root, name), results))
        dirs[:] = [d for d in dirs if not any(t in d for t in TEMPORARY)]  # one line for a whole store
    return sorted(found)


def _check_completed(work: Path, p: subprocess.CompletedProcess) -> None:
    """The store job's results are all there and verify, and nothing temporary is left."""
    assert p.returncode == 0, _tail(p)
    with (work / TARGET).open() as f:
        rows = list(csv.DictReader(f))
    # one verified store repeat, and the checksums of its bytes timed alone
    assert [(r["experiment"], r["backend"], r["n"], r["repeat"], r["verified"]) for r in rows] == [
        ("store_many", "disk", str(N), "1", "True"), ("checksum", "disk", str(N), "1", "True")], rows
    store = work / STORES / str(N)
    report = backends.verify(store)
    assert report.ok, (report.bad[:5], report.errors)
    # the PNGs, labels.csv and imgbench.json (and Snakemake's .snakemake_timestamp of a directory output)
    assert len([f for f in os.listdir(store) if not f.startswith(".")]) == N + 2
    assert (store / "imgbench.json").is_file()
    log = (work / f"logs/sample/store_many/disk_{N}.log").read_text()
    assert "verified: read back equal to the source" in log, log[-2000:]
    for path in (store, store.parent / f".{N}.repeat1", store.parent / f".{N}.warmup"):
        assert leftovers(path) == [], leftovers(path)
    # Spare stores (here the untimed warm-up's, of this run or of a killed one that got that far)
    # wait in results/sample/.trash for the empty_trash rule after the merge (rules/report.smk).
    trash = work / "results/sample/.trash"
    spare = sorted(p.name for p in trash.iterdir()) if trash.exists() else []
    assert all(s.startswith(f"disk-{N}.warmup-") for s in spare), spare
    found = [f for f in _temporaries(work / "results") if not f.startswith(os.path.join("sample", ".trash"))]
    assert found == [], f"left under results/: {found}"


def _prepare(tmp_path: Path) -> Path:
    work = tmp_path / "wf"
    work.mkdir()
    _config(work)
    return work


def test_killing_the_store_job_then_the_same_command_completes(tmp_path):
    """SIGKILL the job's processes (not Snakemake) half way through the store of N PNGs."""
    work = _prepare(tmp_path)
    out = work / "killed.out"
    proc, killed = _start(work, out), []
    try:
        tmp = _wait_for_store(work, proc, out)
        lines = _kill_job(proc.pid, killed)
        assert "store_many" in lines, lines  # the job's script was among them
        rc = proc.wait(timeout=120)
        text = out.read_text()
        assert rc != 0, text[-3000:]
        assert "Error in rule store_many" in text, text[-3000:]
    finally:
        _stop(proc, killed)
    # The kill left what the requirement is about: a half-written hidden store of thousands of PNGs.
    assert tmp.is_dir() and KILL_AT <= _files(tmp) < N, _files(tmp)
    assert not (work / STORES / str(N)).exists() and not (work / TARGET).exists()

    p = _run(work, TARGET)
    _check_completed(work, p)
    assert not tmp.exists()


def test_killing_snakemake_with_the_job_then_unlock_and_the_same_command_completes(tmp_path):
    """SIGKILL Snakemake and the job's processes at once; `--unlock` is the only step before the
    same command completes (without --rerun-incomplete on its command line)."""
    work = _prepare(tmp_path)
    out = work / "killed.out"
    proc, job = _start(work, out), []
    try:
        tmp = _wait_for_store(work, proc, out)
        job = _job_processes(proc.pid)
        assert any("store_many" in c for c in _cmdlines(job).splitlines()), _cmdlines(job)
        _kill_all(proc)
    finally:
        _stop(proc, job)
    assert tmp.is_dir() and KILL_AT <= _files(tmp) < N, _files(tmp)
    assert list((work / ".snakemake/locks").iterdir()), "Snakemake died without leaving its lock"

    _recover(work)
    assert not tmp.exists()


def test_killing_snakemake_as_the_store_is_renamed_into_place_then_unlock_and_the_same_command_completes(tmp_path):
    """SIGKILL Snakemake and the job the moment the finished store is renamed to its path, before
    the job ends: Snakemake has marked that output incomplete and it exists, so the next run
    would stop with IncompleteFilesException unless --rerun-incomplete, which the workflow
    profile sets so that `--unlock` stays the only step."""
    work = _prepare(tmp_path)
    out = work / "killed.out"
    store = work / STORES / str(N)
    proc = _start(work, out)
    try:
        t0 = time.monotonic()
        while not store.exists():
            assert proc.poll() is None, f"snakemake ended ({proc.returncode}):\n{out.read_text()[-3000:]}"
            assert time.monotonic() - t0 < 400, out.read_text()[-3000:]
            time.sleep(0.001)
        _kill_all(proc)
    finally:
        _stop(proc, [])
    incomplete = sorted(base64.b64decode(m.name).decode() for m in (work / ".snakemake/incomplete").iterdir())
    assert f"{STORES}/{N}" in incomplete and store.exists(), \
        f"the kill came too late: the job had ended ({incomplete}):\n{out.read_text()[-3000:]}"

    p = _recover(work)
    assert "rule store_many:" in p.stdout + p.stderr  # the store was made again, not taken as it was
