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
