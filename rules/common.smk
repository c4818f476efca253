import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, workflow.basedir)  # the workflow's own imgbench, installed or not

from snakemake.exceptions import WorkflowError

from imgbench.workflow.config import (
    ConfigError,
    check as check_config,
    cutoffs_of as _cutoffs_of,
    dataset_name,
    left_out,
    storage_tiers,
)

try:
    check_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
    DATASET = dataset_name(config)
    # Backends that cannot take the dataset (the article's three, for a folder of photographs of
    # many sizes) are left out with one line here and in the summary; the rest of the run goes on.
    LEFT_OUT = left_out(config)
    # Emulated storage tiers this machine cannot apply (not root, no cgroup controllers) are left
    # out the same way: the rest of the run, path tiers included, goes on.
    TIERS, TIERS_LEFT_OUT = storage_tiers(config)
except ConfigError as e:
    # One line and a non-zero exit before any job is planned.
    sys.exit(f"config error: {e}")

N_IMAGES = config["n_images"]
# This run, for onsuccess (the Snakefile is read at its start).
_RUN = {"started": time.time()}


onstart:
    # Before the first submission: without job accounting the SLURM plugin would wait for ever.
    from imgbench.workflow.cluster import check_status_command

    _problem = check_status_command(
        getattr(workflow.executor_plugin, "name", None),
        getattr(workflow.executor_settings, "status_command", None),
    )
    if _problem:
        sys.exit(f"cluster error: {_problem}")


onsuccess:
    # results/DATASET/run.json: when, which commit, how long; `imgbench publish` names the run by it
    from imgbench.workflow.runs import record

    record(
        Path(f"results/{DATASET}/run.json"),
        workflow.basedir,
        _RUN.get("started"),
        log,
    )


# Every Python rule's environment for --software-deployment-method conda.
CONDA_ENV = "../envs/imgbench.yaml"


wildcard_constraints:
    dataset=r"cifar10|sample|sample-folder|folder-[A-Za-z0-9_.-]+",
    n=r"\d+",
    client=r"imgbench|stock",
    tier=r"[A-Za-z0-9_-]+",
    coding=r"png-l\d|jpeg-q\d+|source",


from imgbench import backends as _backends
from imgbench.workflow import sources as _sources

BACKENDS = [b for b in config["backends"] if b not in LEFT_OUT]
if LEFT_OUT and workflow.is_main_process:
    print(
        "imgbench: left out of this run: "
        + "; ".join(f"{b} ({why})" for b, why in LEFT_OUT.items()),
        file=sys.stderr,
    )
if TIERS_LEFT_OUT and workflow.is_main_process:
    print(
        "imgbench: left out of this run: "
        + "; ".join(f"{t} ({why})" for t, why in TIERS_LEFT_OUT.items()),
        file=sys.stderr,
    )
CUTOFFS = config["cutoffs"]
# The access-pattern experiments read the store of the largest cutoff.
LARGEST = max(CUTOFFS)


def cutoffs_of(backend):
    """The cutoffs a backend stores and reads at (max_n caps them)."""
    return _cutoffs_of(config, backend)


def reads_largest(backend):
    """Whether a backend has the largest store, which epochs, random reads and tiers read."""
    return LARGEST in cutoffs_of(backend)


# Backends max_n stops below the largest cutoff: named as left out of those experiments.
CAPPED = {
    f"{b}'s stores above {cutoffs_of(b)[-1]:,} images": "max_n in the config; with them its epochs and random reads, which read the largest store"
    for b in BACKENDS
    if not reads_largest(b)
}
# What the summary and landing page name as left out: backends, then capped ones, then tiers.
LEFT_OUT_ALL = {**LEFT_OUT, **CAPPED, **TIERS_LEFT_OUT}
# The backends the fault battery damages: integrity.backends among the run's, or all of them.
INTEGRITY_BACKENDS = [
    b
    for b in BACKENDS
    if config["integrity"]["backends"] is None or b in config["integrity"]["backends"]
]
# The claims' own reads: take needs Lance (a default dependency); shuffle reads the largest
# hfdatasets store, so it runs only where the run has one.
CLAIMS = [
    c
    for c in config["claims"]["experiments"]
    if c != "shuffle" or ("hfdatasets" in BACKENDS and reads_largest("hfdatasets"))
]
WORKERS = config["epoch"]["workers"]
CLIENTS = config["clients"]


def clients_of(backend):
    """Who reads a backend's stores: the configured clients, but only imgbench's for the
    article's three, whose reads are the article's own code already (the stock way)."""
    if backend.startswith("article-"):
        return [c for c in CLIENTS if c == "imgbench"] or ["imgbench"]
    return CLIENTS


def read_many_cutoffs(client):
    """The stock client reads whole stores up to stock_max_n images (a whole read of 100,000 PNGs
    in one process is minutes per format); imgbench's at every cutoff."""
    cap = config["stock_max_n"]
    if client == "stock" and cap is not None:
        return [n for n in CUTOFFS if n <= cap]
    return CUTOFFS


STORAGE = config["storage"]
# tier name -> its config entry (a job's param: editing a tier reruns only its jobs)
TIER_ENTRIES = {
    t.name: {k: v for k, v in vars(t).items() if v is not None} for t in TIERS
}


def tier_backends():
    """The backends read in the storage tiers: storage.backends, or every backend of the run."""
    chosen = STORAGE["backends"]
    return [b for b in BACKENDS if (chosen is None or b in chosen) and reads_largest(b)]


def tier_clients(backend):
    chosen = STORAGE["clients"]
    return [c for c in clients_of(backend) if chosen is None or c in chosen]


def tier_loaders(backend):
    """A tier's epoch loaders: storage.loaders (the article's three: their epoch.article_loaders);
    never loop, which reads warm only."""
    if backend.startswith("article-"):
        return [l for l in epoch_loaders(backend) if l != "loop"] or ["imgbench"]
    return STORAGE["loaders"]


def tier_experiments(w):
    """What a tier job measures: storage.experiments, without the whole-store read where the
    client reads whole stores only up to stock_max_n and the largest store is beyond it.
    """
    return [
        e
        for e in STORAGE["experiments"]
        if e != "read_many" or LARGEST in read_many_cutoffs(w.client)
    ]


def reads_cold(n):
    """Whether read_many reads a store of n images cold too (up to cold_max_n): cold at the
    largest store is the storage tiers' question, and 100,000 PNG files read cold in one process
    cost the default run minutes."""
    cap = config["cold_max_n"]
    return cap is None or int(n) <= cap


# What the dataset stage writes for a folder of images (imgbench.data.folder.save).
FOLDER_FILES = ["pixels", "shapes", "labels", "sources", "source_sizes"]


def is_folder(dataset):
    return dataset == "sample-folder" or dataset.startswith("folder-")


def source_inputs(w):
    """The files of the dataset every benchmark job reads: the repeated CIFAR-format arrays (and
    the unrepeated images, to know where repeats start), or a folder dataset's arrays (repeated
    as each job loads them)."""
    if is_folder(w.dataset):
        return {k: f"data/{w.dataset}/{k}.npy" for k in FOLDER_FILES}
    return {
        "images": f"data/{w.dataset}/images_{N_IMAGES}.npy",
        "labels": f"data/{w.dataset}/labels_{N_IMAGES}.npy",
        "unique": f"data/{w.dataset}/images.npy",
    }


def folder_input(w):
    return ["data/sample-folder/files"] if w.dataset == "sample-folder" else []


def folder_params(w):
    """Where the folder is and how to decode it; a fingerprint of its files (names, sizes,
    modification times), so that changing the folder reruns the dataset stage."""
    if w.dataset == "sample-folder":
        return {
            "path": "data/sample-folder/files",
            "labels": "parent",
            "on_bad_file": "error",
            "mode": config["sample_folder"]["mode"],
        }
    from imgbench.data.folder import fingerprint

    f = config["folder"]
    return {
        "path": str(Path(f["path"]).resolve()),
        "labels": f["labels"],
        "mode": f["mode"],
        "on_bad_file": f["on_bad_file"],
        "fingerprint": fingerprint(f["path"]),
    }


def unique_inputs(w):
    """The dataset's images before they are repeated."""
    if is_folder(w.dataset):
        return {k: f"data/{w.dataset}/{k}.npy" for k in FOLDER_FILES}
    return {"unique": f"data/{w.dataset}/images.npy"}


def variant(label):
    """The backend a label (name or name.encoding) stands for, with its options."""
    return _backends.variant(label, **backend_options(label))


def backend_options(label):
    return config["backend_options"].get(label.partition(".")[0]) or {}


def coding(label):
    """The decode limit a label's reads are compared with: png-lLEVEL, jpeg-qQUALITY, source; None for raw."""
    c = _backends.coding(variant(label))
    return None if c == "raw" else c


def reference(w):
    """A lossy variant's expected images (a decode of its encoded bytes, made without any backend)."""
    c = coding(w.backend)
    return [f"data/{w.dataset}/reference/{c}.npy"] if c and c.startswith("jpeg") else []


def paired(w):
    """The coding whose decode limit an encoded store's reads are timed against (None: not
    paired). Not for article-*: they reproduce the article."""
    c = coding(w.backend)
    return c if c and not w.backend.startswith("article-") else None


def encoded(w):
    """The images' encoded bytes for a paired read (a source store's are the dataset's files)."""
    c = paired(w)
    return [f"data/{w.dataset}/encoded/{c}.npy"] if c and c != "source" else []


# A backend's options and a hash of its code (its module and every package module it imports)
# are params of only its own jobs, so editing one backend's options or code reruns just that
# backend's jobs (and the merge after them).
BACKEND_PARAMS = {
    "backend_options": lambda w: backend_options(w.backend),
    "backend_source": lambda w: _sources.backend_hash(w.backend),
}


# A stock client's reader module is a param of that client's jobs only.
def epoch_loaders(backend):
    """The loaders of a backend's epochs: the article's three through epoch.article_loaders."""
    key = "article_loaders" if backend.startswith("article-") else "loaders"
    return config["epoch"][key]


CLIENT_PARAMS = {
    "client_source": lambda w: _sources.client_hash(w.backend, w.client),
}


def code(script):
    """A hash of the package code a rule's script runs (imgbench.workflow.sources): editing the
    harness, the data stage or the report reruns the jobs that run it."""
    return _sources.script_hash(Path(workflow.basedir) / "scripts" / script)


# Spare stores of the timing jobs wait here until the merge (see imgbench.bench.many.store_many).
TRASH = lambda w: f"results/{w.dataset}/.trash"
# A timing job reserves every core Snakemake may use, on top of the `timing` resource.
try:
    TIMING_THREADS = int(workflow.cores)
except (
    WorkflowError,
    TypeError,
):  # no --cores (e.g. --report, a remote executor): unused then
    TIMING_THREADS = 1
# name -> (category, subcategory, labels): the report's menu reads as a table of contents.
PLOTS = {
    "store_many": (
        "2. Many images",
        "Store",
        {"experiment": "store_many", "measure": "seconds against n"},
    ),
    "read_many": (
        "2. Many images",
        "Read",
        {"experiment": "read_many", "measure": "seconds against n"},
    ),
    "encodings": (
        "2. Many images",
        "Encodings",
        {"experiment": "store_many, read_many", "measure": "size against read time"},
    ),
    "epoch": (
        "3. Training access",
        "Epochs",
        {"experiment": "epoch", "measure": "images/s against workers"},
    ),
    "latency": (
        "3. Training access",
        "Random reads",
        {"experiment": "random_read", "measure": "latency"},
    ),
    "tiers": (
        "3. Training access",
        "Storage tiers",
        {"experiment": "tier", "measure": "images/s per tier"},
    ),
    "single": (
        "4. One image",
        "Store and read one",
        {"experiment": "store_single, read_single", "measure": "seconds"},
    ),
    "disk_usage": (
        "5. Size and memory",
        "Disk",
        {"experiment": "store_many", "measure": "bytes on disk"},
    ),
    "memory": (
        "5. Size and memory",
        "Memory",
        {"experiment": "store_many, read_many", "measure": "peak memory"},
    ),
}


def timing_csvs(dataset):
    return (
        [
            f"results/{dataset}/timings/store_many/{b}_{n}.csv"
            for b in BACKENDS
            for n in cutoffs_of(b)
        ]
        + [
            f"results/{dataset}/timings/read_many/{b}_{c}_{n}.csv"
            for b in BACKENDS
            for c in clients_of(b)
            for n in read_many_cutoffs(c)
            if n in cutoffs_of(b)
        ]
        + expand("results/{dataset}/timings/limit/{n}.csv", dataset=dataset, n=CUTOFFS)
        + expand(
            "results/{dataset}/timings/single/{backend}.csv",
            dataset=dataset,
            backend=BACKENDS,
        )
        + [
            f"results/{dataset}/timings/epoch/{b}_{c}.csv"
            for b in BACKENDS
            for c in clients_of(b)
            if reads_largest(b)
        ]
        + [
            f"results/{dataset}/timings/random_read/{b}_{c}.csv"
            for b in BACKENDS
            for c in clients_of(b)
            if reads_largest(b)
        ]
        + [
            f"results/{dataset}/timings/tier/{t.name}/{b}_{c}.csv"
            for t in TIERS
            for b in tier_backends()
            for c in tier_clients(b)
        ]
        + [f"results/{dataset}/timings/claims/{c}.csv" for c in CLAIMS]
    )


wildcard_constraints:
    backend=rf"({'|'.join(_backends.names())})(\.(raw|png|jpeg|source))?",
