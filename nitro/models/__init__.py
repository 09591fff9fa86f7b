"""Model families NITRO rewrites. `spec_for` reads a HF config; `modules_for` returns the chunk modules.

Importing this package does not import torch: the Snakefile uses `spec_for` while it builds the DAG.
"""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple

from .spec import (ModelSpec, UnsupportedModel, gemma2_spec, llama_spec, mistral_spec, phi3_spec, qwen2_spec,
                   qwen3_spec)


class Family(NamedTuple):
    read_spec: Callable[[dict], ModelSpec]  # HF config.json -> ModelSpec
    graph_module: str  # the module (in this package) defining its Embedding, DecoderChunk and Head


# HF model_type -> its family. Qwen2 is Llama's graph with q/k/v biases, Mistral with a sliding window; Qwen3 adds
# per-head q/k norms, Phi-3 reads fused checkpoint tensors, Gemma 2 changes norms, MLP, scaling and capping.
FAMILIES = {"llama": Family(llama_spec, "llama"), "qwen2": Family(qwen2_spec, "llama"),
            "mistral": Family(mistral_spec, "llama"), "qwen3": Family(qwen3_spec, "qwen3"),
            "phi3": Family(phi3_spec, "phi3"), "gemma2": Family(gemma2_spec, "gemma2")}


def spec_for(config: dict) -> ModelSpec:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        archs = config.get("architectures") or [model_type]
        raise UnsupportedModel(
            f"architecture {archs[0]!r} (model_type {model_type!r}) is not supported; "
            f"supported model_type values: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type].read_spec(config)


def modules_for(spec: ModelSpec):
    """The module that defines Embedding, DecoderChunk and Head for this family."""
    return importlib.import_module(f".{FAMILIES[spec.family].graph_module}", __name__)


def graph_modules() -> list[str]:
    """Every family's graph module by its full name: `modules_for` imports them by name, so no import statement
    shows them to a reader of the code (or to nitro.build.recipe.step_code)."""
    return sorted({f"{__name__}.{family.graph_module}" for family in FAMILIES.values()})


__all__ = ["ModelSpec", "UnsupportedModel", "spec_for", "modules_for", "graph_modules"]
