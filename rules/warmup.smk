rule warmup_chunk:
    """Compile one chunk for the target device alone and keep the compiled blob. Compiled blobs are
    device-specific: on a cluster, run this rule on the machine that has the device."""
    input:
        compressed="results/{model}/compressed/{chunk}",
        code=code("build/warmup.py"),
    output:
        directory("results/{model}/compiled/{chunk}"),
    params:
        settings=as_json(lambda r, w: r.device_params()),
    log:
        "results/{model}/logs/warmup/{chunk}.json",
    threads: 2
    resources:
        mem_mb=mem_mb("warmup"),
        runtime=runtime_min("warmup"),
    shell:
        "{NITRO} warmup --chunk {wildcards.chunk} --params {params.settings:q} --input {input.compressed}"
        " --out {output} --log {log} --mem-mb {resources.mem_mb}"
