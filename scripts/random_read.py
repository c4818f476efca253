from _setup import run, source


def main(snakemake, log):
    from imgbench.bench.access import random_read
    from imgbench.bench.rows import write_csv

    p = snakemake.params
    src, expected, psnr = source(snakemake, p.n)
    rows = random_read(snakemake.wildcards.backend, p.backend_options, snakemake.input.store, src.images,
                       src.labels, p.k, p.repeats, p.seed, snakemake.wildcards.dataset, log,
                       expected=expected, psnr=psnr, client=snakemake.wildcards.client)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
