"""The build steps the Snakemake rules run, one process per job: `python -m nitro.build STEP ...` (see __main__)
calls the `run(args)` of the step's module. Each step reads its inputs' files and writes its outputs atomically
through nitro.artifacts; nitro/build/recipe.py says what each step is given."""

STEPS = {
    "source": "nitro.build.source",  # the checkpoint as a Hugging Face folder, and its tokenizer
    "heldout": "nitro.build.tokens",  # the held-out text as token ids, for evaluation
    "calibration": "nitro.build.tokens",  # the calibration text as token ids, for data-aware compression
    "export": "nitro.build.export",  # one chunk to OpenVINO IR
    "reference": "nitro.build.reference",  # the held-out tokens through one uncompressed chunk
    "activations": "nitro.build.reference",  # the calibration tokens through one uncompressed chunk
    "compress": "nitro.build.compress",  # one chunk's weights compressed with NNCF
    "compile": "nitro.build.compile",  # one chunk compiled for the device: its blobs
    "assemble": "nitro.build.assemble",  # every chunk loaded together, a smoke inference, evaluation, the manifest
    "report": "nitro.build.report",  # the build's report page, from the manifest
}
