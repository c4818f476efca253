# imgbench: how should lots of images be stored? PNG files, LMDB, HDF5, timed honestly.
# The table of contents; each concern lives in rules/*.smk.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/dataset.smk"


rule all:
    input:
        rules.dataset.input,
    default_target: True
