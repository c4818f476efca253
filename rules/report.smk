# merge every timing CSV -> summary, plots (report() outputs for `snakemake --report`)


# Seconds of light work each: on a cluster they run where Snakemake runs instead of queueing.
localrules:
    merge,
    empty_trash,
    summary,
    plots,
    table,
    landing,
    integrity_table,


rule merge:
    input:
        lambda w: timing_csvs(w.dataset),
    output:
        "results/{dataset}/timings.csv",
    log:
        "logs/{dataset}/merge.log",
    conda:
        CONDA_ENV
    params:
        code=code("merge.py"),
    script:
        "../scripts/merge.py"


# Every timing job is done once timings.csv is: deleting the spare stores (tens of seconds for
# stores of 100,000 files) can no longer slow one down, and runs beside the summary and plots.
rule empty_trash:
    input:
        "results/{dataset}/timings.csv",
    output:
        touch("results/{dataset}/.trash-emptied"),
    log:
        "logs/{dataset}/empty_trash.log",
    conda:
        CONDA_ENV
    params:
        code=code("empty_trash.py"),
        trash=TRASH,
    script:
        "../scripts/empty_trash.py"


rule summary:
    input:
        "results/{dataset}/timings.csv",
        "results/{dataset}/integrity.csv",
        # the codecs table, when codecs.codings asks for one (none by default)
        ["results/{dataset}/codecs.csv"] if config["codecs"]["codings"] else [],
    output:
        report(
            "results/{dataset}/summary.md",
            caption="../report/summary.rst",
            category="1. Summary",
            subcategory="Tables",
            # labels: a second label with one value per item would become a broken toggle
            labels={
                "table": "summary.md: every table in Markdown",
                "experiment": "all",
            },
        ),
    log:
        "logs/{dataset}/summary.log",
    conda:
        CONDA_ENV
    params:
        code=code("summary.py"),
        config=config,
        left_out=LEFT_OUT_ALL,
    script:
        "../scripts/summary.py"


rule table:
    input:
        "results/{dataset}/timings.csv",
    output:
        report(
            "results/{dataset}/summary.html",
            caption="../report/table.rst",
            category="1. Summary",
            subcategory="Tables",
            labels={"table": "summary.html: sort and filter", "experiment": "all"},
        ),
    log:
        "logs/{dataset}/table.log",
    conda:
        CONDA_ENV
    params:
        code=code("table.py"),
    script:
        "../scripts/table.py"


# The landing page's figures (report/workflow.rst includes this file).
rule landing:
    input:
        "results/{dataset}/timings.csv",
        "results/{dataset}/integrity.csv",
    output:
        "results/{dataset}/report/landing.rst",
    log:
        "logs/{dataset}/landing.log",
    conda:
        CONDA_ENV
    params:
        code=code("landing.py"),
        config=config,
        left_out=LEFT_OUT_ALL,
    script:
        "../scripts/landing.py"


rule plots:
    input:
        "results/{dataset}/timings.csv",
    output:
        **{
            name: report(
                f"results/{{dataset}}/plots/{name}.png",
                caption=f"../report/{name}.rst",
                category=category,
                subcategory=subcategory,
                labels=labels,
            )
            for name, (category, subcategory, labels) in PLOTS.items()
        },
    log:
        "logs/{dataset}/plots.log",
    conda:
        CONDA_ENV
    params:
        code=code("plots.py"),
    script:
        "../scripts/plots.py"
