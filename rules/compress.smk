def calibration_input(w):
    """A data-aware chunk's calibration activations: what the chunks before it gave on the calibration tokens."""
    if not RECIPES[w.model].data_aware(w.chunk):
        return []
    return previous_output(CALIBRATION)(w)


rule compress_chunk:
    """NNCF weight compression of one chunk, with the recipe's per-chunk setting; data-aware settings learn from
    the calibration activations entering the chunk."""
    input:
        exported=model_path(EXPORT, "{chunk}"),
        activations=calibration_input,
        code=code("compress"),
    output:
        directory(model_path(COMPRESSED, "{chunk}")),
    params:
        settings=as_json(lambda r, w: r.compression(w.chunk)),
        activations=lambda w, input: f"--activations {input.activations}" if input.activations else "",
    log:
        chunk_log("compress"),
    threads: 1
    resources:
        mem_mb=mem_mb("compress"),
        disk_mb=disk_mb("compress"),
        runtime=runtime_min("compress"),
    shell:
        "{NITRO} compress --chunk {wildcards.chunk} --params {params.settings:q} --input {input.exported}"
        " {params.activations} --out {output} --log {log} --mem-mb {resources.mem_mb} --disk-mb {resources.disk_mb}"
