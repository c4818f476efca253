from pathlib import Path

from _setup import run


def main(snakemake, log):
    import pandas as pd

    from imgbench.report.plots import plots

    plots(pd.read_csv(snakemake.input[0]), Path(snakemake.output[0]).parent)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
