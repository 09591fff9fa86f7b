"""The architecture facts that export, memory estimates and the runtime need, read from a HF config.json,
for every supported family.

Kept free of torch so the Snakefile can read it while it builds the DAG.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class UnsupportedModel(ValueError):
    """The checkpoint is not one NITRO can rewrite (architecture, RoPE type, ...)."""


@dataclass(frozen=True)
class ModelSpec:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    rope_scaling: dict = field(default_factory=dict)
    sliding_window: int | None = None  # attention sees only the last this many positions (Mistral)

    def to_dict(self) -> dict:
        return asdict(self)

    def layer_params(self) -> int:
        """Parameters in one decoder layer."""
        d, hd = self.hidden_size, self.head_dim
        q, kv = self.num_heads * hd, self.num_kv_heads * hd
        attn = d * (q + 2 * kv) + q * d + (q + 2 * kv) * self.qkv_bias + d * self.o_bias
        return attn + 3 * d * self.intermediate_size + 2 * d

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size


def rope_settings(config: dict) -> tuple[float, dict]:
    """(rope_theta, scaling dict) from either transformers 4 (`rope_scaling`) or 5 (`rope_parameters`) configs."""
    params = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or {})
    theta = params.pop("rope_theta", config.get("rope_theta", 10000.0))
    merged = {**params, **scaling}
    rope_type = merged.pop("rope_type", merged.pop("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModel(
            f"rope type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        return float(theta), {}
    if rope_type == "llama3" and "original_max_position_embeddings" not in merged:
        merged["original_max_position_embeddings"] = config["max_position_embeddings"]
    return float(theta), {"rope_type": rope_type, **merged}


def common_fields(config: dict) -> dict:
    """Fields read the same way for every Llama-like family."""
    heads = config["num_attention_heads"]
    theta, scaling = rope_settings(config)
    return dict(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        rms_norm_eps=config["rms_norm_eps"],
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def _check_mlp(config: dict) -> None:
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"hidden_act {config['hidden_act']!r} is not supported (only silu)")
    if config.get("mlp_bias"):
        raise UnsupportedModel("mlp_bias=true is not supported")


def llama_spec(config: dict) -> ModelSpec:
    """Llama 3 / 3.1 / 3.2 (and Llama-architecture models such as SmolLM2)."""
    _check_mlp(config)
    bias = bool(config.get("attention_bias", False))
    return ModelSpec(family="llama", qkv_bias=bias, o_bias=bias, **common_fields(config))


def qwen2_spec(config: dict) -> ModelSpec:
    """Qwen2 / Qwen2.5: the Llama graph with biases on the q/k/v projections (none on o_proj)."""
    if config.get("use_sliding_window"):
        raise UnsupportedModel("Qwen2 with use_sliding_window=true is not supported")
    _check_mlp(config)
    return ModelSpec(family="qwen2", qkv_bias=True, o_bias=False, **common_fields(config))


def qwen3_spec(config: dict) -> ModelSpec:
    """Qwen3: Llama's layers with per-head q/k norms (nitro/models/qwen3.py), q/k/v/o biases only if
    attention_bias."""
    if config.get("use_sliding_window"):
        raise UnsupportedModel("Qwen3 with use_sliding_window=true is not supported")
    _check_mlp(config)
    bias = bool(config.get("attention_bias", False))
    return ModelSpec(family="qwen3", qkv_bias=bias, o_bias=bias, **common_fields(config))


def mistral_spec(config: dict) -> ModelSpec:
    """Mistral: Llama's graph with, where the config sets one, a sliding attention window."""
    _check_mlp(config)
    return ModelSpec(family="mistral", qkv_bias=False, o_bias=False, sliding_window=config.get("sliding_window"),
                     **common_fields(config))
