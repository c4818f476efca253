from _setup import run


def main(snakemake, log):
    import pandas as pd

    from imgbench.report.codecs import plot

    plot(pd.read_csv(snakemake.input[0]), snakemake.output[0])


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
