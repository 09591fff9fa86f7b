# NITRO: build each model in the recipe into results/<name>/ (chunked, compressed, compiled OpenVINO artifacts
# and manifest.json). The stages live in rules/*.smk; what they run lives in the nitro package.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


# The shipped recipe, unless the user gives their own with --configfile (which would otherwise be merged into it).
if "models" not in config:

    configfile: os.path.join(workflow.basedir, "config/config.yaml")


SCHEMA = os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
try:
    validate(config, SCHEMA)  # fills in the schema's defaults
except WorkflowError:
    from nitro.build.recipe import config_error

    raise WorkflowError(config_error(config, SCHEMA)) from None


include: "rules/common.smk"
include: "rules/source.smk"
include: "rules/export.smk"
include: "rules/evaluate.smk"
include: "rules/calibrate.smk"
include: "rules/compress.smk"
include: "rules/compile.smk"
include: "rules/assemble.smk"
include: "rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        expand(model_path(MANIFEST), model=RECIPES),
        expand(model_path(REPORT), model=RECIPES),
    default_target: True
