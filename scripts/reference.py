from _setup import run, unique_images


def main(snakemake, log):
    from imgbench.data.dataset import decode_reference, load_blobs, save_reference
    from imgbench.images import Codec

    images = unique_images(snakemake)
    codec = Codec("jpeg", quality=int(snakemake.wildcards.quality))
    out, psnr = decode_reference(images, load_blobs(snakemake.input.data, snakemake.input.sizes), codec, log)
    save_reference(snakemake.output[0], out, psnr)


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
