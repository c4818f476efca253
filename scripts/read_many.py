from _setup import paired_blobs, run, source


def main(snakemake, log):
    from imgbench.bench.many import read_many
    from imgbench.bench.rows import write_csv

    n = int(snakemake.wildcards.n)
    src, expected, psnr = source(snakemake, n)
    rows = read_many(snakemake.wildcards.backend, snakemake.params.backend_options, snakemake.input.store,
                     src.images, src.labels, snakemake.params.repeats, snakemake.wildcards.dataset, log,
                     expected=expected, psnr=psnr, limit_bytes=paired_blobs(snakemake, src),
                     verify=True, client=snakemake.wildcards.client,
                     cold=snakemake.params.cold)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
