from _setup import run


def main(snakemake, log):
    from imgbench.report.stats import merge

    df = merge(snakemake.input, snakemake.output[0])
    log(f"merged {len(snakemake.input)} files into {len(df)} rows")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
