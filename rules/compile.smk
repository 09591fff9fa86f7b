rule compile_chunk:
    """Compile one chunk for the target device on its own and keep the compiled blob. Compiled blobs are
    device-specific: on a cluster, run this rule on the machine that has the device."""
    input:
        compressed=model_path(COMPRESSED, "{chunk}"),
        code=code("compile"),
    output:
        directory(model_path(COMPILED, "{chunk}")),
    params:
        settings=as_json(lambda r, w: r.device_params()),
    log:
        chunk_log("compile"),
    threads: 2
    resources:
        mem_mb=mem_mb("compile"),
        disk_mb=disk_mb("compile"),
        runtime=runtime_min("compile"),
    shell:
        "{NITRO} compile --chunk {wildcards.chunk} --params {params.settings:q} --input {input.compressed}"
        " --out {output} --log {log} --mem-mb {resources.mem_mb} --disk-mb {resources.disk_mb}"
