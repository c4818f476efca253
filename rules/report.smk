# merge every timing CSV -> summary, plots (report() outputs for `snakemake --report`)


# Seconds of light work each: on a cluster they run where Snakemake runs instead of queueing.
localrules:
    merge,
    summary,
    plots,
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
        trash=TRASH,
    script:
        "../scripts/merge.py"


rule summary:
    input:
        "results/{dataset}/timings.csv",
        "results/{dataset}/integrity.csv",
    output:
        report(
            "results/{dataset}/summary.md",
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        "logs/{dataset}/summary.log",
    conda:
        CONDA_ENV
    params:
        config=config,
    script:
        "../scripts/summary.py"


rule plots:
    input:
        "results/{dataset}/timings.csv",
    output:
        **{
            name: report(
                f"results/{{dataset}}/plots/{name}.png",
                caption=f"../report/{name}.rst",
                category=category,
            )
            for name, category in PLOTS.items()
        },
    log:
        "logs/{dataset}/plots.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/plots.py"
