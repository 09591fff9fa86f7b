"""Phi-3 / 3.5 and Phi-4-mini (Phi3ForCausalLM): Llama's graph (nitro/models/llama.py), which already computes
what Phi-3 adds (partial RoPE, longrope, a sliding window: the spec carries them). What differs is the
checkpoint: it holds q/k/v and gate/up fused, as `qkv_proj` and `gate_up_proj`, in the order the graph uses.
"""
from __future__ import annotations

from . import llama
from .llama import Embedding, Head


class DecoderChunk(llama.DecoderChunk):
    fused = {}  # each local projection is one checkpoint tensor of the same name


__all__ = ["Embedding", "DecoderChunk", "Head"]
