from _setup import run


def main(snakemake, log):
    from imgbench.data.download import download

    download(snakemake.params.url, snakemake.output[0], snakemake.params.md5, log=log,
             offline_hint=f"offline? place cifar-10-python.tar.gz at {snakemake.output[0]} "
                          "yourself, or run with --config dataset=sample")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
