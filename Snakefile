# NITRO: build each model in the recipe into results/<name>/ (chunked, compressed, compiled OpenVINO artifacts
# and manifest.json). The stages live in rules/*.smk; what they run lives in the nitro package.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/source.smk"
include: "rules/export.smk"
include: "rules/compress.smk"
include: "rules/warmup.smk"
include: "rules/compile.smk"


rule all:
    input:
        expand("results/{model}/manifest.json", model=RECIPES),
    default_target: True
