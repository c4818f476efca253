from _setup import run, source


def in_memory(a):
    """`a` (an array or an ImageList, possibly a map of a file) copied into this process's memory."""
    import numpy as np

    from imgbench.images import ImageList

    if a is None:
        return None
    if isinstance(a, ImageList):
        return ImageList(np.array(a.data), a.offsets, a.shapes)
    return np.array(a)


def main(snakemake, log):
    from imgbench.bench import tiers
    from imgbench.bench.access import epoch, random_read
    from imgbench.bench.many import read_many
    from imgbench.bench.rows import write_csv

    p, w = snakemake.params, snakemake.wildcards
    tier = tiers.parse(dict(p.tier))
    src, expected, psnr = source(snakemake, p.n)
    # the source maps its files: checking each pass against it inside the tier would read them
    # through the tier's limits and cache (a minute per pass); a copy in memory, charged outside
    images, labels, expected = (in_memory(a) for a in (src.images, src.labels, expected))
    common = dict(expected=expected, psnr=psnr, client=w.client)
    rows = []
    # the copy a path tier reads is made before the tier's session (its probe runs beside it)
    loaders = list(p.loaders)
    if tier.emulated and tier.cache is not None and any(k.startswith("torch-") for k in loaders):
        # PyTorch's DataLoader hands each batch's shared memory over a Unix socket; a cgroup v1
        # group at its memory limit fails that charge (ENOMEM) rather than reclaim its cache
        loaders = [k for k in loaders if not k.startswith("torch-")]
        log(f"tier {tier.name}: PyTorch's DataLoader is left out of a tier with a page cache limit (its "
            f"socket charges fail at the limit); epochs through {', '.join(loaders) or 'no loader'}")
    with tiers.placed(snakemake.input.store, tier, log) as store, tiers.Session(tier, store, log) as session:
        if "read_many" in p.experiments:
            rows += read_many(w.backend, p.backend_options, store, images, labels, p.repeats, w.dataset,
                              log, verify=True, tier=session, **common)
        if "epoch" in p.experiments and loaders:
            for workers in p.workers:
                rows += epoch(w.backend, p.backend_options, store, images, labels, int(workers),
                              p.batch_size, p.orders, p.repeats, p.seed, w.dataset, log, seconds=p.seconds,
                              loaders=loaders, shuffle_block=p.shuffle_block, buffer=p.shuffle_buffer,
                              tier=session, **common)
        if "random_read" in p.experiments:
            rows += random_read(w.backend, p.backend_options, store, images, labels, p.k, p.repeats,
                                p.seed, w.dataset, log, tier=session, seconds=p.seconds, **common)
    write_csv(rows, snakemake.output.timings)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
