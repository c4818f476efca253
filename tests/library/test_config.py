"""The workflow's config check: values given with --config, and backends a dataset cannot take."""
import pytest
import yaml

from helpers import REPO, bad_configs, small_config
from imgbench.workflow.config import ConfigError, check, dataset_name, left_out, storage_tiers

SCHEMA = REPO / "schemas/config.schema.yaml"

BAD_CONFIGS = bad_configs()


@pytest.mark.parametrize("change,message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_bad_config_is_one_line_naming_the_key(change, message):
    """What rules/common.smk does at parse time: the schema, the dataset's name, the backends
    and storage tiers left out; the first ConfigError is the run's one line (`config error: ...`)."""
    cfg = small_config(**change)
    with pytest.raises(ConfigError) as e:
        check(cfg, SCHEMA)
        dataset_name(cfg)
        left_out(cfg)
        storage_tiers(cfg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_lists_and_mappings_from_the_command_line_arrive_as_strings_and_are_read_as_the_schema_says():
    # what Snakemake makes of --config "cutoffs=[10,100]" "epoch={batch_size: 8, seconds: null}"
    cfg = small_config(cutoffs=["10", "100"], epoch={"batch_size": "8", "workers": ["0", "2"], "seconds": "null",
                                                     "orders": ["shuffled"]})
    check(cfg, SCHEMA)
    assert cfg["cutoffs"] == [10, 100]
    assert cfg["epoch"]["batch_size"] == 8 and cfg["epoch"]["workers"] == [0, 2] and cfg["epoch"]["seconds"] is None
    with pytest.raises(ConfigError, match=r"cutoffs\[0\]: 'ten' is not of type integer"):
        check(small_config(cutoffs=["ten"]), SCHEMA)


def test_a_folder_dataset_leaves_out_the_backends_of_one_image_shape(tmp_path):
    default = yaml.safe_load((REPO / "config.yaml").read_text())["backends"]
    cfg = small_config(dataset="folder", folder={"path": str(tmp_path)}, backends=default)
    check(cfg, SCHEMA)
    out = left_out(cfg)
    assert list(out) == ["article-disk", "article-lmdb", "article-hdf5"]
    assert out["article-lmdb"] == "it takes images of one shape only, and a folder's may differ; use lmdb"
    assert left_out(small_config(backends=default)) == {}  # the sample dataset takes them all
    only = small_config(dataset="folder", folder={"path": str(tmp_path)}, backends=["article-hdf5"])
    check(only, SCHEMA)
    with pytest.raises(ConfigError, match="none is left to run; choose others"):
        left_out(only)
