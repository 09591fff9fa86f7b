rule report:
    """The build's report page: chunks and compression, the evaluation, every step's time and memory, with a chart.
    `snakemake --report report.html` embeds it beside Snakemake's own run statistics."""
    input:
        manifest=model_path(MANIFEST),
        code=code("report"),
    output:
        report(model_path(REPORT), category="Builds", subcategory="{model}", labels={"model": "{model}"},
               caption="../workflow/report/build.rst"),
    params:
        step="report",
        root=model_path(),
    log:
        model_path(log_file("report")),
    threads: 1
    resources:
        mem_mb=mem_mb("report"),
        disk_mb=disk_mb("report"),
        runtime=runtime_min("report"),
    shell:
        "{NITRO} {params.step} --params {{}} --input {params.root} --out {output} --log {log}"
        " --mem-mb {resources.mem_mb} --disk-mb {resources.disk_mb}"
