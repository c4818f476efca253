from _setup import run, source


def main(snakemake, log):
    from imgbench.experiments import read_many, write_csv

    n = int(snakemake.wildcards.n)
    images, labels = source(snakemake, n)
    rows = read_many(snakemake.wildcards.backend, snakemake.params.backend_options, snakemake.input.store,
                     images, labels, snakemake.params.repeats, snakemake.wildcards.dataset, log)
    write_csv(rows, snakemake.output.timings)


run(snakemake, main)
