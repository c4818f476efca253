"""Storage tiers: where a store is read, emulated with the kernel's cgroup controls or real.

A tier is either *emulated* on the device that holds the stores (read bandwidth and IOPS
limits, and `cache`: how much of a store its readers may keep in the page cache, as a fraction
of the store's bytes), or *real* (`path`: a directory on another file system, read as it is).
`local` is this machine's disk with no limits.

Emulation puts the reading process (and the workers it forks afterwards) in a cgroup of its own:
cgroup v2 (`io.max`, `memory.max`) where the unified hierarchy has the io and memory
controllers, else v1 (`blkio.throttle.read_bps_device` / `read_iops_device`,
`memory.limit_in_bytes`). The cgroup's own counters say what each pass read from the device.

The memory limit bounds the page cache only through the whole group's charge, which also holds
the memory the processes allocate after joining. So before each pass (store evicted, workers
running) the limit is set to what the group holds then, plus the cache the tier allows, plus a
small margin for the batches in flight; what the processes allocate during the pass beyond that
margin comes out of the cache, so a tier errs towards less cache than it says, never more.
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import cgroups
from .cgroups import Group

MiB = 1 << 20
MARGIN = 64 * MiB  # batches in flight, shared buffers, forks: with 16 MiB, a charge made in a system call failed (ENOMEM) now and then

# Presets and where their figures come from (docs/storage.md says more).
PRESETS = {
    "local": dict(),
    # AWS EBS gp3's baseline, "3,000 IOPS and 125 MiB/s" (docs.aws.amazon.com, EBS volume types);
    # Azure Premium SSD v2 and GCP pd-balanced baselines are of the same order
    "cloud-ssd": dict(read_mib_s=125.0, read_iops=3000),
    # a 7,200 rpm disk: ~150 random IOPS (8.5 ms seek + 4.2 ms rotation), ~150 MB/s sequential
    "hdd": dict(read_mib_s=143.0, read_iops=150),
}


class TierError(UserError, ValueError):
    """A tier that is not well formed (names the key and the fix)."""


@dataclass(frozen=True)
class Tier:
    name: str
    read_mib_s: float | None = None  # read bandwidth limit
    read_iops: int | None = None  # read requests per second limit
    cache: float | None = None  # page cache the readers may use, as a fraction of the store's bytes
    path: str | None = None  # a real tier: a directory on another file system

    @property
    def emulated(self) -> bool:
        return self.path is None and (self.read_mib_s is not None or self.read_iops is not None
                                      or self.cache is not None)

    @property
    def local(self) -> bool:
        return self.path is None and not self.emulated

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.path} as it is"
        parts = []
        if self.read_mib_s is not None:
            parts.append(f"{self.read_mib_s:g} MiB/s")
        if self.read_iops is not None:
            parts.append(f"{self.read_iops:,} IOPS")
        if self.cache is not None:
            parts.append(f"page cache {self.cache:g} of the store")
        return ", ".join(parts) or "this machine's disk, no limits"

    def columns(self) -> dict:
        """The tier's columns of a timings row (its limits; None where it has none)."""
        return {"tier": self.name, "tier_read_mib_s": self.read_mib_s, "tier_read_iops": self.read_iops,
                "tier_cache": self.cache, "tier_path": self.path}


def parse(entry) -> Tier:
    """A tier from the config: a preset's name, or a mapping with `name` and any of `read_mib_s`,
    `read_iops`, `cache`, `path` (a preset's name takes its limits, the keys override them)."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise TierError(f"a tier is a preset's name ({', '.join(PRESETS)}) or a mapping with a name, got {entry!r}")
    known = {"name", "read_mib_s", "read_iops", "cache", "path"}
    if set(entry) - known:
        raise TierError(f"tier {entry['name']!r}: unknown key(s) {sorted(set(entry) - known)}; known: {sorted(known)}")
    name = entry["name"]
    values = dict(PRESETS.get(name, {}))
    values.update({k: v for k, v in entry.items() if k != "name"})
    if name not in PRESETS and len(values) == 0:
        raise TierError(f"tier {name!r} is not a preset ({', '.join(PRESETS)}): give it read_mib_s, read_iops, "
                        f"cache or path")
    for key in ("read_mib_s", "read_iops"):
        if values.get(key) is not None and not (isinstance(values[key], (int, float)) and values[key] > 0):
            raise TierError(f"tier {name!r}: {key} must be a positive number, got {values[key]!r}")
    cache = values.get("cache")
    if cache is not None and not (isinstance(cache, (int, float)) and 0 < cache <= 1):
        raise TierError(f"tier {name!r}: cache is a fraction of the store's bytes in (0, 1], got {cache!r}")
    if values.get("path") is not None and len(values) > 1:
        raise TierError(f"tier {name!r}: a path tier is read as it is; limits go on emulated tiers")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise TierError(f"tier name {name!r}: letters, digits, - and _ only (it names files)")
    return Tier(name, **values)


def parse_all(entries) -> list[Tier]:
    tiers = [parse(e) for e in entries]
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise TierError(f"tier names repeat: {names}")
    return tiers


# ---------------------------------------------------------------------------------------------
# The device under a path, and the cgroup controllers


def block_device(path) -> tuple[int, int] | None:
    """(major, minor) of the whole disk holding `path` (a partition's parent: throttling applies
    to whole disks), or None where the file system has no block device (tmpfs, NFS, overlay)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sysdir = Path(f"/sys/dev/block/{major}:{minor}")
    if major == 0 or not sysdir.exists():
        return None
    if (sysdir / "partition").exists():
        parent = sysdir.resolve().parent / "dev"
        major, minor = (int(x) for x in parent.read_text().split(":"))
    return major, minor


def read_ahead_kb(device: tuple[int, int] | None) -> int | None:
    """The device's read-ahead, recorded beside every tier figure (8 MiB drags megabytes through
    a bandwidth limit for each random image)."""
    if device is None:
        return None
    try:
        return int(Path(f"/sys/dev/block/{device[0]}:{device[1]}/queue/read_ahead_kb").read_text())
    except (OSError, ValueError):
        return None


def mount_of(path) -> dict:
    """The file system holding `path`, from /proc/self/mountinfo: its type and source (the
    device, or server:export for a network file system), recorded beside a path tier's rows."""
    real, best = os.path.realpath(path), None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            if (real == point or real.startswith(point.rstrip("/") + "/")) and (best is None or
                                                                                  len(point) >= len(best[0])):
                fstype, source = (right.split() + ["", ""])[:2]
                best = (point, fstype, source)
    if best is None:
        return {"tier_fs": None, "tier_device": None}
    return {"tier_fs": best[1], "tier_device": best[2]}


@contextmanager
def placed(store, tier: Tier, log=print):
    """Where the tier reads `store`: the store itself, or for a path tier a copy of it in the
    tier's directory (made off the clock, removed afterwards, whatever happens)."""
    store = Path(store)
    if tier.path is None:
        yield store
        return
    where = Path(tier.path)
    if not where.is_dir():
        raise TierError(f"tier {tier.name!r}: path {where} is not a directory; create it or point path at one")
    scratch = where / f".imgbench-{tier.name}-{os.getpid()}"
    try:
        scratch.mkdir()
        t0 = time.perf_counter()
        copy = Path(shutil.copytree(store, scratch / store.name, symlinks=True))
        log(f"tier {tier.name}: copied the store to {copy} in {time.perf_counter() - t0:.1f}s (off the clock)")
    except OSError as e:
        shutil.rmtree(scratch, ignore_errors=True)
        raise TierError(f"tier {tier.name!r}: could not copy the store into {where}: {e.strerror or e}; "
                        f"free space there or choose another path") from None
    try:
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def why_not_emulated() -> str | None:
    """None where this process can emulate tiers here, else one line saying why and what to do."""
    fix = "run as root on a machine with cgroup v2 (io, memory) or v1 (blkio, memory), or use path: tiers"
    if os.geteuid() != 0:
        return f"emulated tiers need root to create cgroups ({fix})"
    if cgroups.v2_root() is None and not all((cgroups.CGROUP_ROOT / c / "cgroup.procs").exists() for c in ("blkio", "memory")):
        return f"this kernel has neither cgroup v2's io and memory controllers nor v1's blkio and memory ({fix})"
    try:  # create and remove a group: containers often mount the hierarchy read-only
        with Group("probe-" + str(os.getpid())):
            pass
    except OSError as e:
        return f"could not create a cgroup here: {e.strerror or e} ({fix})"
    return None


# ---------------------------------------------------------------------------------------------
# A tier applied to one job


PROBE_BYTES = 64 * MiB  # the probe file's size: half a second at a cloud disk's 125 MiB/s
PROBE_SECONDS = 1.0  # each probe counts this long: two of blk-throttle's cycles (below)
SETTLE_S = 0.25  # and reads this long first, uncounted: a group that was idle starts with a burst
# blk-throttle does not release reads evenly: through a 3,000 IOPS limit, 4 KiB reads ran at
# 4,800/s for an eighth of a second, then 2,400/s for three eighths, over and over (125 MiB/s:
# 200, then about 100 MiB/s), and a group that was idle starts with such a burst. Over whole
# half-seconds that averages the limit (3,090/s counted after the first quarter second, 3,360/s
# counted from the start); a read much shorter than a second can come out up to 1.6x faster
# than the tier allows (x_floor < 1).


class Scratch:
    """A file of PROBE_BYTES beside the store, written and synced outside the read limits, read
    past the page cache (O_DIRECT where the file system has it; else buffered, evicted, without
    read-ahead): the probe's file."""

    def __init__(self, directory):
        self.name = os.path.join(directory, f".imgbench-probe-{os.getpid()}")
        self.fd = os.open(self.name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.direct = None
        try:
            block = os.urandom(MiB)  # incompressible, so no file system or device shortcut
            for off in range(0, PROBE_BYTES, MiB):
                os.pwrite(self.fd, block, off)
            os.fsync(self.fd)
            import mmap

            self.buf = mmap.mmap(-1, MiB)  # page-aligned, as direct I/O needs
            try:
                self.direct = os.open(self.name, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
                os.preadv(self.direct, [self.buf], 0)
            except OSError:  # tmpfs and some network file systems: no direct I/O
                if self.direct is not None:
                    os.close(self.direct)
                self.direct = None
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead
        except BaseException:
            self.close()
            raise
        self.rfd = self.direct if self.direct is not None else self.fd
        import numpy as np

        self.offsets = np.random.default_rng(0).permutation(PROBE_BYTES // 4096) * 4096  # each page once

    def _evict(self) -> None:
        from .timing import evict

        if self.direct is None:
            evict(self.name)

    def sequential(self, seconds: float) -> tuple[int, float]:
        """1 MiB reads in order for SETTLE_S + `seconds`: (bytes, seconds) after SETTLE_S."""
        self._evict()
        got, t0 = 0, time.perf_counter()
        start = None
        while time.perf_counter() - t0 < SETTLE_S + seconds:
            if start is None and time.perf_counter() - t0 >= SETTLE_S:
                start = (got, time.perf_counter())
            got += os.preadv(self.rfd, [self.buf], got % PROBE_BYTES)
        return got - start[0], time.perf_counter() - start[1]

    def random(self, seconds: float) -> tuple[int, float]:
        """4 KiB reads of random pages, each once, for SETTLE_S + `seconds`: (reads, seconds)
        after SETTLE_S."""
        self._evict()
        small, offsets = memoryview(self.buf)[:4096], self.offsets
        k, t0 = 0, time.perf_counter()
        start = None
        while k < len(offsets) and time.perf_counter() - t0 < SETTLE_S + seconds:
            if start is None and time.perf_counter() - t0 >= SETTLE_S:
                start = (k, time.perf_counter())
            os.preadv(self.rfd, [small], int(offsets[k]))
            k += 1
        if start is None:  # every page read before SETTLE_S: a file system far faster than any limit
            return k, time.perf_counter() - t0
        return k - start[0], time.perf_counter() - start[1]

    def close(self) -> None:
        for fd in (self.direct, self.fd):
            if fd is not None:
                os.close(fd)
        self.direct = self.fd = None
        try:
            os.unlink(self.name)
        except FileNotFoundError:
            pass


def probe(scratch: Scratch, group: "Group | None" = None, device=None, seconds: float = PROBE_SECONDS) -> dict:
    """The sequential bandwidth (1 MiB reads) and the random 4 KiB read rate this process gets
    from the file system holding the scratch file, past the page cache; with a group, also what
    the device saw. Off every experiment's clock."""
    c0 = group.counters(device) if group else None
    got, seq_s = scratch.sequential(seconds)
    c1 = group.counters(device) if group else None
    k, rand_s = scratch.random(seconds)
    c2 = group.counters(device) if group else None
    out = {"probe_read_mib_s": got / MiB / seq_s, "probe_read_iops": k / rand_s}
    if group:
        out["probe_seq_device_mib"] = (c1 - c0).bytes / MiB
        out["probe_rand_device_ios"] = (c2 - c1).ios
    return out


class Session:
    """A tier applied to this process (and the processes it forks) for one job: the group entered
    with its read limits, the probe taken; `pass_started` / `pass_ended` around each timed pass
    set the page cache the pass may use and give what it read from the device."""

    def __init__(self, tier: Tier, store, log=print):
        self.tier, self.store, self.log = tier, Path(store), log
        self.device = block_device(self.store)
        self.group = None
        self.measured: dict = {}
        self._c0 = None

    def __enter__(self):
        t = self.tier
        if t.emulated:
            if self.device is None and (t.read_mib_s or t.read_iops):
                raise TierError(f"tier {t.name!r}: {self.store} is on a file system with no block device to limit "
                                f"(tmpfs, NFS, overlay); put results/ on a disk, or use a path: tier")
            why = why_not_emulated()
            if why:
                raise TierError(f"tier {t.name!r}: {why}")
            self.group = Group(f"{t.name}-{os.getpid()}").__enter__()
            try:
                if self.device is not None:
                    self.group.limit_reads(self.device, t.read_mib_s, t.read_iops)
                if t.cache is not None:  # no limit yet: its watchdog forks now, outside the group
                    self.group.limit_memory(1 << 62)
                self.group.enter()
            except BaseException:
                self.group.__exit__()
                raise
        try:
            scratch = Scratch(self.store.parent)
            try:
                self.measured = probe(scratch, self.group, self.device)
            finally:
                scratch.close()
        except BaseException:
            self.__exit__()
            raise
        self.measured["read_ahead_kb"] = read_ahead_kb(self.device)
        self.measured.update(mount_of(self.store))
        self.log(f"tier {t.name} ({t.describe()}): probe {self.measured['probe_read_mib_s']:.1f} MiB/s sequential, "
                 f"{self.measured['probe_read_iops']:,.0f} random 4 KiB reads/s; read-ahead "
                 f"{self.measured['read_ahead_kb']} KiB")
        return self

    def __exit__(self, *exc):
        if self.group is not None:
            self.group.__exit__()
            self.group = None

    def evict(self, store) -> bool:
        """timing.evict(store), from outside the tier's group: its opens of every file of the store
        (100,000 of them for PNG files) would otherwise wait on the tier's IOPS limit, off the
        clock but for minutes. The workers stay inside."""
        from .timing import evict

        if self.group is None:
            return evict(store)
        self.group.leave()
        try:
            return evict(store)
        finally:
            self.group.enter()

    def pass_started(self, store_bytes: int, allocates: int = 0) -> None:
        """Just before a timed pass, the store already evicted: the cache it may keep, then the
        device counters. `allocates`: what the pass itself allocates (a whole read's result), on
        top of the cache: a charge the limit refuses inside a system call fails it (EFAULT)."""
        g = self.group
        if g is not None and self.tier.cache is not None:
            used, _ = g.memory()
            g.limit_memory(used + int(self.tier.cache * store_bytes) + MARGIN + allocates)
        self._c0 = g.counters(self.device) if g is not None and self.device else None
        self._raises = g.raises() if g is not None else 0

    def pass_ended(self, seconds: float) -> dict:
        """The pass's device bytes and requests, the tier's floor for them and the ratio to it."""
        cols = {"device_bytes": None, "device_ios": None, "floor_s": None, "x_floor": None, "limit_raises": None}
        g = self.group
        if g is not None and self.tier.cache is not None:
            # lifted until the next pass: between passes the experiment checks what it read and
            # may start workers, and a fork charged against a group at its limit fails (ENOMEM)
            g.limit_memory(None)
        if self._c0 is None:
            return {**self.tier.columns(), **self.measured, **cols}
        d = self.group.counters(self.device) - self._c0
        t = self.tier
        floor = max(d.bytes / (t.read_mib_s * MiB) if t.read_mib_s else 0.0,
                    d.ios / t.read_iops if t.read_iops else 0.0)
        cols.update(device_bytes=d.bytes, device_ios=d.ios, floor_s=floor,
                    x_floor=seconds / floor if floor > 0 else None,
                    # times the group's own memory outgrew the limit mid-pass (its cache squeezed)
                    limit_raises=self.group.raises() - self._raises)
        return {**self.tier.columns(), **self.measured, **cols}
