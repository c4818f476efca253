from _setup import run, source


def main(snakemake, log):
    from imgbench.experiments import decode_limit, write_csv

    src, expected, psnr = source(snakemake, snakemake.params.n)
    rows = decode_limit(snakemake.wildcards.coding, src.images, src.sources, snakemake.params.repeats,
                        snakemake.wildcards.dataset, log, expected=expected, psnr=psnr)
    write_csv(rows, snakemake.output.timings)


run(snakemake, main)
