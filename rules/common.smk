import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the workflow's own imgbench, installed or not

from snakemake.exceptions import WorkflowError

from imgbench.config import ConfigError, check as check_config

try:
    check_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
except ConfigError as e:
    # One line and a non-zero exit before any job is planned.
    sys.exit(f"config error: {e}")

DATASET = config["dataset"]
N_IMAGES = config["n_images"]
# Every Python rule's environment for --software-deployment-method conda.
CONDA_ENV = "../envs/imgbench.yaml"


wildcard_constraints:
    dataset="cifar10|sample",
    n=r"\d+",
    workers=r"\d+",


from imgbench import backends as _backends

BACKENDS = config["backends"]
CUTOFFS = config["cutoffs"]
# The access-pattern experiments read the store of the largest cutoff.
LARGEST = max(CUTOFFS)
WORKERS = config["epoch"]["workers"]
# The doubled dataset every benchmark job reads.
SOURCE = {
    "images": f"data/{{dataset}}/images_{N_IMAGES}.npy",
    "labels": f"data/{{dataset}}/labels_{N_IMAGES}.npy",
}
# A backend's options and a hash of its code are params of only its own jobs, so editing one
# backend's options or module reruns just that backend's jobs (and the merge after them).
BACKEND_PARAMS = {
    "backend_options": lambda w: config["backend_options"].get(w.backend) or {},
    "backend_source": lambda w: _backends.source_hash(w.backend),
}
# Spare stores of the timing jobs wait here until the merge (see imgbench.experiments.store_many).
TRASH = lambda w: f"results/{w.dataset}/.trash"
# A timing job reserves every core Snakemake may use, on top of the `timing` resource.
try:
    TIMING_THREADS = int(workflow.cores)
except (WorkflowError, TypeError):  # no --cores (e.g. --report, a remote executor): unused then
    TIMING_THREADS = 1
PLOTS = {
    "store_many": "Store many images",
    "read_many": "Read many images",
    "single": "One image",
    "epoch": "Training epochs",
    "latency": "Random reads",
    "disk_usage": "Disk usage",
    "memory": "Memory",
}


def timing_csvs(dataset):
    return (
        expand(
            "results/{dataset}/timings/{exp}/{backend}_{n}.csv",
            dataset=dataset,
            exp=["store_many", "read_many"],
            backend=BACKENDS,
            n=CUTOFFS,
        )
        + expand("results/{dataset}/timings/limit/{n}.csv", dataset=dataset, n=CUTOFFS)
        + expand("results/{dataset}/timings/single/{backend}.csv", dataset=dataset, backend=BACKENDS)
        + expand(
            "results/{dataset}/timings/epoch/{backend}_w{workers}.csv",
            dataset=dataset,
            backend=BACKENDS,
            workers=WORKERS,
        )
        + expand("results/{dataset}/timings/random_read/{backend}.csv", dataset=dataset, backend=BACKENDS)
    )


wildcard_constraints:
    backend="|".join(_backends.names()),
