from _setup import run, unique_images


def main(snakemake, log):
    from imgbench.data.dataset import encode_all, save_npy
    from imgbench.images import Codec

    images = unique_images(snakemake)
    blobs = encode_all(images, Codec.from_coding(snakemake.wildcards.coding))
    save_npy(snakemake.output.data, blobs.data)
    save_npy(snakemake.output.sizes, blobs.sizes)
    log(f"{snakemake.wildcards.coding}: {len(blobs):,} images in {blobs.nbytes / 1e6:,.1f} MB")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
