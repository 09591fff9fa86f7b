"""Qwen3 (Qwen3ForCausalLM): Llama's graph (nitro/models/llama.py) with an RMSNorm over each head's queries
and keys, after the projections and before RoPE, no q/k/v bias (unless the config asks for it), and its own
head_dim (128 where hidden_size / heads is not).
"""
from __future__ import annotations

from . import llama
from .llama import Embedding, Head, RMSNorm
from .spec import ModelSpec


class Attention(llama.Attention):
    def __init__(self, spec: ModelSpec, f16_safe: bool):
        super().__init__(spec)
        self.q_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps, f16_safe)
        self.k_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps, f16_safe)

    def heads_of(self, x):
        """Llama's heads, each query and key head normalized over its head_dim."""
        q, k, v = super().heads_of(x)
        return self.q_norm(q), self.k_norm(k), v


class DecoderLayer(llama.DecoderLayer):
    def attention(self, spec: ModelSpec, f16_safe: bool) -> Attention:
        return Attention(spec, f16_safe)


class DecoderChunk(llama.DecoderChunk):
    layer = DecoderLayer


__all__ = ["Embedding", "DecoderChunk", "Head"]
