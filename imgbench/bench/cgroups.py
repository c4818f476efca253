"""cgroups for storage tiers: a group of this process's own with read limits on one device and a
memory limit, entered by this process (and the workers it forks afterwards), and its counters.

cgroup v2 (`io.max`, `memory.high`) where the unified hierarchy has the io and memory
controllers, else v1 (`blkio.throttle.*`, `memory.limit_in_bytes`, whose OOM killer is turned
off and whose limit a watchdog outside the group raises when the group's own memory outgrows
it). bench/tiers.py decides the limits; this module only applies and reads them.
"""
from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20


CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_group(controller: str) -> str:
    """This process's cgroup path in a v1 hierarchy holding `controller` ('' for v2's)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            if controller in names.split(","):
                return path
    return "/"


def v2_root() -> Path | None:
    """The unified hierarchy's mount where it has both io and memory (v2-only or hybrid)."""
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        try:
            if {"io", "memory"} <= set((root / "cgroup.controllers").read_text().split()):
                return root
        except OSError:
            continue
    return None


@dataclass
class Counters:
    """What a cgroup read from one device: bytes and requests, as the kernel counted them."""
    bytes: int = 0
    ios: int = 0

    def __sub__(self, other: "Counters") -> "Counters":
        return Counters(self.bytes - other.bytes, self.ios - other.ios)


class Group:
    """A cgroup for one tier (v2, else v1 blkio + memory), created under this process's own; the
    process enters it (processes it forks later follow) and leaves it on exit."""

    def __init__(self, name: str):
        leaf = f"imgbench-{name}"
        v2 = v2_root()
        if v2 is not None:
            self.version = 2
            home = v2 / _own_group("").lstrip("/")
            self.homes = {"io": home, "memory": home}
        else:
            self.version = 1
            self.homes = {c: CGROUP_ROOT / ("blkio" if c == "io" else c) / _own_group(
                "blkio" if c == "io" else c).lstrip("/") for c in ("io", "memory")}
        self.dirs = {c: home / leaf for c, home in self.homes.items()}
        self.entered = False
        self._watch = None

    def _all(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def __enter__(self):
        if self.version == 2:  # the parent hands io and memory down (fails where it holds processes)
            (self.homes["io"] / "cgroup.subtree_control").write_text("+io +memory")
        for d in self._all():
            d.mkdir(exist_ok=True)
        return self

    def __exit__(self, *exc):
        self.leave()
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        for d in self._all():
            for _ in range(100):  # a worker that just exited may still be counted a moment
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)

    def enter(self) -> None:
        """Move this process into the group."""
        for d in self._all():
            (d / "cgroup.procs").write_text(str(os.getpid()))
        self.entered = True

    def leave(self) -> None:
        if not self.entered:
            return
        for home in dict.fromkeys(self.homes.values()):
            try:
                (home / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass
        self.entered = False

    def limit_reads(self, device: tuple[int, int], read_mib_s: float | None, read_iops: int | None) -> None:
        dev = f"{device[0]}:{device[1]}"
        bps = int(read_mib_s * MiB) if read_mib_s else None
        iops = int(read_iops) if read_iops else None
        if self.version == 2:
            (self.dirs["io"] / "io.max").write_text(f"{dev} rbps={bps or 'max'} riops={iops or 'max'}\n")
        else:
            (self.dirs["io"] / "blkio.throttle.read_bps_device").write_text(f"{dev} {bps or 0}\n")
            (self.dirs["io"] / "blkio.throttle.read_iops_device").write_text(f"{dev} {iops or 0}\n")

    def memory(self) -> tuple[int, int]:
        """(bytes the group is charged, of which page cache of files)."""
        d = self.dirs["memory"]
        stat_ = dict((k, int(v)) for k, v in (line.split() for line in (d / "memory.stat").read_text().splitlines()))
        if self.version == 2:
            return int((d / "memory.current").read_text()), stat_.get("file", 0)
        return int((d / "memory.usage_in_bytes").read_text()), stat_.get("cache", 0)

    def limit_memory(self, limit: int | None) -> None:
        """The group's memory limit. A limit its processes' own memory outgrows must not kill
        them (the kernel's OOM killer in a memory cgroup would): v2 sets memory.high, which
        reclaims and slows instead; v1 turns the group's OOM killer off and a watchdog process
        outside the group raises the limit by STEP whenever the group is stuck at it."""
        d = self.dirs["memory"]
        if self.version == 2:
            (d / "memory.high").write_text("max" if limit is None else str(limit))
            return
        if limit is not None and self._watch is None:
            (d / "memory.oom_control").write_text("1")
            self._watch = _Watchdog(d)
        (d / "memory.limit_in_bytes").write_text("-1" if limit is None else str(limit))

    def raises(self) -> int:
        """How many times the watchdog has raised the limit so far (0 under v2)."""
        return self._watch.raises() if self._watch is not None else 0

    def counters(self, device: tuple[int, int]) -> Counters:
        """Bytes and requests this group has read from `device` so far."""
        dev, d = f"{device[0]}:{device[1]}", self.dirs["io"]
        if self.version == 2:
            for line in (d / "io.stat").read_text().splitlines():
                if line.startswith(dev + " "):
                    kv = dict(p.split("=") for p in line.split()[1:])
                    return Counters(int(kv.get("rbytes", 0)), int(kv.get("rios", 0)))
            return Counters()
        got = Counters()
        for fname, attr in (("blkio.throttle.io_service_bytes", "bytes"), ("blkio.throttle.io_serviced", "ios")):
            for line in (d / fname).read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == dev and parts[1] == "Read":
                    setattr(got, attr, int(parts[2]))
        return got


STEP = 8 * MiB  # what the watchdog adds to a v1 group's limit each time the group is stuck at it


class _Watchdog:
    """A process outside the group (forked before this process enters it) that waits on the
    group's OOM notification (an eventfd, cgroup v1) and raises its limit by STEP each time."""

    def __init__(self, memdir: Path):
        efd = os.eventfd(0)
        ctl = os.open(memdir / "memory.oom_control", os.O_RDONLY)
        (memdir / "cgroup.event_control").write_text(f"{efd} {ctl}")
        stop_r, self._stop = os.pipe()
        self._count, count_w = os.pipe()
        os.set_blocking(self._count, False)
        self.total = 0
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self._stop)
                os.close(self._count)
                limit = memdir / "memory.limit_in_bytes"
                while True:
                    ready, _, _ = select.select([efd, stop_r], [], [])
                    if stop_r in ready:
                        break
                    os.eventfd_read(efd)
                    limit.write_text(str(int(limit.read_text()) + STEP))
                    os.write(count_w, b"r")
            finally:
                os._exit(0)
        for fd in (efd, ctl, stop_r, count_w):
            os.close(fd)

    def raises(self) -> int:
        try:
            self.total += len(os.read(self._count, 1 << 16))
        except BlockingIOError:
            pass
        return self.total

    def stop(self) -> None:
        os.close(self._stop)
        os.waitpid(self.pid, 0)
        os.close(self._count)
