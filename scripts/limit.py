from pathlib import Path

from _setup import run, source


def main(snakemake, log):
    from imgbench.bench.many import limit
    from imgbench.bench.rows import write_csv

    n = int(snakemake.wildcards.n)
    src, _, _ = source(snakemake, n)
    out = Path(snakemake.output.timings)
    rows = limit(src.images, src.labels, out.with_name(f".{out.stem}.work"), snakemake.params.repeats,
                 snakemake.wildcards.dataset, log)
    write_csv(rows, out)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
