"""Stage 2: export one chunk to OpenVINO IR: one graph per variant, as the recipe's `graphs` parameter lists them,
saved as one model whose variants share their weights (nitro/build/graphs.py).

With static shapes (what an NPU needs): `prefill` takes `prefill_len` tokens at once, `decode` one token, and
decoder chunks read a KV cache of `max_seq_len` slots. With dynamic shapes (CPU, GPU): one `dynamic` graph takes
any number of tokens and cache slots, so the device holds each chunk's weights once and attention reads only the
cache the runtime has allocated so far; with the recipe's `decode_graph`, decoder chunks also have a `decode`
graph of one token over any number of slots. The head exists only as `decode`: the runtime feeds it the one row
whose logits it needs.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import (CHUNK_XML, HIDDEN, INPUT_IDS, KV, LOGITS, META, POSITION_IDS, TENSOR_INDEX, atomic_dir,
                         is_past, past_name, with_tokens, write_json)
from ..models import ModelSpec, modules_for, spec_for
from .graphs import merge_graphs
from .source import SAFETENSORS_DTYPES, safetensors_header

# Sizes a dynamic graph is traced at before its token and slot axes are opened.
TRACE_TOKENS, TRACE_SLOTS = 3, 5

# Constants smaller than this stay float32 (norm scales, biases, masks): narrowing them saves nothing.
NARROW_MIN_ELEMENTS = 4096


def read_safetensors(path: Path, names: list[str]) -> dict:
    """The named tensors of a safetensors file, read into memory of their own. Not memory-mapped (as safetensors'
    own loader does): mapped pages that were read count in the step's resident memory next to the float32 copy
    the module keeps, doubling the peak (a 10-layer Llama-3.2-1B chunk: 4.9 GB for 2.4 GB of weights)."""
    import torch

    tensors = {}
    with open(path, "rb") as f:
        header, data_start = safetensors_header(f)
        for name in names:
            entry = header[name]
            if entry["dtype"] not in SAFETENSORS_DTYPES:
                raise ValueError(f"{path}: tensor {name} has dtype {entry['dtype']}; expected a float checkpoint")
            begin, end = entry["data_offsets"]
            raw = torch.empty(end - begin, dtype=torch.uint8)
            f.seek(data_start + begin)
            f.readinto(raw.numpy())
            tensors[name] = raw.view(getattr(torch, SAFETENSORS_DTYPES[entry["dtype"]])).reshape(entry["shape"])
    return tensors


def _load_module(spec: ModelSpec, chunk: dict, source: Path, f16_safe: bool):
    """Build the chunk's module and fill it with only this chunk's tensors from the safetensors files."""
    import torch

    family = modules_for(spec)
    with torch.device("meta"):
        if chunk["kind"] == "embed":
            module = family.Embedding(spec)
        elif chunk["kind"] == "head":
            module = family.Head(spec, f16_safe)
        else:
            module = family.DecoderChunk(spec, chunk["first_layer"], chunk["num_layers"], f16_safe)
    index = json.loads((source / TENSOR_INDEX).read_text())
    wanted = module.weight_names()  # local name -> the HF tensors stacked along rows to make it
    tensors = {}
    for file in sorted({index[hf] for parts in wanted.values() for hf in parts}):
        names = [hf for parts in wanted.values() for hf in parts if index[hf] == file]
        tensors.update({hf: t.float() for hf, t in read_safetensors(source / file, names).items()})
    state = {local: torch.cat([tensors.pop(hf) for hf in parts]) if len(parts) > 1 else tensors.pop(parts[0])
             for local, parts in wanted.items()}
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


def _example(spec: ModelSpec, chunk: dict, tokens: int, slots: int):
    """(input names, example tensors, output names) of one variant: `tokens` new tokens over `slots` cache slots."""
    import torch

    if chunk["kind"] == "embed":
        return [INPUT_IDS], [torch.zeros(1, tokens, dtype=torch.int64)], [HIDDEN]
    x = torch.zeros(1, tokens, spec.hidden_size)
    if chunk["kind"] == "head":
        return [HIDDEN], [x], [LOGITS]
    layers = range(chunk["first_layer"], chunk["first_layer"] + chunk["num_layers"])
    names = [HIDDEN, POSITION_IDS] + [past_name(kv, i) for i in layers for kv in ("key", "value")]
    past = torch.zeros(1, spec.num_kv_heads, slots, spec.head_dim)
    tensors = [x, torch.arange(tokens)[None]] + [past] * (2 * chunk["num_layers"])
    return names, tensors, [HIDDEN, KV]


def describe(model) -> dict:
    """Input/output names, static shapes and element types of an ov.Model or CompiledModel."""
    def ports(items):
        return {p.get_any_name(): {"shape": [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()],
                                   "type": p.get_element_type().get_type_name()} for p in items}
    return {"inputs": ports(model.inputs), "outputs": ports(model.outputs)}


def run(args):
    export_chunk(args.input, args.params, args.out)


def export_chunk(source: Path, params: dict, out: Path) -> dict:
    import openvino as ov
    import torch

    spec = spec_for(json.loads((source / "config.json").read_text()))
    chunk = params["chunk"]
    module = _load_module(spec, chunk, source, params.get("f16_safe", False))
    graphs, variants = {}, {}
    for variant, sizes in params["graphs"].items():
        # traced at small sizes where an axis is open (None), which is then opened
        tokens, slots = sizes["tokens"], sizes.get("slots")
        in_names, example, out_names = _example(spec, chunk, tokens or TRACE_TOKENS, slots or TRACE_SLOTS)
        with torch.no_grad():
            model = ov.convert_model(module, example_input=tuple(example))
        model.reshape({i: with_tokens(name, t.shape, -1) if (slots if is_past(name) else tokens) is None
                       else list(t.shape) for i, (name, t) in enumerate(zip(in_names, example))})
        for port, name in zip(model.inputs, in_names):
            port.get_tensor().set_names({name})
        for port, name in zip(model.outputs, out_names):
            port.get_tensor().set_names({name})
        if "kv_precision" in params:
            model = _set_kv_type(model, getattr(ov.Type, params["kv_precision"]))
        variants[variant] = describe(model)
        graphs[variant] = model
    with atomic_dir(out) as scratch:
        ov.save_model(narrow_weights(merge_graphs(graphs)), scratch / CHUNK_XML, compress_to_fp16=False)
        meta = {"chunk": chunk, "xml": CHUNK_XML, "variants": variants}
        if "kv_precision" in params:  # decoder chunks: the cache's element type, which the manifest records
            meta["kv_precision"] = params["kv_precision"]
        write_json(scratch / META, meta)
    return meta


def narrow_weights(model):
    """Store each weight in the narrowest float type that holds every value of it exactly (bf16, else f16),
    behind a Convert to float32: the module computes in float32, so a bf16 or f16 checkpoint's weights are
    traced as float32, and saved so they would take twice their size (an 8B bf16 model: 32 GB instead of 16).
    Lossless by construction: a weight with one value the narrow type does not hold stays float32."""
    import numpy as np
    import openvino as ov

    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_element_type() != ov.Type.f32:
            continue
        data = op.get_data()
        if data.size < NARROW_MIN_ELEMENTS:
            continue
        bits = data.view(np.uint32)
        if not (bits & 0xFFFF).any():  # bf16 is float32's upper half
            narrow = ov.Tensor(ov.Type.bf16, list(data.shape))
            narrow.data[...] = (bits >> 16).astype(np.uint16).view(np.float16)  # bf16 bits, seen as f16
        elif np.array_equal(data.astype(np.float16).astype(np.float32), data):
            narrow = ov.Tensor(data.astype(np.float16))
        else:
            continue
        op.output(0).replace(ov.opset16.convert(ov.opset16.constant(narrow), ov.Type.f32).output(0))
    return model


def _set_kv_type(model, kv_type):
    """KV tensors cross the graph boundary in the cache's precision, so the host keeps no converted copy."""
    import openvino as ov

    if kv_type == ov.Type.f32:
        return model
    ppp = ov.preprocess.PrePostProcessor(model)
    for port in model.inputs:
        if is_past(port.get_any_name()):
            ppp.input(port.get_any_name()).tensor().set_element_type(kv_type)
    ppp.output(KV).tensor().set_element_type(kv_type)
    return ppp.build()
