from _setup import paired_blobs, run, source


def main(snakemake, log):
    from imgbench.bench import claims
    from imgbench.bench.rows import write_csv

    p, w = snakemake.params, snakemake.wildcards
    src, _, _ = source(snakemake, p.n)
    if w.claim == "take":
        rows = claims.take(src.images, src.labels, p.scratch, p.k, p.repeats, p.seed, p.seconds, w.dataset, log,
                           encoded=paired_blobs(snakemake, src))  # the run's PNG bytes, encoded once
    else:
        rows = claims.shuffle(snakemake.input.store[0], src.images, src.labels, p.repeats, p.seed, p.seconds,
                              w.dataset, p.scratch, log)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
