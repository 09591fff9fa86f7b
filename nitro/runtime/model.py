"""Load a built model (manifest + compiled chunk blobs) and run it: prefill, decode, KV cache.

The runtime reads only `manifest.json` and the artifacts it names; it never imports the build code.

Every graph input is a numpy buffer bound once at load time: one hidden-state buffer per variant that each
chunk's output is copied into for the next, one KV cache buffer per layer that each step's new K/V rows are
copied into, and the head's input, which takes only the one row whose logits are needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov

# KV precision -> (numpy storage dtype, OpenVINO element type); numpy has no bf16, so it is stored as uint16.
KV_TYPES = {"f32": (np.float32, ov.Type.f32), "f16": (np.float16, ov.Type.f16), "bf16": (np.uint16, ov.Type.bf16)}


class ContextOverflow(ValueError):
    """The sequence would not fit in the KV cache the model was built with."""


class ArtifactError(RuntimeError):
    """The built artifacts are missing or were built by another OpenVINO version or for another device."""


def read_manifest(root: Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise ArtifactError(f"{path} not found: build the model first (snakemake --cores 2)")
    return json.loads(path.read_text())


def _shared(array: np.ndarray, ov_type=None) -> ov.Tensor:
    """An ov.Tensor over the array's memory (no copy)."""
    if ov_type is None:
        return ov.Tensor(array, shared_memory=True)
    return ov.Tensor(array, list(array.shape), ov_type)


def _layers(chunk: dict) -> range:
    return range(chunk["first_layer"], chunk["first_layer"] + chunk["num_layers"])


class Model:
    """A built model loaded for inference on one sequence (batch 1)."""

    def __init__(self, root: Path, manifest: dict | None = None, progress=None):
        self.root = Path(root)
        self.manifest = manifest or read_manifest(self.root)
        m = self.manifest
        self.max_seq_len, self.prefill_len = m["max_seq_len"], m["prefill_len"]
        self.spec = m["spec"]
        self.vocab_size = self.spec["vocab_size"]
        self.device = m["device"]["device"]
        self.core = ov.Core()
        chunks = m["chunks"]
        steps = progress(chunks) if progress else chunks
        self.requests = {}  # (chunk name, variant) -> InferRequest
        for chunk in steps:
            for variant, info in chunk["variants"].items():
                self.requests[chunk["name"], variant] = self._import(info["blob"]).create_infer_request()
        self.embed, self.head = chunks[0]["name"], chunks[-1]["name"]
        self.decoders = [c for c in chunks if c["kind"] == "decoder"]
        self._bind_buffers()
        self.position = 0

    def _import(self, blob: str) -> ov.CompiledModel:
        device = self.manifest["device"]
        try:
            with open(self.root / blob, "rb") as f:
                return self.core.import_model(f.read(), device["device"], device["properties"])
        except (OSError, RuntimeError) as exc:
            raise ArtifactError(
                f"cannot load {self.root / blob} on {device['device']}: {str(exc).strip().splitlines()[0]}. "
                f"It was built with OpenVINO {self.manifest['versions']['openvino']} "
                f"(this is {ov.get_version()}); rebuild it with snakemake."
            ) from None

    def _bind_buffers(self):
        """Bind every graph input to a numpy buffer once. Outputs are read after each call instead of bound:
        not every device plugin writes into a caller's output tensor (the NPU's NPUW path does not)."""
        spec, C = self.spec, self.max_seq_len
        self.kv_dtype, kv_ov = KV_TYPES[self.manifest["kv_precision"]]
        kv_shape = (1, spec["num_kv_heads"], C, spec["head_dim"])
        self.cache = {}  # layer -> (key buffer, value buffer), [1,KV,C,hd]
        lengths = {"prefill": self.prefill_len, "decode": 1}
        self.ids = {v: np.zeros((1, T), np.int64) for v, T in lengths.items()}
        self.positions = {v: np.zeros((1, T), np.int64) for v, T in lengths.items()}
        self.hidden = {v: np.zeros((1, T, spec["hidden_size"]), np.float32) for v, T in lengths.items()}
        for variant in lengths:
            self.requests[self.embed, variant].set_tensor("input_ids", _shared(self.ids[variant]))
            for chunk in self.decoders:
                req = self.requests[chunk["name"], variant]
                req.set_input_tensor(0, _shared(self.hidden[variant]))
                req.set_tensor("position_ids", _shared(self.positions[variant]))
                for layer in _layers(chunk):
                    if layer not in self.cache:
                        self.cache[layer] = (np.zeros(kv_shape, self.kv_dtype), np.zeros(kv_shape, self.kv_dtype))
                    for kind, past in zip(("key", "value"), self.cache[layer]):
                        req.set_tensor(f"past_{kind}.{layer}", _shared(past, kv_ov))
        self.head_in = np.zeros((1, 1, spec["hidden_size"]), np.float32)
        self.requests[self.head, "decode"].set_input_tensor(0, _shared(self.head_in))

    def reset(self):
        """Forget the sequence; stale cache slots are masked by position, so nothing needs clearing."""
        self.rewind(0)

    def rewind(self, position: int):
        """Keep only the first `position` cached tokens (a chat turn that shares a prefix with the cache)."""
        if not 0 <= position <= self.position:
            raise ValueError(f"cannot rewind to {position}: {self.position} tokens are cached")
        self.position = position

    def check_fits(self, new_tokens: int):
        if self.position + new_tokens > self.max_seq_len:
            raise ContextOverflow(
                f"{self.position} tokens in context + {new_tokens} new = {self.position + new_tokens} exceeds "
                f"this build's max_seq_len = {self.max_seq_len}; rebuild with a larger max_seq_len in the recipe "
                "(e.g. max_seq_len: 4096) and run snakemake again"
            )

    def _run(self, variant: str, ids: np.ndarray) -> np.ndarray:
        """Run `len(ids)` (≤ the variant's length) tokens at the current position; returns their hidden states."""
        n, pos = len(ids), self.position
        self.ids[variant][0, :n] = ids
        self.ids[variant][0, n:] = 0
        self.positions[variant][0] = np.arange(pos, pos + self.positions[variant].shape[1])
        hidden = self.hidden[variant]
        embed = self.requests[self.embed, variant]
        embed.infer()
        np.copyto(hidden, embed.get_output_tensor(0).data)
        for chunk in self.decoders:
            req = self.requests[chunk["name"], variant]
            req.infer()
            for layer in _layers(chunk):
                for kind, past in zip(("key", "value"), self.cache[layer]):
                    # bf16 rows come back as a float16 view of the same bits; the cache stores them as uint16
                    past[:, :, pos:pos + n] = req.get_tensor(f"{kind}.{layer}").data[:, :, :n].view(self.kv_dtype)
            np.copyto(hidden, req.get_output_tensor(0).data)
        self.position = pos + n
        return hidden[0, :n]

    def _logits(self, hidden_row: np.ndarray) -> np.ndarray:
        self.head_in[0, 0] = hidden_row
        head = self.requests[self.head, "decode"]
        head.infer()
        return head.get_output_tensor(0).data[0, 0]

    def forward(self, ids, all_logits: bool = False) -> np.ndarray:
        """Append tokens to the sequence. Returns the last token's logits [V], or every token's [n, V]."""
        ids = np.asarray(ids, dtype=np.int64)
        self.check_fits(len(ids))
        rows = []
        if len(ids) == 1:
            hidden = [self._run("decode", ids)]
        else:
            hidden = [self._run("prefill", ids[s:s + self.prefill_len]).copy()
                      for s in range(0, len(ids), self.prefill_len)]
        if not all_logits:
            return self._logits(hidden[-1][-1]).copy()
        for block in hidden:
            rows += [self._logits(row).copy() for row in block]
        return np.stack(rows)
