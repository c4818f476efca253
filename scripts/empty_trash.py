from _setup import run


def main(snakemake, log):
    from imgbench.bench.many import empty_trash

    empty_trash(snakemake.params.trash)
    log(f"emptied {snakemake.params.trash}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
