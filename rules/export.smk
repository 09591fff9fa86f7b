rule export_chunk:
    """One chunk to OpenVINO IR (static or dynamic shapes, per the recipe), reading only that chunk's tensors."""
    input:
        source="results/{model}/source",
        code=code("build/export.py", "models/llama.py", "models/spec.py"),
    output:
        directory("results/{model}/export/{chunk}"),
    params:
        settings=as_json(lambda r, w: r.export_params(w.chunk)),
    log:
        "results/{model}/logs/export/{chunk}.json",
    threads: 1
    resources:
        mem_mb=mem_mb("export"),
        runtime=runtime_min("export"),
    shell:
        "{NITRO} export --chunk {wildcards.chunk} --params {params.settings:q} --input {input.source}"
        " --out {output} --log {log} --mem-mb {resources.mem_mb}"
