from _setup import run


def main(snakemake, log):
    import numpy as np

    from imgbench.experiments import read_many, write_csv

    n = int(snakemake.wildcards.n)
    images = np.ascontiguousarray(np.load(snakemake.input.images, mmap_mode="r")[:n])
    labels = np.load(snakemake.input.labels)[:n]
    rows = read_many(snakemake.wildcards.backend, snakemake.params.backend_options, snakemake.input.store,
                     images, labels, snakemake.params.repeats, snakemake.wildcards.dataset, log)
    write_csv(rows, snakemake.output.timings)


run(snakemake, main)
