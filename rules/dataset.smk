# download (or build the sample) -> unpickle -> repeat to n_images


localrules:
    download_cifar10,


rule download_cifar10:
    output:
        "data/raw/cifar-10-python.tar.gz",
    params:
        url=config["cifar10"]["url"],
        md5=config["cifar10"]["md5"],
    conda:
        CONDA_ENV
    log:
        "logs/dataset/download_cifar10.log",
    script:
        "../scripts/download.py"


rule sample_archive:
    output:
        "data/raw/sample-python.tar.gz",
    params:
        images_per_batch=config["sample"]["images_per_batch"],
    conda:
        CONDA_ENV
    log:
        "logs/dataset/sample_archive.log",
    script:
        "../scripts/sample_archive.py"


rule unpickle:
    input:
        lambda w: {"cifar10": "data/raw/cifar-10-python.tar.gz", "sample": "data/raw/sample-python.tar.gz"}[w.dataset],
    output:
        images="data/{dataset}/images.npy",
        labels="data/{dataset}/labels.npy",
        classes="data/{dataset}/classes.json",
    params:
        md5=lambda w: config["cifar10"]["md5"] if w.dataset == "cifar10" else None,
    conda:
        CONDA_ENV
    log:
        "logs/dataset/unpickle_{dataset}.log",
    script:
        "../scripts/unpickle.py"


rule repeat:
    input:
        images="data/{dataset}/images.npy",
        labels="data/{dataset}/labels.npy",
    output:
        images="data/{dataset}/images_{n}.npy",
        labels="data/{dataset}/labels_{n}.npy",
    conda:
        CONDA_ENV
    log:
        "logs/dataset/repeat_{dataset}_{n}.log",
    script:
        "../scripts/repeat.py"


rule dataset:
    input:
        f"data/{DATASET}/classes.json",
        f"data/{DATASET}/images_{N_IMAGES}.npy",
        f"data/{DATASET}/labels_{N_IMAGES}.npy",
