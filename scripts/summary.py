from _setup import run


def main(snakemake, log):
    import pandas as pd

    from imgbench.report import summary

    summary(pd.read_csv(snakemake.input[0]), snakemake.output[0], snakemake.params.config)


run(snakemake, main)
