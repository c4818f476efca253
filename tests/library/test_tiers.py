"""Storage tiers with the kernel's real cgroup controls: a tier's limits hold for the reading
process and its workers, its counters see every pass's bytes, and a machine or user that cannot
emulate is told why in one line."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from imgbench import backends
from imgbench.bench import access, many, tiers
from imgbench.bench.tiers import MiB, Tier, TierError

WHY = tiers.why_not_emulated()
emulating = pytest.mark.skipif(WHY is not None, reason=f"cannot emulate tiers here: {WHY}")


@pytest.mark.parametrize("entry, message", [
    ({"name": "cloud-ssd", "speed": 1}, "unknown key"),
    ({"name": "mine"}, "not a preset"),
    ({"name": "x", "cache": 2}, "cache is a fraction"),
    ({"name": "x", "read_mib_s": -1}, "positive number"),
    ({"name": "x", "path": "/tmp", "cache": 0.5}, "read as it is"),
    ({"name": "a b", "cache": 0.5}, "letters, digits"),
    (3, "a preset's name"),
])
def test_a_bad_tier_is_named_with_its_fix(entry, message):
    with pytest.raises(TierError, match=message):
        tiers.parse(entry)


def test_presets_and_overrides():
    ssd = tiers.parse({"name": "cloud-ssd", "cache": 0.1})
    assert (ssd.read_mib_s, ssd.read_iops, ssd.cache, ssd.emulated) == (125.0, 3000, 0.1, True)
    assert tiers.parse("local").local and not tiers.parse("local").emulated
    assert tiers.parse({"name": "nfs", "path": "/mnt"}).path == "/mnt"
    with pytest.raises(TierError, match="repeat"):
        tiers.parse_all(["local", "local"])


CODE = "from imgbench.bench import tiers; print(tiers.why_not_emulated())"


@pytest.mark.parametrize("how, says", [
    # a user namespace: this process is nobody there, as a user without root is
    (["unshare", "--user", sys.executable, "-c", CODE], "need root"),
    # a mount namespace where /sys/fs/cgroup is an empty tmpfs: no controllers to use
    (["unshare", "--mount", "sh", "-c", f"mount -t tmpfs none /sys/fs/cgroup && {sys.executable} -c '{CODE}'"],
     "neither cgroup v2"),
])
def test_who_cannot_emulate_is_told_why_in_one_line(how, says):
    if os.geteuid() != 0 and how[1] == "--mount":
        pytest.skip("a mount namespace needs root")
    p = subprocess.run(how, capture_output=True, text=True, timeout=60)
    if p.returncode != 0 and "unshare" in p.stderr:
        pytest.skip(f"no namespaces here: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1 and says in p.stdout and "path: tiers" in p.stdout


def test_a_store_on_a_file_system_without_a_device_cannot_be_limited():
    store = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    if tiers.block_device(store) is not None:
        pytest.skip(f"{store} has a block device here")
    with pytest.raises(TierError, match="no block device"):
        with tiers.Session(Tier("slow", read_mib_s=10.0), store, log=lambda m: None):
            pass


N = 6_800  # CIFAR-size images: a 20 MB store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    images = np.random.default_rng(0).integers(0, 256, (N, 32, 32, 3), np.uint8)
    labels = np.arange(N) % 10
    path = tmp_path_factory.mktemp("tier") / "npy"
    backends.get("npy").store_many(path, images, labels)
    if tiers.block_device(path) is None:
        pytest.skip("the temporary directory has no block device to limit")
    return path, images, labels


@emulating
def test_an_emulated_tier_limits_an_epoch_and_its_worker_and_counts_every_pass(store):
    path, images, labels = store
    lines = []
    tier = Tier("slow", read_mib_s=20.0, cache=0.1)
    with tiers.Session(tier, path, log=lines.append) as s:
        assert 16 < s.measured["probe_read_mib_s"] < 24  # the probe sees the limit
        rows = access.epoch("npy", {}, path, images, labels, 1, 256, ["sequential"], 2, 0, "t", log=lines.append,
                            loaders=["imgbench"], tier=s)
        used, cached = s.group.memory()
        assert cached <= 0.1 * images.nbytes + tiers.MARGIN  # the page cache stayed within the tier's
        # lifted between passes: at its limit, the group could not fork the next loader's workers
        limit = (s.group.dirs["memory"] / ("memory.high" if s.group.version == 2 else "memory.limit_in_bytes"))
        assert limit.read_text().strip() == "max" or int(limit.read_text()) > 1 << 60
    assert [r["cache"] for r in rows] == ["cold", "cold"] and all(r["tier"] == "slow" for r in rows)
    for r in rows:  # each pass: the whole store at 20 MiB/s through the worker, from the device
        # blk-throttle lets a little through ahead of its rate: about a second, not less than 0.8 s
        assert r["images"] == N and r["seconds"] >= 0.8 * images.nbytes / (20 * MiB)
        assert r["device_bytes"] >= 0.95 * images.nbytes, r
        assert 0.8 < r["x_floor"] < 3, r
    assert not os.path.exists(s.group.dirs["io"]) if s.group else True  # the group is gone


@emulating
def test_whole_reads_and_random_reads_in_a_tier(store):
    path, images, labels = store
    tier = Tier("iops", read_iops=500, cache=0.1)
    with tiers.Session(tier, path, log=lambda m: None) as s:
        assert 400 < s.measured["probe_read_iops"] < 600
        rows = many.read_many("npy", {}, path, images, labels, 1, "t", log=lambda m: None, tier=s)
        rows += access.random_read("npy", {}, path, images, labels, 50, 1, 0, "t", log=lambda m: None, tier=s)
    assert [(r["experiment"], r["cache"], r["tier"]) for r in rows] == [("read_many", "cold", "iops"),
                                                                        ("random_read", "cold", "iops")]
    for r in rows:
        assert r["device_ios"] > 0 and r["floor_s"] == pytest.approx(r["device_ios"] / 500)


@emulating
@pytest.mark.parametrize("name", ["npy", "hdf5", "lmdb"])
def test_a_shuffled_epoch_of_a_mapped_store_reads_each_image_once_from_the_device(tmp_path, store, name):
    """imgbench's reader advises its maps MADV_RANDOM on shuffled batches: without it, each
    fault read around itself (8 MiB of read-ahead here), and one shuffled pass of this store
    through a cache of a tenth of it read 262 times its bytes."""
    _, images, labels = store
    path = tmp_path / name
    backends.get(name).store_many(path, images, labels)
    with tiers.Session(Tier("slow", read_mib_s=20.0, cache=0.1), path, log=lambda m: None) as s:
        rows = access.epoch(name, {}, path, images, labels, 0, 256, ["shuffled"], 1, 0, "t", log=lambda m: None,
                            loaders=["imgbench"], tier=s, seconds=0.5)
    (r,) = rows
    assert r["device_bytes"] <= 1.5 * r["images"] * 4096 + 8 * MiB, r  # at most a page or so per image
    assert r["images"] / r["seconds"] > 2_000  # the limit's ~6,000 CIFAR images/s, not 20 (was)

