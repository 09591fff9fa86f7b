"""Qwen2 / Qwen2.5: the Llama graph with biases on the q/k/v projections (none on o_proj)."""
from __future__ import annotations

from .spec import ModelSpec, UnsupportedModel, common_fields


def spec_from_config(config: dict) -> ModelSpec:
    if config.get("use_sliding_window"):
        raise UnsupportedModel("Qwen2 with use_sliding_window=true is not supported")
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"hidden_act {config['hidden_act']!r} is not supported (only silu)")
    return ModelSpec(family="qwen2", qkv_bias=True, o_bias=False, **common_fields(config))
