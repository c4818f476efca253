# What training does, on the largest store that store_many wrote (no other store is written):
# epochs of batches from worker processes (one job per backend and client, every worker count
# in it: a job's start, source and settled store are paid once), and random single-image
# reads. Timing jobs, like those of benchmark.smk.


rule epoch:
    input:
        unpack(source_inputs),
        reference=reference,
        store=f"results/{{dataset}}/stores/{{backend}}/{LARGEST}",
    output:
        timings="results/{dataset}/timings/epoch/{backend}_{client}.csv",
    log:
        "logs/{dataset}/epoch/{backend}_{client}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        **BACKEND_PARAMS,
        **CLIENT_PARAMS,
        code=code("epoch.py"),
        n=LARGEST,
        workers=WORKERS,
        batch_size=config["epoch"]["batch_size"],
        orders=config["epoch"]["orders"],
        caches=config["epoch"]["caches"],
        seconds=config["epoch"]["seconds"],
        loaders=lambda w: epoch_loaders(w.backend),
        shuffle_buffer=config["epoch"]["shuffle_buffer"],
        shuffle_block=config["epoch"]["shuffle_block"],
        seed=config["seed"],
        repeats=config["repeats"],
    script:
        "../scripts/epoch.py"


rule random_read:
    input:
        unpack(source_inputs),
        reference=reference,
        store=f"results/{{dataset}}/stores/{{backend}}/{LARGEST}",
    output:
        timings="results/{dataset}/timings/random_read/{backend}_{client}.csv",
    log:
        "logs/{dataset}/random_read/{backend}_{client}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        **BACKEND_PARAMS,
        **CLIENT_PARAMS,
        code=code("random_read.py"),
        n=LARGEST,
        k=config["random_read"]["k"],
        seed=config["seed"],
        repeats=config["repeats"],
    script:
        "../scripts/random_read.py"


# The largest store of a backend read again in a storage tier (docs/storage.md): whole, in
# epochs and by random single reads, every pass cold, inside the tier's cgroup (its read
# limits, its page cache) or on a path tier's own file system. One job per tier, backend and
# client: the tier's probe and a path tier's copy of the store are paid once.
rule tier:
    input:
        unpack(source_inputs),
        reference=reference,
        store=f"results/{{dataset}}/stores/{{backend}}/{LARGEST}",
    output:
        timings="results/{dataset}/timings/tier/{tier}/{backend}_{client}.csv",
    log:
        "logs/{dataset}/tier/{tier}/{backend}_{client}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        **BACKEND_PARAMS,
        **CLIENT_PARAMS,
        code=code("tier.py"),
        tier=lambda w: TIER_ENTRIES[w.tier],
        experiments=tier_experiments,
        n=LARGEST,
        workers=STORAGE["workers"] or WORKERS,
        batch_size=config["epoch"]["batch_size"],
        orders=STORAGE["orders"],
        seconds=STORAGE["seconds"],
        loaders=lambda w: tier_loaders(w.backend),
        shuffle_buffer=config["epoch"]["shuffle_buffer"],
        shuffle_block=config["epoch"]["shuffle_block"],
        k=config["random_read"]["k"],
        seed=config["seed"],
        repeats=config["repeats"],
    script:
        "../scripts/tier.py"


# The formats' authors' claims that need reads of their own (docs/claims.md): random rows of
# Lance against Parquet (written here from the largest dataset), and datasets' shuffle().
rule claim:
    input:
        unpack(source_inputs),
        store=lambda w: (
            [f"results/{w.dataset}/stores/hfdatasets/{LARGEST}"]
            if w.claim == "shuffle"
            else []
        ),
        # take: the images' PNG bytes as the decoder's limit has them, encoded once for the run
        encoded=lambda w: (
            [
                f"data/{w.dataset}/encoded/png-l6.npy",
                f"data/{w.dataset}/encoded/png-l6.sizes.npy",
            ]
            if w.claim == "take"
            else []
        ),
    output:
        timings="results/{dataset}/timings/claims/{claim}.csv",
    log:
        "logs/{dataset}/claims/{claim}.log",
    wildcard_constraints:
        claim="take|shuffle",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        code=code("claim.py"),
        n=LARGEST,
        k=config["claims"]["k"],
        seconds=config["claims"]["seconds"],
        seed=config["seed"],
        repeats=config["repeats"],
        scratch=lambda w: f"results/{w.dataset}/.claims-{w.claim}",
        paired=lambda w: "png-l6" if w.claim == "take" else None,
    script:
        "../scripts/claim.py"


# Codecs and decoders on the dataset's own images (docs/codecs.md): bytes, PSNR, each decoder
# alone and through a store, decoding at training size, JPEG XL's recompression of JPEG files.
rule codecs:
    input:
        unpack(source_inputs),
    output:
        "results/{dataset}/codecs.csv",
    log:
        "logs/{dataset}/codecs.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        code=code("codecs.py"),
        n=LARGEST,
        codings=config["codecs"]["codings"],
        decoders=config["codecs"]["decoders"],
        backend=config["codecs"]["backend"],
        decode_size=config["codecs"]["decode_size"],
        repeats=config["repeats"],
        scratch=lambda w: f"results/{w.dataset}/.codecs",
    script:
        "../scripts/codecs.py"


rule codecs_plot:
    input:
        "results/{dataset}/codecs.csv",
    output:
        report(
            "results/{dataset}/plots/codecs.png",
            caption="../report/codecs.rst",
            category="2. Many images",
            subcategory="Codecs and decoders",
            labels={
                "experiment": "codecs",
                "measure": "bytes per image against decode speed",
            },
        ),
    log:
        "logs/{dataset}/codecs_plot.log",
    conda:
        CONDA_ENV
    params:
        code=code("codecs_plot.py"),
    script:
        "../scripts/codecs_plot.py"
