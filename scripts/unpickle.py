from _setup import run


def main(snakemake, log):
    from imgbench.data.dataset import unpack
    from imgbench.data.download import check_md5

    archive = snakemake.input[0]
    if snakemake.params.md5:
        check_md5(archive, snakemake.params.md5)
    shape = unpack(archive, snakemake.output.images, snakemake.output.labels, snakemake.output.classes)
    log(f"unpacked {archive}: images {shape}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
