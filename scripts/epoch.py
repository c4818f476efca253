from _setup import run, source


def main(snakemake, log):
    from imgbench.bench.access import epoch
    from imgbench.bench.rows import write_csv

    p = snakemake.params
    src, expected, psnr = source(snakemake, p.n)
    rows = []
    for workers in p.workers:
        rows += epoch(snakemake.wildcards.backend, p.backend_options, snakemake.input.store, src.images, src.labels,
                      int(workers), p.batch_size, p.orders, p.repeats, p.seed,
                      snakemake.wildcards.dataset, log, seconds=p.seconds, expected=expected, psnr=psnr,
                      client=snakemake.wildcards.client, loaders=p.loaders, shuffle_block=p.shuffle_block,
                      buffer=p.shuffle_buffer, caches=p.caches)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
