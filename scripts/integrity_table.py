from _setup import run


def main(snakemake, log):
    import pandas as pd

    df = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
    df.to_csv(snakemake.output[0], index=False)
    log(f"merged {len(snakemake.input)} files into {len(df)} rows")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
