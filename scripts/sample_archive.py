from _setup import run


def main(snakemake, log):
    from imgbench.data.sample import build_archive

    n = snakemake.params.images_per_batch
    log(f"building a sample archive of 5 x {n} training and {n} test images")
    build_archive(snakemake.output[0], images_per_batch=n)
    log(f"wrote {snakemake.output[0]}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
