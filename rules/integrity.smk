# What each backend does under faults: one job per backend label, on small stores of its own in a
# scratch directory it deletes. Nothing is timed, so it holds no `timing` resource; one core.
# Its priority puts it after the timing jobs: on ext4 without a journal, the tens of thousands of
# files it deletes would slow the creation of files for minutes (a 100,000-PNG store's repeats
# took 23 s instead of 12 s right after it).


rule integrity:
    input:
        unpack(source_inputs),
        reference=reference,
    output:
        "results/{dataset}/integrity/{backend}.csv",
    log:
        "logs/{dataset}/integrity/{backend}.log",
    priority: -1
    conda:
        CONDA_ENV
    params:
        **BACKEND_PARAMS,
        code=code("integrity.py"),
        images=config["integrity"]["images"],
        killed_images=config["integrity"]["killed_images"],
        scratch=lambda w: f"results/{w.dataset}/.integrity/{w.backend}",
    script:
        "../scripts/integrity.py"


rule integrity_table:
    input:
        expand(
            "results/{{dataset}}/integrity/{backend}.csv", backend=INTEGRITY_BACKENDS
        ),
    output:
        "results/{dataset}/integrity.csv",
    log:
        "logs/{dataset}/integrity_table.log",
    conda:
        CONDA_ENV
    params:
        code=code("integrity_table.py"),
    script:
        "../scripts/integrity_table.py"
