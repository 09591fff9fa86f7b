rule source:
    """Materialise the checkpoint as a HF folder with a tensor index, and the tokenizer files apart."""
    input:
        code=code("source"),
        checkpoint=lambda w: RECIPES[w.model].source.files(),
    output:
        source=directory(model_path(SOURCE)),
        tokenizer=directory(model_path(TOKENIZER)),
    params:
        settings=as_json(lambda r, w: r.source_params()),
    log:
        model_path(log_file("source")),
    threads: 1
    resources:
        mem_mb=mem_mb("source"),
        disk_mb=disk_mb("source"),
        runtime=runtime_min("source"),
    shell:
        "{NITRO} source --params {params.settings:q} --out {output.source} --log {log} --mem-mb {resources.mem_mb}"
        " --disk-mb {resources.disk_mb}"
