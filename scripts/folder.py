from pathlib import Path

from _setup import run


def main(snakemake, log):
    from imgbench.data.folder import check_room, load, save

    f = snakemake.params.folder
    data = load(f["path"], labels=f["labels"], mode=f["mode"], on_bad_file=f["on_bad_file"], log=log)
    check_room(data, snakemake.params.n_images, "results")
    save(data, Path(snakemake.output.shapes).parent)
    for path, reason in data.bad:
        log(f"  skipped {path}: {reason}")
    log(f"saved {len(data.labels):,} images ({data.images.nbytes / 1e6:,.1f} MB of pixels, "
        f"{data.sources.nbytes / 1e6:,.1f} MB of files) to {Path(snakemake.output.shapes).parent}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
