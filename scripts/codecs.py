from _setup import run


def main(snakemake, log):
    from imgbench.bench import codecs

    p = snakemake.params
    if not p.codings:  # codecs.codings: []: an empty table, so the summary's input is always there
        codecs.write([], snakemake.output[0])
        return
    from imgbench.data.dataset import load_source

    src = load_source(dict(snakemake.input.items()), p.n)
    m = min(p.n, src.unique)  # each image once
    rows = codecs.run(src.images[:m], src.labels[:m], None if src.sources is None else src.sources[:m], p.codings,
                      p.decoders, p.backend, p.decode_size, p.repeats, None, p.scratch, snakemake.wildcards.dataset,
                      log)
    codecs.write(rows, snakemake.output[0])


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
