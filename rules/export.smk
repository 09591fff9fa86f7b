rule export_chunk:
    """One chunk to OpenVINO IR (static or dynamic shapes, per the recipe), reading only that chunk's tensors."""
    input:
        source=model_path(SOURCE),
        code=code("export"),
    output:
        directory(model_path(EXPORT, "{chunk}")),
    params:
        settings=as_json(lambda r, w: r.export_params(w.chunk)),
    log:
        chunk_log("export"),
    threads: 1
    resources:
        mem_mb=mem_mb("export"),
        disk_mb=disk_mb("export"),
        runtime=runtime_min("export"),
    shell:
        "{NITRO} export --chunk {wildcards.chunk} --params {params.settings:q} --input {input.source}"
        " --out {output} --log {log} --mem-mb {resources.mem_mb} --disk-mb {resources.disk_mb}"
