from pathlib import Path

from _setup import run


def main(snakemake, log):
    import numpy as np

    from imgbench.experiments import store_many, write_csv

    n = int(snakemake.wildcards.n)
    # Loaded and made contiguous before any clock starts, as the article has them in memory.
    images = np.ascontiguousarray(np.load(snakemake.input.images, mmap_mode="r")[:n])
    labels = np.load(snakemake.input.labels)[:n]
    rows = store_many(snakemake.wildcards.backend, snakemake.params.backend_options, images, labels,
                      snakemake.output.store, snakemake.params.repeats, snakemake.wildcards.dataset, log,
                      trash=Path(snakemake.params.trash))
    write_csv(rows, snakemake.output.timings)


run(snakemake, main)
