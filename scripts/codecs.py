from _setup import run


def main(snakemake, log):
    from imgbench.bench import codecs

    from imgbench.data.dataset import load_source

    p = snakemake.params

    src = load_source(dict(snakemake.input.items()), p.n)
    m = min(p.n, src.unique)  # each image once
    rows = codecs.run(src.images[:m], src.labels[:m], None if src.sources is None else src.sources[:m], p.codings,
                      p.decoders, p.backend, p.decode_size, p.repeats, None, p.scratch, snakemake.wildcards.dataset,
                      log)
    codecs.write(rows, snakemake.output[0])


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
