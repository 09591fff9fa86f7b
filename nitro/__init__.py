"""NITRO: build LLMs into chunked, static-shape OpenVINO artifacts for Intel NPUs (and CPU/GPU), and run them."""
__version__ = "0.1.0"

# The original NITRO's API (nitro/pipeline.py), imported on first use: `import nitro` stays light for the
# CLI and for the Snakefile, which imports nitro.build while it plans the build.
PIPELINE_API = ("LlamaPipeline", "Qwen2Pipeline", "Qwen3Pipeline", "MistralPipeline", "Phi3Pipeline",
                "Gemma2Pipeline", "Pipeline", "load_pipeline", "ModelConfig", "GenerationConfig", "VerboseConfig")
__all__ = list(PIPELINE_API)


def __getattr__(name):
    if name in PIPELINE_API:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'nitro' has no attribute {name!r}")
