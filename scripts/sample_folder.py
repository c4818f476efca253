from _setup import run


def main(snakemake, log):
    from imgbench.data.sample import build_folder

    n = snakemake.params.files
    log(f"building a sample folder of {n} photographs")
    build_folder(snakemake.output[0], n_files=n, seed=snakemake.params.seed)
    log(f"wrote {snakemake.output[0]}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
