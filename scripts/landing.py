from _setup import run


def main(snakemake, log):
    import pandas as pd

    from imgbench.report.headline import landing

    landing(pd.read_csv(snakemake.input[0]), pd.read_csv(snakemake.input[1]), snakemake.params.config,
            snakemake.output[0], snakemake.params.left_out)
    log(f"wrote {snakemake.output[0]}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
