"""Model families NITRO rewrites. `spec_for` reads a HF config; `modules_for` returns the chunk modules.

Importing this package does not import torch: the Snakefile uses `spec_for` while it builds the DAG.
"""
from __future__ import annotations

import importlib

from .spec import ModelSpec, UnsupportedModel, llama_spec, qwen2_spec

# HF model_type -> how its config reads into a ModelSpec, and the module with its graph (Qwen2 reuses Llama's).
FAMILIES = {"llama": llama_spec, "qwen2": qwen2_spec}
GRAPH_MODULE = {"llama": "llama", "qwen2": "llama"}


def spec_for(config: dict) -> ModelSpec:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        archs = config.get("architectures") or [model_type]
        raise UnsupportedModel(
            f"architecture {archs[0]!r} (model_type {model_type!r}) is not supported; "
            f"supported model_type values: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type](config)


def modules_for(spec: ModelSpec):
    """The module that defines Embedding, DecoderChunk and Head for this family."""
    return importlib.import_module(f".{GRAPH_MODULE[spec.family]}", __name__)


__all__ = ["ModelSpec", "UnsupportedModel", "spec_for", "modules_for"]
