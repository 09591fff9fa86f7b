rule source:
    """Materialise the checkpoint as a HF folder with a tensor index, and the tokenizer files apart."""
    input:
        code=code("build/source.py"),
        checkpoint=lambda w: RECIPES[w.model].source.files(),
    output:
        source=directory("results/{model}/source"),
        tokenizer=directory("results/{model}/tokenizer"),
    params:
        settings=as_json(
            lambda r, w: {
                "source": r.source.__dict__,
                "tokenizer_out": f"results/{w.model}/tokenizer",
            }
        ),
    log:
        "results/{model}/logs/source.json",
    threads: 1
    resources:
        mem_mb=mem_mb("source"),
        runtime=runtime_min("source"),
    shell:
        "{NITRO} source --params {params.settings:q} --out {output.source} --log {log} --mem-mb {resources.mem_mb}"
