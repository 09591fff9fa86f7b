rule heldout_tokens:
    """The held-out text, tokenized by the model's tokenizer: what every build is evaluated on."""
    input:
        tokenizer=model_path(TOKENIZER),
        code=code("heldout"),
    output:
        model_path(REFERENCE, TOKENS),
    params:
        step="heldout",
        settings=as_json(lambda r, w: r.heldout_params()),
    log:
        model_path(log_file("heldout")),
    threads: 1
    resources:
        mem_mb=mem_mb("heldout"),
        disk_mb=disk_mb("heldout"),
        runtime=runtime_min("heldout"),
    shell:
        "{NITRO} {params.step} --params {params.settings:q} --input {input.tokenizer} --out {output} --log {log}"
        " --mem-mb {resources.mem_mb} --disk-mb {resources.disk_mb}"


rule reference_chunk:
    """The held-out tokens through one uncompressed chunk, in float32 on the CPU: the reference the built model is
    compared with, made chunk by chunk so that no step holds more than one chunk's weights."""
    input:
        exported=model_path(EXPORT, "{chunk}"),
        activations=previous_output(REFERENCE),
        code=code("reference"),
    output:
        model_path(REFERENCE, "{chunk}.npy"),
    params:
        step="reference",
    log:
        chunk_log("reference"),
    threads: 2
    resources:
        mem_mb=mem_mb("reference"),
        disk_mb=disk_mb("reference"),
        runtime=runtime_min("reference"),
    shell:
        "{NITRO} {params.step} --chunk {wildcards.chunk} --params {{}} --input {input.exported}"
        " --activations {input.activations} --out {output} --log {log} --mem-mb {resources.mem_mb}"
        " --disk-mb {resources.disk_mb}"
