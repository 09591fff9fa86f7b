"""Stage 3: compress one chunk's weights with NNCF: its IR holds every variant on one copy of them. Data-free by
default; with a data-aware setting (AWQ, scale estimation, GPTQ, a data-based sensitivity metric) NNCF learns from
the calibration activations entering the chunk (nitro/build/reference.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..artifacts import HIDDEN, META, POSITION_IDS, atomic_dir, is_past, with_tokens, write_json
from .graphs import graph_of, merge_graphs


def _nncf():
    """NNCF, imported without torch unless torch is loaded already. NNCF loads its torch backend whenever torch
    is installed, even to compress an OpenVINO model; in the compress step's own process that costs ~3 s and
    ~190 MB of peak memory for nothing (the compressed IR is byte-identical without it)."""
    import sys

    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError, which NNCF takes as "no torch"
    import nncf

    return nncf


def compression_kwargs(settings: dict) -> dict:
    """NNCF arguments for a chunk's compression settings (the recipe gives group size, ratio and the data-aware
    options to 4-bit modes only). A 4-bit mode applies to every layer of the chunk (`all_layers`): NNCF would
    otherwise keep a model's last matmul, which it takes for the LM head, at 8 bits, and in a chunk that is the
    last decoder layer's down projection, so the layout of chunks would change the model (and a chunk's graphs
    would not agree on which is last). The head is a chunk of its own, compressed as the recipe says."""
    nncf = _nncf()
    kwargs = {**settings, "mode": nncf.CompressWeightsMode[settings["mode"]]}
    if "sensitivity_metric" in settings:
        kwargs["sensitivity_metric"] = nncf.SensitivityMetric(settings["sensitivity_metric"])
    if "group_size" in settings:
        kwargs["all_layers"] = True
    return kwargs


def run(args):
    compress_chunk(args.input, args.params, args.out, args.activations)


def compress_chunk(exported: Path, settings: dict, out: Path, activations: Path | None = None) -> dict:
    """--activations (data-aware settings only): the calibration samples entering the chunk, [N,T,D]."""
    import numpy as np
    import openvino as ov

    meta = json.loads((exported / META).read_text())
    with atomic_dir(out) as scratch:
        xml = meta["xml"]
        if settings["mode"] == "none":
            for suffix in (".xml", ".bin"):
                shutil.copy2(exported / xml.replace(".xml", suffix), scratch / xml.replace(".xml", suffix))
        else:
            model = ov.Core().read_model(exported / xml)
            if activations is None:
                model = _nncf().compress_weights(model, **compression_kwargs(settings))
            else:
                model = compress_with_data(model, meta["variants"], settings, np.load(activations))
            ov.save_model(model, scratch / xml, compress_to_fp16=False)
            del model
        meta["compression"] = settings
        write_json(scratch / META, meta)
    return meta


def compress_with_data(merged, variants: dict, settings: dict, samples):
    """Data-aware compression of a chunk's merged IR. NNCF learns on one graph: the chunk's first variant, taken
    apart from the others and shaped for the calibration samples [N,T,D]. Every variant is then that compressed
    graph shaped back to its own inputs, so the variants share the compressed weights, and the scales AWQ moves
    into the activations, by construction. (On the merged IR NNCF would take a shared weight's statistics from
    whichever variant's matmul it meets first, and add AWQ's scales to that variant's graph alone.)"""
    import numpy as np
    import openvino as ov

    count, tokens = samples.shape[:2]
    first = next(iter(variants))
    graph = graph_of(merged, first).clone()
    inputs = variants[first]["inputs"]
    graph.reshape({name: with_tokens(name, port["shape"], tokens) for name, port in inputs.items()})
    fixed = {}  # what every sample is given besides its hidden states: each is a sequence of its own
    for port in graph.inputs:
        name = port.get_any_name()
        if is_past(name):  # a cache of `tokens` slots, all masked at positions from 0
            fixed[name] = ov.Tensor(port.get_element_type(), port.get_shape())
            fixed[name].data[...] = 0
        elif name == POSITION_IDS:
            fixed[name] = np.arange(tokens)[None]
    dataset = _nncf().Dataset(samples, lambda x: {HIDDEN: x[None], **fixed})
    compressed = _nncf().compress_weights(graph, **compression_kwargs(settings), dataset=dataset,
                                          subset_size=count)
    graphs = {}
    for variant, ports in variants.items():
        graph = compressed.clone()
        graph.reshape({name: port["shape"] for name, port in ports["inputs"].items()})
        for port in [*graph.inputs, *graph.outputs]:  # the names the chunk's contract gives, not NNCF's extras
            port.get_tensor().set_names(port.get_names() & (ports["inputs"].keys() | ports["outputs"].keys()))
        graphs[variant] = graph
    return merge_graphs(graphs)
