rule compress_chunk:
    """NNCF weight compression of one chunk, with the recipe's per-chunk setting."""
    input:
        exported="results/{model}/export/{chunk}",
        code=code("build/compress.py"),
    output:
        directory("results/{model}/compressed/{chunk}"),
    params:
        settings=as_json(lambda r, w: r.compression(w.chunk)),
    log:
        "results/{model}/logs/compress/{chunk}.json",
    threads: 1
    resources:
        mem_mb=mem_mb("compress"),
        runtime=runtime_min("compress"),
    shell:
        "{NITRO} compress --chunk {wildcards.chunk} --params {params.settings:q} --input {input.exported}"
        " --out {output} --log {log} --mem-mb {resources.mem_mb}"
