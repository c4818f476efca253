from _setup import run, source


def main(snakemake, log):
    from imgbench.bench.integrity import integrity
    from imgbench.bench.rows import write_csv
    from imgbench.bench.integrity import COLUMNS

    p = snakemake.params
    src, expected, _ = source(snakemake, max(p.images, p.killed_images))
    rows = integrity(snakemake.wildcards.backend, p.backend_options, src.images, src.labels, p.scratch,
                     snakemake.wildcards.dataset, p.images, p.killed_images, log, sources=src.sources,
                     expected=expected)
    write_csv(rows, snakemake.output[0], COLUMNS)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
