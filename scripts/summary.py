from _setup import run


def main(snakemake, log):
    import pandas as pd

    from imgbench.report.summary import summary

    integrity = pd.read_csv(snakemake.input[1]) if len(snakemake.input) > 1 else None
    codecs = pd.read_csv(snakemake.input[2]) if len(snakemake.input) > 2 else None
    summary(pd.read_csv(snakemake.input[0]), snakemake.output[0], snakemake.params.config, integrity,
            snakemake.params.left_out, codecs)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
