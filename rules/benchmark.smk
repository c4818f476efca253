# store / read per backend and cutoff (an encoded store's largest read also times Pillow alone
# decoding the same bytes from memory, its limit; every store also times its checksums alone,
# and every read a verify of the whole store), the same for np.save / np.load of the same
# arrays (the limit), and the single-image experiment; one timing CSV per job.
# Timing jobs hold the `timing` resource (limit 1 in profiles/default) and every core, so no
# other job runs beside them.


rule store_many:
    input:
        unpack(source_inputs),
        reference=reference,
    output:
        store=directory("results/{dataset}/stores/{backend}/{n}"),
        timings="results/{dataset}/timings/store_many/{backend}_{n}.csv",
    log:
        "logs/{dataset}/store_many/{backend}_{n}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        **BACKEND_PARAMS,
        code=code("store_many.py"),
        repeats=config["repeats"],
        trash=TRASH,
    script:
        "../scripts/store_many.py"


rule read_many:
    input:
        unpack(source_inputs),
        reference=reference,
        encoded=encoded,
        store="results/{dataset}/stores/{backend}/{n}",
    output:
        timings="results/{dataset}/timings/read_many/{backend}_{client}_{n}.csv",
    log:
        "logs/{dataset}/read_many/{backend}_{client}_{n}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        **BACKEND_PARAMS,
        **CLIENT_PARAMS,
        code=code("read_many.py"),
        repeats=config["repeats"],
        cold=lambda w: reads_cold(w.n),
        paired=lambda w: paired(w),
    script:
        "../scripts/read_many.py"


rule limit:
    input:
        unpack(source_inputs),
    output:
        timings="results/{dataset}/timings/limit/{n}.csv",
    log:
        "logs/{dataset}/limit/{n}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        code=code("limit.py"),
        repeats=config["repeats"],
    script:
        "../scripts/limit.py"


rule single:
    input:
        unpack(source_inputs),
        reference=reference,
    output:
        store=directory("results/{dataset}/stores/{backend}/single"),
        timings="results/{dataset}/timings/single/{backend}.csv",
    log:
        "logs/{dataset}/single/{backend}.log",
    conda:
        CONDA_ENV
    threads: TIMING_THREADS
    resources:
        timing=1,
    params:
        **BACKEND_PARAMS,
        code=code("single.py"),
        repeats=config["repeats"],
    script:
        "../scripts/single.py"
