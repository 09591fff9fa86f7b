def _step_logs(w):
    r = RECIPES[w.model]
    stages = ("export", "compress", "warmup")
    return [f"results/{w.model}/logs/source.json"] + [
        f"results/{w.model}/logs/{s}/{c}.json" for s in stages for c in r.chunk_names
    ]


rule compile:
    """Load every chunk together from its blob, run a smoke inference, write the manifest."""
    input:
        compiled=lambda w: expand("results/{{model}}/compiled/{chunk}", chunk=RECIPES[w.model].chunk_names),
        tokenizer="results/{model}/tokenizer",
        code=code("build/compile.py", "runtime/model.py"),
    output:
        "results/{model}/manifest.json",
    params:
        settings=as_json(
            lambda r, w: {
                "chunks": r.chunk_names,
                "recipe": {
                    "name": r.name,
                    "settings": r.settings,
                    "source": r.source.__dict__,
                    "spec": r.spec.to_dict(),
                    "family": r.spec.family,
                    "max_seq_len": r.settings["max_seq_len"],
                    "prefill_len": r.settings["prefill_len"],
                    "shapes": r.shapes(),
                    "device": r.device_params(),
                },
            }
        ),
        logs=_step_logs,
    log:
        "results/{model}/logs/compile.json",
    threads: 2
    resources:
        mem_mb=mem_mb("compile"),
        runtime=runtime_min("compile"),
    shell:
        "{NITRO} compile --params {params.settings:q} --out {output} --log {log} --mem-mb {resources.mem_mb}"
        " --logs {params.logs}"
