"""Llama 3 / 3.1 / 3.2 as three kinds of exportable chunk: embedding, a group of decoder layers, norm + LM head.
Qwen2 / 2.5 is the same graph with q/k/v biases, Mistral with a sliding attention window (the spec says which);
the other families' files change parts of it.

Plain tensors in and out, explicit KV tensors; every shape follows from the inputs, so the same modules export
static graphs (an NPU) or dynamic ones. Numerics follow transformers' Llama: rotate-half RoPE computed in the
graph from `position_ids`, RMSNorm in float32 with the config's eps (`f16_safe`: computed so that a device
working in f16 does not overflow).

Attention is the "split" form: the new tokens' keys/values are scored against the past cache and against
each other separately, then merged in one softmax. The graph never writes into the cache; it returns the new
K/V and the host places them, so a decode step copies no cache.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .spec import ModelSpec

MASKED = torch.finfo(torch.float16).min  # representable in f16/bf16/f32, exp() of it is 0


def rope_inv_freq(spec: ModelSpec) -> torch.Tensor:
    """Inverse frequencies [rotary_dim/2], computed exactly as transformers does (float32), scaling applied;
    for longrope, with its short factors: a build's sequences stay within the original context (the recipe
    checks), where transformers uses those."""
    dim = int(spec.head_dim * spec.partial_rotary_factor)
    steps = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu")  # real values even under a meta device
    scaling = spec.rope_scaling
    kind = scaling.get("rope_type")
    if kind == "longrope":
        short = torch.tensor(scaling["short_factor"], dtype=torch.float32, device="cpu")
        return 1.0 / (short * spec.rope_theta ** (steps.float() / dim))
    inv_freq = 1.0 / (spec.rope_theta ** (steps.float() / dim))
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(is_medium, smoothed, scaled)
    return inv_freq


class Rotary(nn.Module):
    """position_ids [1,T] -> cos, sin [1,1,T,rotary_dim], as transformers' rotary embedding computes them."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(spec), persistent=False)
        self.attention_factor = spec.rope_scaling.get("attention_factor", 1.0)  # longrope scales cos and sin

    def forward(self, position_ids):
        freqs = position_ids[:, :, None].float() * self.inv_freq  # [1,T,rotary_dim/2]
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [1,1,T,rotary_dim]
        if self.attention_factor == 1.0:
            return emb.cos(), emb.sin()
        return emb.cos() * self.attention_factor, emb.sin() * self.attention_factor


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    """x [1,H,T,hd] turned by position; with partial RoPE only its first rotary_dim dims turn."""
    rotary = cos.shape[-1]
    if rotary == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    turned, kept = x[..., :rotary], x[..., rotary:]
    return torch.cat((turned * cos + rotate_half(turned) * sin, kept), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, f16_safe: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps, self.f16_safe = eps, f16_safe

    def gain(self):
        """What the normalized values are multiplied by (Gemma's norm differs)."""
        return self.weight

    def forward(self, x):
        x = x.float()
        if not self.f16_safe:  # transformers' x * rsqrt(mean(x²) + eps): OpenVINO fuses it into one RMS node
            return self.gain() * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        # The same, computed on x scaled by its largest magnitude: hidden states of real models reach ~2e4,
        # whose square overflows where a device computes in f16 (an NPU).
        scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-6)
        y = x / scale
        return self.gain() * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps / scale.pow(2)))


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        d, hd = spec.hidden_size, spec.head_dim
        self.heads, self.kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, hd
        self.scale = spec.attention_scale or hd**-0.5
        # q, k and v projections as one matrix: one larger matmul reads the weights faster than three small ones
        self.qkv_proj = nn.Linear(d, (spec.num_heads + 2 * spec.num_kv_heads) * hd, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(spec.num_heads * hd, d, bias=spec.o_bias)

    def heads_of(self, x):
        """x [1,T,D] -> q [1,H,T,hd], k and v [1,KV,T,hd], before RoPE."""
        T, H, KV, hd = x.shape[1], self.heads, self.kv_heads, self.head_dim
        q, k, v = self.qkv_proj(x).split([H * hd, KV * hd, KV * hd], dim=-1)
        return (q.view(1, T, H, hd).transpose(1, 2), k.view(1, T, KV, hd).transpose(1, 2),
                v.view(1, T, KV, hd).transpose(1, 2))

    def soft_cap(self, scores):
        """The scores as the softmax takes them (Gemma 2 bounds them)."""
        return scores

    def forward(self, x, cos, sin, past_k, past_v, bias):
        # x [1,T,D]; cos/sin [1,1,T,rotary_dim]; past_k/v [1,KV,C,hd]; bias [1,1,g*T,C+T]
        T, H, KV, hd = x.shape[1], self.heads, self.kv_heads, self.head_dim
        q, k, v = self.heads_of(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Query heads sharing a KV head are stacked along the row axis: no repeated K/V (GQA).
        # The softmax scale is applied to q once rather than to both score blocks: fewer graph nodes.
        q = q.reshape(1, KV, (H // KV) * T, hd) * self.scale
        scores = torch.cat((torch.matmul(q, past_k.transpose(2, 3)), torch.matmul(q, k.transpose(2, 3))), dim=-1)
        p = torch.softmax((self.soft_cap(scores) + bias).float(), dim=-1)  # [1,KV,gT,C+T]
        C = past_k.shape[2]
        out = torch.matmul(p[..., :C], past_v) + torch.matmul(p[..., C:], v)  # [1,KV,gT,hd]
        out = out.reshape(1, H, T, hd).transpose(1, 2).reshape(1, T, H * hd)
        return self.o_proj(out), k, v


# The gate's activation by its transformers name
ACTIVATIONS = {"silu": nn.functional.silu,
               "gelu_pytorch_tanh": lambda x: nn.functional.gelu(x, approximate="tanh")}


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        d, i = spec.hidden_size, spec.intermediate_size
        self.gate_up_proj = nn.Linear(d, 2 * i, bias=False)  # gate and up projections as one matrix
        self.down_proj = nn.Linear(i, d, bias=False)
        self.act = ACTIVATIONS[spec.hidden_act]

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


# Fused local projection -> the HF projections whose rows it stacks, in order.
FUSED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
}


class DecoderLayer(nn.Module):
    norm_type = RMSNorm  # a family whose norms differ sets its own

    def __init__(self, spec: ModelSpec, f16_safe: bool):
        super().__init__()
        self.input_layernorm = self.norm_type(spec.hidden_size, spec.rms_norm_eps, f16_safe)
        self.self_attn = self.attention(spec, f16_safe)
        self.post_attention_layernorm = self.norm_type(spec.hidden_size, spec.rms_norm_eps, f16_safe)
        self.mlp = MLP(spec)

    def attention(self, spec: ModelSpec, f16_safe: bool) -> Attention:
        """The layer's attention; a family whose attention differs overrides this."""
        return Attention(spec)

    def forward(self, x, cos, sin, past_k, past_v, bias):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, past_k, past_v, bias)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


class VocabTable(nn.Module):
    """A [V,D] table (token embeddings, LM head) kept as blocks of rows, each its own graph constant of at most
    BLOCK_ELEMENTS. Weight compression works a constant at a time and holds float32 intermediates of its size, so
    blocks bound that step's memory (Llama-3.2-1B's 128256 x 2048 table as one constant: 2.4 GB peak). Loaded
    from the one HF tensor; the blocks are views of it, not copies."""

    BLOCK_ELEMENTS = 1 << 26  # 256 MB in float32

    def __init__(self, rows: int, cols: int):
        super().__init__()
        self.block_rows = max(1, self.BLOCK_ELEMENTS // cols)
        self.blocks = nn.ParameterList(nn.Parameter(torch.empty(min(self.block_rows, rows - start), cols))
                                       for start in range(0, rows, self.block_rows))
        self.register_load_state_dict_pre_hook(self._split_table)

    def _split_table(self, module, state, prefix, *_):
        table = state.pop(prefix + "weight")
        state.update({f"{prefix}blocks.{i}": block for i, block in enumerate(table.split(self.block_rows))})

    def lookup(self, ids):
        """ids [1,T] -> rows [1,T,D]: each id's row, taken from the one block holding it."""
        if len(self.blocks) == 1:
            return nn.functional.embedding(ids, self.blocks[0])
        rows = 0
        for i, block in enumerate(self.blocks):
            local = ids - i * self.block_rows
            inside = (local >= 0) & (local < block.shape[0])
            found = nn.functional.embedding(local.clamp(0, block.shape[0] - 1), block)
            rows = rows + torch.where(inside[..., None], found, 0.0)
        return rows

    def project(self, x):
        """x [1,T,D] -> x @ table.T [1,T,V]"""
        return torch.cat([nn.functional.linear(x, block) for block in self.blocks], dim=-1)


class Embedding(nn.Module):
    """input_ids [1,T] -> x [1,T,D]"""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.embed_tokens = VocabTable(spec.vocab_size, spec.hidden_size)

    def forward(self, input_ids):
        return self.embed_tokens.lookup(input_ids)

    def weight_names(self) -> dict[str, list[str]]:
        return {"embed_tokens.weight": ["model.embed_tokens.weight"]}


class DecoderChunk(nn.Module):
    """Layers [first, first+count): (x [1,T,D], position_ids [1,T], past K/V per layer [1,KV,C,hd])
    -> (x [1,T,D], kv [2*count,KV,T,hd]: layer j's new keys at 2j, its values at 2j+1).
    Past slot s is valid iff s < position_ids[0, 0]."""

    layer = DecoderLayer  # a family whose layers differ sets its own
    fused = FUSED  # a family whose checkpoint holds the fused projections already sets {}

    def __init__(self, spec: ModelSpec, first: int, count: int, f16_safe: bool):
        super().__init__()
        self.first, self.count, self.group = first, count, spec.num_heads // spec.num_kv_heads
        self.windows = [spec.window_of(first + j) for j in range(count)]  # None: every earlier token is seen
        self.layers = nn.ModuleList(self.layer(spec, f16_safe) for _ in range(count))
        self.rotary = Rotary(spec)

    def attention_bias(self, position_ids, slots: int, window: int | None):
        """The additive mask [1,1,g*T,C+T] of layers with this window: past slots valid below the first position,
        causal among the new tokens, and with a window, a token at position p sees only the positions after
        p - window (itself included); rows are the g query heads sharing a KV head, each T tokens."""
        T, C = position_ids.shape[1], slots
        slot = torch.arange(C, dtype=position_ids.dtype)  # cache slot s holds position s
        seen_past = (slot < position_ids[:, :1]).expand(T, C)  # [T,C]
        seen_new = torch.ones(T, T, dtype=torch.bool).tril()  # [T,T]
        if window is not None:
            pos = position_ids[0]  # [T]
            seen_past = seen_past & (pos[:, None] - slot < window)
            seen_new = seen_new & (pos[:, None] - pos[None, :] < window)
        bias = torch.where(torch.cat((seen_past, seen_new), dim=-1), 0.0, MASKED)  # [T,C+T]
        return bias.repeat(self.group, 1).view(1, 1, self.group * T, C + T)

    def forward(self, x, position_ids, *past):
        cos, sin = self.rotary(position_ids)
        biases = {w: self.attention_bias(position_ids, past[0].shape[2], w) for w in dict.fromkeys(self.windows)}
        new_kv = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, past[2 * i], past[2 * i + 1], biases[self.windows[i]])
            new_kv += [k, v]
        return x, torch.cat(new_kv)  # one output, so the host places every layer's new K/V with one copy

    def weight_names(self) -> dict[str, list[str]]:
        names = {}
        for j in range(self.count):
            for local in self.layers[j].state_dict():
                module, _, param = local.rpartition(".")
                names[f"layers.{j}.{local}"] = [f"model.layers.{self.first + j}.{part}.{param}"
                                                for part in self.fused.get(module, (module,))]
        return names


class Head(nn.Module):
    """x [1,T,D] -> logits [1,T,V]: final norm and LM head."""

    norm_type = RMSNorm  # a family whose norms differ sets its own

    def __init__(self, spec: ModelSpec, f16_safe: bool):
        super().__init__()
        self.norm = self.norm_type(spec.hidden_size, spec.rms_norm_eps, f16_safe)
        self.lm_head = VocabTable(spec.vocab_size, spec.hidden_size)
        self.tied = spec.tie_word_embeddings

    def forward(self, x):
        return self.lm_head.project(self.norm(x)).float()

    def weight_names(self) -> dict[str, list[str]]:
        lm = "model.embed_tokens.weight" if self.tied else "lm_head.weight"
        return {"norm.weight": ["model.norm.weight"], "lm_head.weight": [lm]}
