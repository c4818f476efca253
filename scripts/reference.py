from _setup import run


def main(snakemake, log):
    from pathlib import Path

    import numpy as np

    from imgbench.dataset import lossy_reference, save_reference
    from imgbench.folder import load_saved
    from imgbench.images import Codec

    if "unique" in snakemake.input.keys():
        images = np.load(snakemake.input.unique)
    else:
        images = load_saved(Path(snakemake.input.shapes).parent).images
    codec = Codec("jpeg", quality=int(snakemake.wildcards.quality))
    out, psnr = lossy_reference(images, codec, log)
    save_reference(snakemake.output[0], out, psnr)


run(snakemake, main)
