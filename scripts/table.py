from _setup import run


def main(snakemake, log):
    import pandas as pd

    from imgbench.report import table

    df = pd.read_csv(snakemake.input[0])
    table.write(df, snakemake.output[0], f"imgbench results: {df['dataset'].iloc[0]}")
    log(f"wrote {snakemake.output[0]}: {len(table.frame(df))} rows")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
