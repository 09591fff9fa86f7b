"""The architecture facts that export, memory estimates and the runtime need, read from a HF config.json,
for every supported family.

Kept free of torch so the Snakefile can read it while it builds the DAG.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "longrope")


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
    partial_rotary_factor: float = 1.0  # RoPE turns the first this share of each head's dims (Phi-4-mini: 0.75)
    hidden_act: str = "silu"  # the gate's activation: silu, or gelu_pytorch_tanh (Gemma 2's GeGLU)
    sliding_window: int | None = None  # a sliding layer's token sees only the last this many positions
    layer_types: list[str] | None = None  # per layer, "sliding_attention" or "full_attention" (Gemma 2);
    # None: every layer slides when sliding_window is set (Mistral, Phi-3)
    attention_scale: float | None = None  # the softmax scale of q·k; None: head_dim ** -0.5
    attn_logit_softcapping: float | None = None  # Gemma 2: attention scores become cap * tanh(score / cap)
    final_logit_softcapping: float | None = None  # Gemma 2: the logits too
    embed_scale: float = 1.0  # Gemma 2 multiplies the embeddings by √hidden_size

    def window_of(self, layer: int) -> int | None:
        """The sliding window of decoder layer `layer`, or None where it sees every earlier position."""
        if self.layer_types is not None and self.layer_types[layer] != "sliding_attention":
            return None
        return self.sliding_window

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
    """(rope_theta, scaling dict) from either transformers 4 (`rope_scaling`) or 5 (`rope_parameters`) configs.
    Longrope's dict carries what transformers derives from the config: the original context length, past which
    it switches to the long factors, and the attention factor that scales cos and sin."""
    params = dict(config.get("rope_parameters") or {})
    scaling = dict(config.get("rope_scaling") or {})
    theta = params.pop("rope_theta", config.get("rope_theta", 10000.0))
    merged = {**params, **scaling}
    merged.pop("partial_rotary_factor", None)
    rope_type = merged.pop("rope_type", merged.pop("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModel(
            f"rope type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        return float(theta), {}
    if rope_type == "llama3" and "original_max_position_embeddings" not in merged:
        merged["original_max_position_embeddings"] = config["max_position_embeddings"]
    if rope_type == "longrope":
        original = config.get("original_max_position_embeddings") or merged.get(
            "original_max_position_embeddings", config["max_position_embeddings"])
        factor = merged.get("factor") or config["max_position_embeddings"] / original
        attention_factor = merged.get("attention_factor")
        if attention_factor is None:
            attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
        merged = {"short_factor": merged["short_factor"], "long_factor": merged["long_factor"],
                  "original_max_position_embeddings": original, "attention_factor": attention_factor}
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
        partial_rotary_factor=float(config.get("partial_rotary_factor")
                                    or (config.get("rope_parameters") or {}).get("partial_rotary_factor") or 1.0),
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
    config = {**config, "head_dim": config.get("head_dim") or 128}  # transformers' Qwen3Config default
    return ModelSpec(family="qwen3", qkv_bias=bias, o_bias=bias, **common_fields(config))


def mistral_spec(config: dict) -> ModelSpec:
    """Mistral: Llama's graph with, where the config sets one, a sliding attention window."""
    _check_mlp(config)
    window = config.get("sliding_window", 4096)  # transformers' MistralConfig default, where the key is missing
    return ModelSpec(family="mistral", qkv_bias=False, o_bias=False, sliding_window=window, **common_fields(config))


def phi3_spec(config: dict) -> ModelSpec:
    """Phi-3 / 3.5 / Phi-4-mini: Llama's layers with fused q/k/v and gate/up tensors in the checkpoint, partial
    RoPE and longrope scaling, and a sliding window where the config sets one."""
    _check_mlp(config)
    config = dict(config)
    for key in ("rope_scaling", "rope_parameters"):  # older Phi-3 configs name longrope "su" or "yarn"
        rope = dict(config.get(key) or {})
        if rope.get("type", rope.get("rope_type")) in ("su", "yarn"):
            config[key] = {**rope, "rope_type": "longrope"}
    config.setdefault("original_max_position_embeddings", 4096)  # transformers' Phi3Config default
    return ModelSpec(family="phi3", qkv_bias=False, o_bias=False, sliding_window=config.get("sliding_window"),
                     **common_fields(config))


def gemma2_spec(config: dict) -> ModelSpec:
    """Gemma 2: GeGLU, (1 + weight) norms before and after attention and MLP, embeddings times √hidden_size,
    soft-capped attention scores and logits, sliding and full attention layers alternating."""
    act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
        raise UnsupportedModel(f"Gemma 2 with hidden_activation {act!r} is not supported (only gelu_pytorch_tanh)")
    layers = config["num_hidden_layers"]
    layer_types = config.get("layer_types") or [
        "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    bias = bool(config.get("attention_bias", False))
    fields = common_fields({**config, "tie_word_embeddings": config.get("tie_word_embeddings", True)})
    return ModelSpec(family="gemma2", qkv_bias=bias, o_bias=bias, hidden_act=act,
                     sliding_window=config.get("sliding_window"), layer_types=list(layer_types),
                     attention_scale=config.get("query_pre_attn_scalar", 256) ** -0.5,
                     attn_logit_softcapping=config.get("attn_logit_softcapping", 50.0),  # transformers' defaults
                     final_logit_softcapping=config.get("final_logit_softcapping", 30.0),
                     embed_scale=_in_checkpoint_dtype(config["hidden_size"] ** 0.5, config), **fields)


def _in_checkpoint_dtype(value: float, config: dict) -> float:
    """`value` rounded to the checkpoint's float type, as transformers rounds Gemma's embedding scale (√3584 is
    59.87, 59.75 in bfloat16): the models were trained so."""
    import numpy as np

    dtype = config.get("dtype") or config.get("torch_dtype")
    if dtype == "bfloat16":  # numpy has no bfloat16: keep the top 16 bits, rounded to nearest even
        bits = int(np.float32(value).view(np.uint32))
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return float(np.uint32(bits).view(np.float32))
    return float(np.float16(value) if dtype == "float16" else np.float32(value))
