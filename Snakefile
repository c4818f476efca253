# imgbench: how should lots of images be stored? Formats timed honestly, as the article and as training reads them.
# The table of contents; each concern lives in rules/*.smk.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/dataset.smk"
include: "rules/benchmark.smk"
include: "rules/access.smk"
include: "rules/integrity.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        f"results/{DATASET}/timings.csv",
        f"results/{DATASET}/.trash-emptied",
        f"results/{DATASET}/summary.md",
        f"results/{DATASET}/integrity.csv",
        f"results/{DATASET}/summary.html",
        f"results/{DATASET}/report/landing.rst",
        expand("results/{dataset}/plots/{name}.png", dataset=DATASET, name=PLOTS),
        [f"results/{DATASET}/plots/codecs.png"] if config["codecs"]["codings"] else [],
