from _setup import run


def main(snakemake, log):
    from imgbench.bench.many import empty_trash
    from imgbench.report.stats import merge

    df = merge(snakemake.input, snakemake.output[0])
    log(f"merged {len(snakemake.input)} files into {len(df)} rows")
    # Every timing job is done, so deleting the spare stores cannot slow one down any more.
    empty_trash(snakemake.params.trash)


run(snakemake, main)
