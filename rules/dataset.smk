# download (or build the sample) -> unpickle -> repeat to n_images; or a folder of images ->
# decoded arrays (repeated as each job loads them); the images' encoded bytes per coding (an
# encoded store's limit decodes them), and a decode of a lossy coding's bytes (what it must read).


localrules:
    download_cifar10,


rule download_cifar10:
    output:
        "data/raw/cifar-10-python.tar.gz",
    log:
        "logs/dataset/download_cifar10.log",
    conda:
        CONDA_ENV
    params:
        url=config["cifar10"]["url"],
        md5=config["cifar10"]["md5"],
    script:
        "../scripts/download.py"


rule sample_archive:
    output:
        "data/raw/sample-python.tar.gz",
    log:
        "logs/dataset/sample_archive.log",
    conda:
        CONDA_ENV
    params:
        code=code("sample_archive.py"),
        images_per_batch=config["sample"]["images_per_batch"],
    script:
        "../scripts/sample_archive.py"


rule unpickle:
    input:
        lambda w: {
            "cifar10": "data/raw/cifar-10-python.tar.gz",
            "sample": "data/raw/sample-python.tar.gz",
        }[w.dataset],
    output:
        images="data/{dataset}/images.npy",
        labels="data/{dataset}/labels.npy",
        classes="data/{dataset}/classes.json",
    log:
        "logs/dataset/unpickle_{dataset}.log",
    wildcard_constraints:
        dataset="cifar10|sample",
    conda:
        CONDA_ENV
    params:
        code=code("unpickle.py"),
        md5=lambda w: config["cifar10"]["md5"] if w.dataset == "cifar10" else None,
    script:
        "../scripts/unpickle.py"


rule repeat:
    input:
        images="data/{dataset}/images.npy",
        labels="data/{dataset}/labels.npy",
    output:
        images="data/{dataset}/images_{n}.npy",
        labels="data/{dataset}/labels_{n}.npy",
    log:
        "logs/dataset/repeat_{dataset}_{n}.log",
    wildcard_constraints:
        dataset="cifar10|sample",
    conda:
        CONDA_ENV
    params:
        code=code("repeat.py"),
    script:
        "../scripts/repeat.py"


rule sample_folder:
    output:
        directory("data/sample-folder/files"),
    log:
        "logs/dataset/sample_folder.log",
    conda:
        CONDA_ENV
    params:
        code=code("sample_folder.py"),
        files=config["sample_folder"]["files"],
        seed=config["seed"],
    script:
        "../scripts/sample_folder.py"


rule folder:
    input:
        folder_input,
    output:
        **{k: f"data/{{dataset}}/{k}.npy" for k in FOLDER_FILES},
        classes="data/{dataset}/classes.json",
        files="data/{dataset}/files.txt",
        skipped="data/{dataset}/skipped.txt",
    log:
        "logs/dataset/folder_{dataset}.log",
    wildcard_constraints:
        dataset=r"sample-folder|folder-[A-Za-z0-9_.-]+",
    conda:
        CONDA_ENV
    params:
        code=code("folder.py"),
        folder=folder_params,
        n_images=N_IMAGES,
    script:
        "../scripts/folder.py"


rule encode:
    input:
        unpack(unique_inputs),
    output:
        data="data/{dataset}/encoded/{coding}.npy",
        sizes="data/{dataset}/encoded/{coding}.sizes.npy",
    log:
        "logs/dataset/encode_{dataset}_{coding}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    params:
        code=code("encode.py"),
    script:
        "../scripts/encode.py"


rule reference:
    input:
        unpack(unique_inputs),
        data="data/{dataset}/encoded/jpeg-q{quality}.npy",
        sizes="data/{dataset}/encoded/jpeg-q{quality}.sizes.npy",
    output:
        "data/{dataset}/reference/jpeg-q{quality}.npy",
        "data/{dataset}/reference/jpeg-q{quality}.json",
    log:
        "logs/dataset/reference_{dataset}_jpeg-q{quality}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    params:
        code=code("reference.py"),
    script:
        "../scripts/reference.py"


rule dataset:
    input:
        lambda w: list(source_inputs(SimpleNamespace(dataset=DATASET)).values()),
        f"data/{DATASET}/classes.json",
