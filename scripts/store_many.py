from pathlib import Path

from _setup import run, source


def main(snakemake, log):
    from imgbench.bench.many import store_many
    from imgbench.bench.rows import write_csv

    n = int(snakemake.wildcards.n)
    # Loaded and made contiguous before any clock starts, as the article has them in memory.
    src, expected, psnr = source(snakemake, n)
    rows = store_many(snakemake.wildcards.backend, snakemake.params.backend_options, src.images, src.labels,
                      snakemake.output.store, snakemake.params.repeats, snakemake.wildcards.dataset, log,
                      trash=Path(snakemake.params.trash), sources=src.sources, expected=expected, psnr=psnr,
                      checksums=True)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
