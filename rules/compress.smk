rule compress_chunk:
    """NNCF weight compression of one chunk, with the recipe's per-chunk setting."""
    input:
        exported=model_path(EXPORT, "{chunk}"),
        code=code("compress"),
    output:
        directory(model_path(COMPRESSED, "{chunk}")),
    params:
        settings=as_json(lambda r, w: r.compression(w.chunk)),
    log:
        chunk_log("compress"),
    threads: 1
    resources:
        mem_mb=mem_mb("compress"),
        disk_mb=disk_mb("compress"),
        runtime=runtime_min("compress"),
    shell:
        "{NITRO} compress --chunk {wildcards.chunk} --params {params.settings:q} --input {input.exported}"
        " --out {output} --log {log} --mem-mb {resources.mem_mb} --disk-mb {resources.disk_mb}"
