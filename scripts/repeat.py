from _setup import run


def main(snakemake, log):
    import numpy as np

    from imgbench.data.dataset import repeat_to, save_npy

    n = int(snakemake.wildcards.n)
    images, labels = repeat_to(np.load(snakemake.input.images), np.load(snakemake.input.labels), n)
    save_npy(snakemake.output.images, images)
    save_npy(snakemake.output.labels, labels)
    log(f"repeated the training set to {images.shape}")


if __name__ == "__main__":  # not in a spawned worker, which imports this file again
    run(snakemake, main)
