from _setup import run


def main(snakemake, log):
    from imgbench.bench.many import empty_trash

    empty_trash(snakemake.params.trash)
    log(f"emptied {snakemake.params.trash}")


run(snakemake, main)
