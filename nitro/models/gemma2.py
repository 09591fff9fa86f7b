"""Gemma 2 (Gemma2ForCausalLM): Llama's graph (nitro/models/llama.py) with Gemma's own parts:

- embeddings multiplied by √hidden_size (rounded to the checkpoint's float type, as transformers does);
- RMSNorm scaling by (1 + weight), and four per layer: before and after attention, before and after the MLP;
- GeGLU (gelu-tanh gate) and softmax scale query_pre_attn_scalar^-0.5 (the spec carries both);
- attention scores and final logits soft-capped: cap * tanh(x / cap);
- sliding-window and full-attention layers alternating (the spec's layer_types; Llama's chunk masks each).
"""
from __future__ import annotations

import torch

from . import llama
from .spec import ModelSpec


class RMSNorm(llama.RMSNorm):
    def gain(self):
        return 1.0 + self.weight


def soft_cap(x, cap: float | None):
    return x if cap is None else torch.tanh(x / cap) * cap


class Attention(llama.Attention):
    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.cap = spec.attn_logit_softcapping

    def soft_cap(self, scores):
        return soft_cap(scores, self.cap)


class DecoderLayer(llama.DecoderLayer):
    norm_type = RMSNorm

    def __init__(self, spec: ModelSpec, f16_safe: bool):
        super().__init__(spec, f16_safe)
        self.pre_feedforward_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, f16_safe)
        self.post_feedforward_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, f16_safe)

    def attention(self, spec: ModelSpec, f16_safe: bool) -> Attention:
        return Attention(spec)

    def forward(self, x, cos, sin, past_k, past_v, bias):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_k, past_v, bias)
        x = x + self.post_attention_layernorm(a)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))), k, v


class DecoderChunk(llama.DecoderChunk):
    layer = DecoderLayer


class Embedding(llama.Embedding):
    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.scale = spec.embed_scale

    def forward(self, input_ids):
        return super().forward(input_ids) * self.scale


class Head(llama.Head):
    norm_type = RMSNorm

    def __init__(self, spec: ModelSpec, f16_safe: bool):
        super().__init__(spec, f16_safe)
        self.cap = spec.final_logit_softcapping

    def forward(self, x):
        return soft_cap(super().forward(x), self.cap)


__all__ = ["Embedding", "DecoderChunk", "Head"]
