from _setup import run


def main(snakemake, log):
    import numpy as np

    from imgbench.experiments import single, write_csv

    image = np.array(np.load(snakemake.input.images, mmap_mode="r")[0])
    label = int(np.load(snakemake.input.labels)[0])
    rows = single(snakemake.wildcards.backend, snakemake.params.backend_options, image, 0, label,
                  snakemake.output.store, snakemake.params.repeats, snakemake.wildcards.dataset, log)
    write_csv(rows, snakemake.output.timings)


run(snakemake, main)
