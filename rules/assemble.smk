rule assemble:
    """Load every chunk together from its blob as the runtime will, run a smoke inference, evaluate the model on the
    held-out tokens against the uncompressed reference, write the manifest."""
    input:
        compiled=lambda w: expand(model_path(COMPILED, "{chunk}"), model=w.model, chunk=RECIPES[w.model].chunk_names),
        # hashed into the manifest, beside the blobs compiled from them
        compressed=lambda w: expand(model_path(COMPRESSED, "{chunk}"), model=w.model,
                                    chunk=RECIPES[w.model].chunk_names),
        tokenizer=model_path(TOKENIZER),
        heldout=model_path(REFERENCE, TOKENS),
        reference=model_path(REFERENCE, "head.npy"),
        code=code("assemble"),
    output:
        model_path(MANIFEST),
    params:
        settings=as_json(lambda r, w: r.manifest_params()),
    log:
        model_path(log_file("assemble")),
    threads: 2
    resources:
        mem_mb=mem_mb("assemble"),
        disk_mb=disk_mb("assemble"),
        runtime=runtime_min("assemble"),
    shell:
        "{NITRO} assemble --params {params.settings:q} --out {output} --log {log} --mem-mb {resources.mem_mb}"
        " --disk-mb {resources.disk_mb}"
