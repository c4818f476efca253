from _setup import run, source


def main(snakemake, log):
    import numpy as np

    from imgbench.bench.many import single
    from imgbench.bench.rows import write_csv

    src, expected, psnr = source(snakemake, 1)
    rows = single(snakemake.wildcards.backend, snakemake.params.backend_options, np.array(src.images[0]), 0,
                  int(src.labels[0]), snakemake.output.store, snakemake.params.repeats, snakemake.wildcards.dataset,
                  log, source=None if src.sources is None else bytes(src.sources[0]),
                  expected=None if expected is None else np.array(expected[0]), psnr=psnr)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
