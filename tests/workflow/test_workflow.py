"""The benchmark workflow end to end on a tiny config, and what a change makes it rerun."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from helpers import NAMES, OVERLAP, REPO, jobs_run, small_config, snakemake
from imgbench import backends
from imgbench.bench.rows import COLUMNS
from imgbench.bench.loader import MIN_BATCHES
from imgbench.bench.torch_loader import available
from imgbench.report.stats import merge

pytestmark = pytest.mark.slow

PLOTS = ["store_many", "read_many", "single", "epoch", "latency", "disk_usage", "memory", "encodings", "tiers"]
AGGREGATE = {("merge", None, None), ("summary", None, None), ("plots", None, None), ("all", None, None),
             ("integrity_table", None, None), ("table", None, None), ("landing", None, None),
             ("empty_trash", None, None)}
# (client, loader) pairs of an epoch: imgbench's reader through imgbench's loader and PyTorch's
# DataLoader, the format's own library through the DataLoader (PyTorch is in .ci/run)
PAIRS = [("imgbench", "imgbench")] + ([] if available() else [("imgbench", "torch-batch"), ("stock", "torch-batch")])


def clients(backend) -> list[str]:
    """Who reads a backend's stores in the run: the article's three are read by their own code."""
    return ["imgbench"] if backend.startswith("article-") else ["imgbench", "stock"]


MACHINE = ["host", "cpu", "cores", "python", "numpy", "pillow", "lmdb", "h5py", "hdf5", "imgbench", "xxhash", "filesystem"]


def planned(proc) -> set[tuple]:
    """(rule, backend, n) of every job in a dry run's plan."""
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m:
            continue
        w = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"wildcards: (.*)", block) or [None, ""])[1]))
        jobs.add((m.group(1), w.get("backend"), w.get("n")))
    return jobs


# The backends whose stores keep PNG bytes as config.yaml's options say (article-disk aside: it
# reproduces the article, and its reads are not paired with the decoder's limit)
PNG = [b for b in NAMES if not b.startswith("article-")
       and backends.coding(backends.variant(b, **(small_config()["backend_options"].get(b) or {}))) == "png-l6"]


# Two storage tiers for one backend (the suite's time: each tier job probes for 2.5 s): an
# emulated one (its limits, a cache of half the store) where this machine can emulate, and a
# path tier on a tmpfs.
TIER_BACKENDS = ["npy"]
SLOW = {"name": "slow", "read_mib_s": 20, "read_iops": 500, "cache": 0.5}


CLAIMS = {("claim", None, None)}  # the claims' own reads (take and shuffle: no backend wildcard)


def tier_jobs(names) -> set:
    return {("tier", b, None) for b in names if b in TIER_BACKENDS}


@pytest.fixture(scope="module")
def shm(tmp_path_factory):
    """A directory on a tmpfs (a file system with no block device): /dev/shm where it is one."""
    from imgbench.bench.tiers import mount_of

    if not os.path.isdir("/dev/shm") or mount_of("/dev/shm")["tier_fs"] != "tmpfs":
        yield None  # the run goes on without a path tier
        return
    d = Path(tempfile.mkdtemp(prefix="imgbench-tier-", dir="/dev/shm"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory, shm):
    """One tiny run shared by the tests below (they only read it or dry-run changes)."""
    work = tmp_path_factory.mktemp("wf")
    # every backend but hdf5, which test_adding_a_backend_adds_only_its_jobs adds
    cfg = small_config(backends=[b for b in NAMES if b != "hdf5"],
                       storage={"tiers": [SLOW] + ([{"name": "shm", "path": str(shm)}] if shm else []),
                                "backends": TIER_BACKENDS, "clients": ["imgbench"],
                                "workers": [0], "orders": ["shuffled"], "seconds": 0.05})
    p = snakemake(work, *OVERLAP, config=cfg)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return work, cfg


def test_timings_have_every_row_and_column(run):
    work, cfg = run
    df = pd.read_csv(work / "results/sample/timings.csv", keep_default_na=False)
    assert list(df.columns) == COLUMNS + MACHINE
    df = df[df["tier"] == "local"]  # the storage tiers' rows: test_storage_tiers_...
    r = cfg["repeats"]
    counts = df.groupby(["experiment", "backend", "n", "cache"]).size().to_dict()
    expected = {}
    for b in cfg["backends"]:
        for n in cfg["cutoffs"]:
            expected[("store_many", b, n, "none")] = r
            # imgbench's reader and the format's own library (the article's three: their own code only)
            expected[("read_many", b, n, "warm")] = r * len(clients(b))
            if n <= cfg["cold_max_n"]:
                expected[("read_many", b, n, "cold")] = r * len(clients(b))
        expected[("store_single", b, 1, "none")] = r
        expected[("read_single", b, 1, "warm")] = r
        expected[("read_single", b, 1, "cold")] = r
        for n in cfg["cutoffs"]:  # verify of the whole store after each warm read; checksums alone per store
            expected[("verify", b, n, "warm")] = r
            expected[("checksum", b, n, "memory")] = r
        for cache in ("warm", "cold"):  # on the largest store: per workers, order and (client, loader), r repeats
            # the article's three through imgbench's loader only (epoch.article_loaders)
            pairs = [p for p in PAIRS if p[0] in clients(b) and (p[1] == "imgbench" or not b.startswith("article-"))]
            w, o = len(cfg["epoch"]["workers"]), len(cfg["epoch"]["orders"])
            # the loop: through the warm reader of imgbench's loader with 0 workers, warm passes only
            loop = o if cache == "warm" and 0 in cfg["epoch"]["workers"] and not b.startswith("article-") else 0
            expected[("epoch", b, 100, cache)] = r * (w * o * len(pairs) + loop)
            # webdataset: no random access
            expected[("random_read", b, 100, cache)] = r * (1 if b == "tar" else len(clients(b)))
    for n in cfg["cutoffs"]:  # np.save / np.load of the same arrays, the limit
        expected[("store_many", "numpy", n, "none")] = r
        expected[("read_many", "numpy", n, "warm")] = r
        expected[("read_many", "numpy", n, "cold")] = r
    # the claims' own reads: random rows of three files, single and batched; datasets' shuffle()
    for cache in ("warm", "cold"):
        for name in ("lance", "parquet-defaults", "parquet-random-access"):
            expected[("claim-take", name, 100, cache)] = r * 2
        expected[("claim-shuffle", "hfdatasets", 100, cache)] = r * 3  # in order, shuffled, shuffled and flattened
    expected[("claim-shuffle", "hfdatasets", 100, "none")] = 1  # flatten_indices() itself, once
    # Pillow alone decoding the PNG bytes of each PNG store from memory, after each warm read
    for b in PNG:
        for n in cfg["cutoffs"]:
            expected[("decode", b, n, "memory")] = r
    assert counts == expected
    dec = df[df["experiment"] == "decode"]
    assert set(dec["encoding"]) == {"png-l6"} and (dec["workers"] == "1").all()  # 100 images: one process
    coded = df[df["experiment"].isin(["store_many", "read_many"]) & (df["backend"] != "numpy")]
    assert dict(zip(coded["backend"], coded["encoding"])) == {
        b: ("png-l6" if b in PNG + ["article-disk"] else "raw") for b in cfg["backends"]}
    assert (df["psnr_db"] == "").all()  # every store here is lossless
    assert (df["seconds"] > 0).all() and df["verified"].all() and (df["dataset"] == "sample").all()
    assert (df["peak_rss_bytes"] >= df["rss_before_bytes"]).all() and (df["peak_rss_bytes"] > 10e6).all()
    stores = df[df["experiment"] == "store_many"]
    # PNG compresses these photos; LMDB pages and the HDF5 file hold at least the raw pixels.
    png = stores[(stores["backend"] == "disk") & (stores["n"] == 100)]
    assert (png["files"] == 102).all() and (png["bytes_apparent"] < 100 * 3072).all()
    lm = stores[(stores["backend"] == "lmdb") & (stores["n"] == 100)]
    assert (lm["bytes_apparent"] > 100 * 3072).all() and (df["filesystem"] != "").all()
    ep = df[df["experiment"] == "epoch"]
    assert sorted(set(ep["workers"].astype(int))) == cfg["epoch"]["workers"]
    assert set(zip(ep["client"], ep["loader"])) == set(PAIRS) | {("imgbench", "loop")}
    assert (ep[ep["loader"] == "loop"]["workers"].astype(int) == 0).all()
    shuffled = ep[ep["order"] == "shuffled"]
    assert (shuffled["distance_ratio"].astype(float) > 0.3).all() and (shuffled["same_block"] != "").all()
    buffered = shuffled[(shuffled["backend"] == "tar") & (shuffled["client"] == "stock")]
    assert (buffered["shuffle_buffer"].astype(int) == 1000).all() and (
        shuffled.drop(buffered.index)["shuffle_buffer"] == "").all()
    assert set(ep["order"]) == {"shuffled"} and (ep["batch_size"].astype(int) == 4).all()
    rr = df[df["experiment"] == "random_read"]
    assert (rr["k"].astype(int) == cfg["random_read"]["k"]).all() and (rr["order"] == "").all()
    for part in (ep, rr):
        p50, p95, p99, mean = (part[c].astype(float) for c in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        assert ((0 < p50) & (p50 <= p95) & (p95 <= p99) & (mean > 0)).all()
    # epoch.seconds is tiny here, so every pass counts MIN_BATCHES batches; the rest count every image
    assert (ep["images"] == MIN_BATCHES * 4).all() and (ep["seconds"] >= ep["p50_ms"].astype(float) / 1e3).all()
    assert (rr["images"] == cfg["random_read"]["k"]).all()
    many = df[df["experiment"].isin(["store_many", "read_many", "store_single", "read_single"])]
    assert (many["images"] == many["n"]).all()
    old = df[df["experiment"].isin(["store_many", "read_many"])]
    assert (old[["order", "workers", "batch_size", "k", "p50_ms"]] == "").all().all()


def test_storage_tiers_have_their_rows_tables_plot_and_headline(run, shm):
    from imgbench.bench.tiers import why_not_emulated

    work, cfg = run
    df = pd.read_csv(work / "results/sample/timings.csv")
    t = df[df["tier"] != "local"]
    emulated = why_not_emulated() is None
    names = ["slow"] * emulated + ["shm"] * (shm is not None)
    assert sorted(set(t["tier"])) == sorted(names)
    for name in names:
        part = t[t["tier"] == name]
        assert set(part["backend"]) == set(TIER_BACKENDS) and (part["cache"] == "cold").all()
        # every experiment, cold only, each repeat verified, beside the tier's probe
        counts = part.groupby(["backend", "client", "experiment"]).size().to_dict()
        assert counts == {(b, "imgbench", e): cfg["repeats"] for b in TIER_BACKENDS
                          for e in ("read_many", "epoch", "random_read")}
        assert part["verified"].all()
        assert (part["probe_read_mib_s"] > 0).all() and (part["probe_read_iops"] > 0).all()
    if shm is not None:  # a path tier: read as it is, on its own file system; its copy is gone
        p = t[t["tier"] == "shm"]
        assert (p["tier_fs"] == "tmpfs").all() and (p["tier_path"] == str(shm)).all()
        assert p["device_bytes"].isna().all() and not list(shm.iterdir())
    if emulated:  # the cgroup's counters: a cold whole read takes the store's bytes from the device
        s = t[t["tier"] == "slow"]
        assert (s["tier_read_mib_s"] == 20).all() and (s["tier_read_iops"] == 500).all() and (s["tier_cache"] == 0.5).all()
        assert (s["tier_fs"] != "tmpfs").all() and (s["read_ahead_kb"] > 0).all()
        many = s[s["experiment"] == "read_many"]
        assert (many["device_bytes"] >= 0.9 * many["bytes_apparent"]).all() and (s["floor_s"] > 0).all()
        assert ((s["x_floor"] - s["seconds"] / s["floor_s"]).abs() < 1e-9).all()
    text = (work / "results/sample/summary.md").read_text()
    assert "## Storage tiers" in text and "### Which format wins, per tier" in text
    for name in names:
        assert re.search(rf"\| shuffled epoch \| {name} \| \*\*npy\*\* \| [\d,]+ \| the only backend measured \|", text)
        assert f"| {name} | epoch | npy | imgbench | shuffled | imgbench | 0 |" in text
    if emulated:
        assert "| slow | 20 MiB/s, 500 IOPS, page cache 0.5 of the store (a dataset 2× larger than memory) |" in text
    landing = (work / "results/sample/report/landing.rst").read_text()
    for name in names:
        assert f"Best shuffled epoch in tier {name}" in landing


def test_plots_summary_logs_and_stores(run):
    work, cfg = run
    for name in PLOTS:
        with Image.open(work / f"results/sample/plots/{name}.png") as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 400
    text = (work / "results/sample/summary.md").read_text()
    for heading in ("## store_many", "## read_many", "## store_single", "## read_single", "## epoch",
                    "## random_read", "## integrity", "## Configuration"):
        assert heading in text
    assert "raised an error in every case" in text and "**MISSED**" not in text
    assert "| lmdb | **wrong pixels** · verify found | error · verify found |" in text
    assert "| npy | old store intact; the next store swept up |" in text
    assert re.search(r"\| tar \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+ \|", text)  # verify against read
    assert "| disk | imgbench | 100 | warm |" in text and "| lmdb | stock | 10 | cold |" in text
    # cold whole reads stop at cold_max_n (10): the headline answers cold at that n, warm at 100
    assert "| disk | imgbench | 100 | cold |" not in text
    # every store and read beside np.save / np.load of the same arrays, which is 1.00 against itself
    assert re.search(r"\| numpy \|  \| 100 \| cold \| [^|]+ \| 1\.00 \|", text)
    assert re.search(r"\| npy \| imgbench \| 100 \| warm \| [^|]+ \| \d+\.\d\d \|", text)
    assert "| lmdb | imgbench | imgbench | shuffled | 2 | cold |" in text and "| disk | stock | warm |" in text
    assert "## stock vs imgbench" in text and re.search(r"\| read_many \| lmdb \|  \| [\d,]+ \| [\d,]+ \| [\d.]+ \|", text)
    if not available():  # shuffled epochs of both clients through the DataLoader
        assert re.search(r"\| epoch \| lmdb \| 2 \| [\d,]+ \| [\d,]+ \| [\d.]+ \|", text)
    log = (work / "logs/sample/store_many/disk_100.log").read_text()
    assert "repeat 1/2" in log and "repeat 2/2" in log and "verified: read back equal to the source" in log
    assert "verified: the same bytes as repeat 1" in log  # PNG encoding is deterministic
    log = (work / "logs/sample/epoch/lmdb_imgbench.log").read_text()
    assert "workers=2 shuffled cold 2/2" in log and "verified" in log
    assert (work / "results/sample/stores/lmdb/100/imgbench.json").is_file()
    assert not (work / "results/sample/.trash").exists()  # spare stores are gone once the timing jobs are
    assert not list((work / "results/sample/stores").rglob(".*repeat*"))


def test_integrity_runs_after_every_timing_job(run):
    """The fault battery deletes tens of thousands of files; on ext4 without a journal that slows
    file creation for minutes, so it must not run before a timing job."""
    work, _ = run
    log = min((work / ".snakemake/log").glob("*.snakemake.log")).read_text()  # the first run's
    started = re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M)
    timing = [i for i, r in enumerate(started) if r in ("store_many", "read_many", "epoch", "random_read", "single",
                                                         "limit")]
    faults = [i for i, r in enumerate(started) if r == "integrity"]
    assert timing and faults and max(timing) < min(faults), started


def test_integrity_rows_say_what_each_fault_did(run):
    from imgbench.bench.rows import DAMAGE, EVENTS

    work, cfg = run
    df = pd.read_csv(work / "results/sample/integrity.csv", keep_default_na=False)
    assert sorted(set(df["backend"])) == sorted(cfg["backends"])
    for backend, faults in df.groupby("backend")["fault"]:
        assert list(faults) == list(DAMAGE + EVENTS), backend
    damage = df[df["fault"].isin(DAMAGE)]
    assert damage["verify"].str.startswith("detected").all() and damage["verified_read"].str.startswith("error").all()
    assert (damage["images"] == cfg["integrity"]["images"]).all()
    killed = df[df["fault"] == "killed store"]
    assert (killed["verify"] == "old store intact").all(), killed
    assert (killed["verified_read"] == "stored again: verified, leftovers swept").all(), killed
    assert not (work / "results/sample/.integrity").exists()  # the scratch stores are gone


def _report(work, out):
    # As the README runs it: no --cores.
    p = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--report", out],
                       cwd=work, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return work / out


def test_report_is_written_as_html_and_as_zip(run):
    work, cfg = run
    html = _report(work, "results/sample/report.html").read_text(errors="replace")
    assert len(html) > 50_000 and "store_many.png" in html and "2. Many images" in html
    assert "Headline at n = 100" in html  # the landing page, with the figures of landing.rst
    with zipfile.ZipFile(_report(work, "results/sample/report.zip")) as z:
        names = z.namelist()
    assert "report/report.html" in names
    for name in ["summary.html", "summary.md", *(f"{p}.png" for p in PLOTS)]:
        assert any(n.endswith("/" + name) for n in names), name


def test_report_landing_page_names_the_winners_of_the_merged_table(run):
    from imgbench.report.headline import answers

    work, cfg = run
    timings = pd.read_csv(work / "results/sample/timings.csv")
    n, rows = answers(timings, pd.read_csv(work / "results/sample/integrity.csv"))
    assert n == max(cfg["cutoffs"])
    at = timings[(timings["experiment"] == "store_many") & (timings["n"] == n) & (timings["backend"] != "numpy")]
    fastest = at.groupby("backend")["seconds"].median().idxmin()
    assert rows[0].question == f"Fastest to store {n} images" and rows[0].winner == fastest
    # cold whole reads stop at cold_max_n (10): the cold answer is at that n, the warm one at 100
    questions = [r.question for r in rows]
    assert "Fastest to read 100 images, warm cache" in questions and "Fastest to read 10 images, cold cache" in questions
    landing = (work / "results/sample/report/landing.rst").read_text()
    for r in rows:
        assert f"* - {r.question}" in landing and f"**{r.winner}**" in landing
    assert rows[-1].question.startswith("Which formats notice a flipped byte")
    assert "verify found all" in rows[-1].figure


def test_report_works_offline_in_a_real_browser(run, tmp_path):
    """Debian's Chromium opens the report: the landing page shows the headline; the summary
    table sorts by a column and filters by backend; nothing is requested from the network."""
    from report_browser import LOCAL, chromium, explore

    if not chromium():
        why = "no Chromium: apt-get install chromium (as .ci/run does), or set IMGBENCH_CHROMIUM"
        pytest.fail(why) if os.environ.get("IMGBENCH_BROWSER") == "required" else pytest.skip(why)
    work, cfg = run
    html = _report(work, "results/sample/report.html")
    seen = explore(html, tmp_path / "shots", backend="parquet", sort_by="median ms")
    assert [u for u in seen["requests"] if not u.startswith(LOCAL)] == []
    assert seen["errors"] == []
    assert "Headline at n = 100" in seen["landing"] and "Fastest to store 100 images" in seen["landing"]
    assert seen["rows_before"] == 25 and "of " in seen["info_before"]
    up, down = [float(x) for x in seen["sorted"]], [float(x) for x in seen["sorted_desc"]]
    assert up == sorted(up) and down == sorted(down, reverse=True) and up[0] < down[0]
    assert seen["filtered_backends"] and set(seen["filtered_backends"]) == {"parquet"}
    assert "filtered from" in seen["info_after"]
    for shot in ("report-landing.png", "report-table.png"):
        with Image.open(tmp_path / "shots" / shot) as im:
            assert im.format == "PNG" and im.size[0] >= 1400


def test_second_run_does_nothing(run):
    work, _ = run
    p = snakemake(work, "-n")
    assert p.returncode == 0 and "Nothing to be done" in p.stdout + p.stderr and jobs_run(p) == []


def test_changing_one_backend_option_reruns_only_that_backend(run):
    work, cfg = run
    changed = {**cfg, "backend_options": {**cfg["backend_options"], "disk": {"compress_level": 1}}}
    p = snakemake(work, "-n", configfile=_write(work, "changed.yaml", changed))
    plan = planned(p)
    # disk's PNGs of zlib level 1 are encoded once for its reads' limit (tar and parquet keep png-l6's)
    assert plan == {("store_many", "disk", "10"), ("store_many", "disk", "100"), ("read_many", "disk", "10"),
                    ("read_many", "disk", "100"), ("single", "disk", None), ("epoch", "disk", None),
                    ("random_read", "disk", None), ("encode", None, None),
                    ("integrity", "disk", None)} | tier_jobs(["disk"]) | AGGREGATE, \
        p.stdout
    assert "coding=png-l1" in p.stdout + p.stderr


def test_adding_a_cutoff_adds_only_its_jobs(run):
    work, cfg = run
    p = snakemake(work, "-n", configfile=_write(work, "cutoff.yaml", {**cfg, "cutoffs": [10, 50, 100]}))
    plan = planned(p) - AGGREGATE
    assert plan == {("store_many", b, "50") for b in cfg["backends"]} | {
        ("read_many", b, "50") for b in cfg["backends"]} | {("limit", None, "50")}, p.stdout
    # a new largest cutoff: the access-pattern experiments move to its store
    p = snakemake(work, "-n", configfile=_write(work, "cutoff.yaml", {**cfg, "cutoffs": [10, 100, 1000]}))
    plan = planned(p) - AGGREGATE
    access = {("epoch", b, None) for b in cfg["backends"]} | {
        ("random_read", b, None) for b in cfg["backends"]} | tier_jobs(cfg["backends"]) | CLAIMS
    assert plan == {("store_many", b, "1000") for b in cfg["backends"]} | {
        ("read_many", b, "1000") for b in cfg["backends"]} | {("limit", None, "1000")} | access, p.stdout


def test_adding_a_backend_adds_only_its_jobs(run):
    work, cfg = run
    p = snakemake(work, "-n", configfile=_write(work, "backend.yaml",
                                            {**cfg, "backends": cfg["backends"] + ["hdf5"]}))
    plan = planned(p) - AGGREGATE
    assert "hdf5" not in cfg["backends"]
    assert plan == {("store_many", "hdf5", "10"), ("store_many", "hdf5", "100"), ("read_many", "hdf5", "10"),
                    ("read_many", "hdf5", "100"), ("single", "hdf5", None), ("epoch", "hdf5", None),
                    ("random_read", "hdf5", None), ("integrity", "hdf5", None)}, p.stdout


def test_max_n_stops_a_backend_below_the_largest_store_and_its_access_experiments_with_it(run):
    work, cfg = run
    p = snakemake(work, "-n", configfile=_write(work, "capped.yaml", {
        **cfg, "backends": cfg["backends"] + ["hdf5"], "max_n": {**cfg.get("max_n", {}), "hdf5": 10}}))
    # its stores and reads up to 10 images: no store of 100, so no epoch or random read of it
    assert planned(p) - AGGREGATE == {("store_many", "hdf5", "10"), ("read_many", "hdf5", "10"),
                                      ("single", "hdf5", None), ("integrity", "hdf5", None)}, p.stdout


def _jobs_of(names, cfg) -> set:
    return {(rule, b, n) for b in names for rule, n in
            [("store_many", str(c)) for c in cfg["cutoffs"]] + [("read_many", str(c)) for c in cfg["cutoffs"]]
            + [("single", None), ("random_read", None), ("integrity", None), ("epoch", None)]}


@pytest.mark.parametrize("module, rerun", [
    ("backends/zarr_store.py", ["zarr"]),
    # article-lmdb builds on lmdb_store's shared environments: it reruns with it
    ("backends/lmdb_store.py", ["lmdb", "article-lmdb"]),
    # the checksums every store keeps: every backend, and np.save's limit, whose harness times
    # the checksums alone too
    ("backends/checksums.py", "all"),
    # the flat layout of ragged stores: the backends that import it (article-hdf5 through hdf5_store)
    ("backends/flat.py", ["npy", "zarr", "article-hdf5"]),
])
def test_editing_a_backend_module_reruns_exactly_the_backends_that_import_it(run, tmp_path, module, rerun):
    work, cfg = run
    p = snakemake(work, "-n", snakefile=_edited_copy(tmp_path, module) / "Snakefile")
    expected = _jobs_of(cfg["backends"] if rerun == "all" else rerun, cfg)
    expected |= tier_jobs(cfg["backends"] if rerun == "all" else rerun)
    if rerun == "all":  # and the claims' reads, whose harness writes and checks stores
        expected |= {("limit", None, str(n)) for n in cfg["cutoffs"]} | CLAIMS
    assert planned(p) - AGGREGATE == expected, p.stdout


def test_editing_the_harness_reruns_the_jobs_that_run_it(run, tmp_path):
    work, cfg = run
    p = snakemake(work, "-n", snakefile=_edited_copy(tmp_path, "bench/access.py") / "Snakefile")
    assert planned(p) - AGGREGATE == {("epoch", b, None) for b in cfg["backends"]} | {
        ("random_read", b, None) for b in cfg["backends"]} | tier_jobs(cfg["backends"]), p.stdout


def _edited_copy(tmp_path, module):
    """A copy of the workflow with one module of imgbench edited (the run directory stays)."""
    copy = tmp_path / "repo"
    top = {".git", "results", "data", ".snakemake", "tests", "logs"}  # at the top only: imgbench/data stays
    shutil.copytree(REPO, copy, ignore=lambda d, names: top & set(names) if Path(d) == REPO else ["__pycache__"])
    with open(copy / "imgbench" / module, "a") as f:
        f.write("\n# an edit\n")
    return copy


@pytest.mark.parametrize("change, rules", [
    ({"epoch": {"batch_size": 8, "workers": [0, 2]}}, {"epoch", "tier"}),
    ({"seed": 1}, {"epoch", "random_read", "tier", "claim"}),
    ({"random_read": {"k": 20}}, {"random_read", "tier"}),
    # the tiers' passes have their own length and orders (storage.seconds, storage.orders)
    ({"epoch": {**small_config()["epoch"], "seconds": 2.0}}, {"epoch"}),
    ({"epoch": {**small_config()["epoch"], "orders": ["sequential", "shuffled"]}}, {"epoch"}),
    ("storage.seconds", {"tier"}),
])
def test_access_pattern_keys_rerun_only_their_jobs(run, change, rules):
    work, cfg = run
    if change == "storage.seconds":
        change = {"storage": {**cfg["storage"], "seconds": 0.1}}
    p = snakemake(work, "-n", configfile=_write(work, "access.yaml", {**cfg, **change}))
    expected = {(r, b, None) for r in rules - {"tier", "claim"} for b in cfg["backends"]}
    expected |= tier_jobs(cfg["backends"]) if "tier" in rules else set()
    expected |= CLAIMS if "claim" in rules else set()
    assert planned(p) - AGGREGATE == expected, p.stdout


def test_adding_a_workers_count_reruns_only_the_epoch_jobs(run):
    work, cfg = run  # a job per backend and client holds every worker count
    p = snakemake(work, "-n", configfile=_write(work, "w.yaml", {**cfg, "epoch": {**cfg["epoch"], "workers": [0, 1, 2]}}))
    assert planned(p) - AGGREGATE == {("epoch", b, None) for b in cfg["backends"]}, p.stdout


def test_merge_orders_rows(tmp_path):
    a = pd.DataFrame({"experiment": ["read_many", "store_many"], "backend": ["lmdb", "disk"], "n": [10, 10],
                      "cache": ["warm", "none"], "repeat": [1, 1], "seconds": [1.0, 2.0]})
    a.to_csv(tmp_path / "a.csv", index=False)
    df = merge([tmp_path / "a.csv"], tmp_path / "m.csv")
    assert df["experiment"].tolist() == ["store_many", "read_many"]


def _write(work, name, cfg):
    import yaml

    path = work / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_publish_copies_the_run_and_fills_the_headline_blocks(run, tmp_path):
    import json

    from imgbench.report.headline import answers

    work, cfg = run
    results = work / "results/sample"
    runs = json.loads((results / "run.json").read_text())["runs"]
    assert runs[-1]["timing_jobs"] > 0 and runs[-1]["jobs"] > runs[-1]["timing_jobs"] and runs[-1]["seconds"] > 0
    docs, readme = tmp_path / "docs", tmp_path / "README.md"
    docs.mkdir()
    readme.write_text("intro\n<!-- published:sample:headline -->\ntyped by hand\n<!-- /published -->\nend\n")
    other = "<!-- published:sample-folder:headline -->\nanother run's\n<!-- /published -->\n"
    (docs / "results.md").write_text("x\n<!-- published:sample:headline -->\n<!-- /published -->\n" + other)
    cmd = [sys.executable, "-m", "imgbench.cli", "publish", str(results), "--docs", str(docs), "--readme", str(readme)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    text = readme.read_text()
    assert text.startswith("intro\n<!-- published:sample:headline -->\nMeasured on ") and text.endswith(
        "<!-- /published -->\nend\n") and "typed by hand" not in text
    _, rows = answers(pd.read_csv(results / "timings.csv"), pd.read_csv(results / "integrity.csv"))
    for a in rows:
        assert f"| {a.question} | **{a.winner}** | {a.figure} | {a.margin} |" in text
    assert f"at commit {runs[-1]['commit']}" in text
    assert (docs / "results.md").read_text().endswith(other)  # another dataset's block is left alone
    out = docs / "results/sample"
    assert sorted(f.name for f in (out / "plots").iterdir()) == sorted(f.name for f in (results / "plots").iterdir())
    assert (out / "summary.md").read_text() == (results / "summary.md").read_text()
    assert runs[-1]["command"] in (out / "run.md").read_text()
    # a directory with no run in it: one line, exit 2, nothing written
    p = subprocess.run([*cmd[:4], str(tmp_path / "nothing"), *cmd[5:]], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "holds no timings.csv" in p.stderr, p.stderr


def test_a_machine_that_cannot_emulate_leaves_its_emulated_tier_out_and_goes_on(run, shm):
    """As on a laptop or a cluster node: here a mount namespace whose /sys/fs/cgroup is empty.
    Last in this module: it merges the shared run again without the emulated tier's rows."""
    from imgbench.bench.tiers import why_not_emulated

    if os.geteuid() != 0 or why_not_emulated() is not None:
        pytest.skip("the shared run could not emulate either: it left the tier out already")
    work, cfg = run
    empty = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs none /sys/fs/cgroup && exec "$0" "$@"']
    p = snakemake(work, "results/sample/summary.md", prefix=empty)
    if p.returncode != 0 and "unshare" in p.stderr:
        pytest.skip(f"no mount namespaces here: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [x for x in p.stderr.splitlines() if "left out of this run" in x]
    assert lines == ["imgbench: left out of this run: tier slow (this kernel has neither cgroup v2's io and memory "
                     "controllers nor v1's blkio and memory (run as root on a machine with cgroup v2 (io, memory) or "
                     "v1 (blkio, memory), or use path: tiers))"], p.stderr
    assert "tier" not in jobs_run(p)  # nothing was read again
    text = (work / "results/sample/summary.md").read_text()
    assert "**Left out of this run**: tier slow: this kernel has neither" in text
    assert ("| shm | epoch | npy |" in text) == (shm is not None) and "| slow | epoch |" not in text
