"""Model families NITRO rewrites. `spec_for` reads a HF config; `modules_for` returns the chunk modules.

Importing this package does not import torch: the Snakefile uses `spec_for` while it builds the DAG.
"""
from __future__ import annotations

import importlib

from .spec import ModelSpec, UnsupportedModel

# HF model_type -> NITRO family module; Qwen2 reuses the Llama graph (see qwen2.py).
FAMILIES = {"llama": "llama", "qwen2": "qwen2"}
GRAPH_MODULE = {"llama": "llama", "qwen2": "llama"}


def spec_for(config: dict) -> ModelSpec:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        archs = config.get("architectures") or [model_type]
        raise UnsupportedModel(
            f"architecture {archs[0]!r} (model_type {model_type!r}) is not supported; "
            f"supported model_type values: {', '.join(sorted(FAMILIES))}"
        )
    return importlib.import_module(f".{FAMILIES[model_type]}", __name__).spec_from_config(config)


def modules_for(spec: ModelSpec):
    """The module that defines Embedding, DecoderChunk and Head for this family."""
    return importlib.import_module(f".{GRAPH_MODULE[spec.family]}", __name__)


__all__ = ["ModelSpec", "UnsupportedModel", "spec_for", "modules_for"]
