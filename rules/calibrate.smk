# Calibration for NNCF's data-aware compression: the held-out rules of evaluate.smk run on the calibration text.
# Only chunks whose compression is data-aware ask for these files, so a build without it runs none of them.


use rule heldout_tokens as calibration_tokens with:
    output:
        model_path(CALIBRATION, TOKENS),
    params:
        step="calibration",
        settings=as_json(lambda r, w: r.calibration_params()),
    log:
        model_path(log_file("calibration")),


use rule reference_chunk as activations_chunk with:
    input:
        exported=model_path(EXPORT, "{chunk}"),
        activations=previous_output(CALIBRATION),
        code=code("activations"),
    output:
        model_path(CALIBRATION, "{chunk}.npy"),
    params:
        step="activations",
    log:
        chunk_log("activations"),
    resources:
        mem_mb=mem_mb("activations"),
        disk_mb=disk_mb("activations"),
        runtime=runtime_min("activations"),
