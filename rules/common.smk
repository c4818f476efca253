import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the workflow's own imgbench, installed or not

from imgbench.config import ConfigError, check as check_config

try:
    check_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")
except ConfigError as e:
    # One line and a non-zero exit before any job is planned.
    sys.exit(f"config error: {e}")

DATASET = config["dataset"]
N_IMAGES = config["n_images"]


wildcard_constraints:
    dataset="cifar10|sample",
    n=r"\d+",
