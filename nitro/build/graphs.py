"""A chunk's graph variants (prefill and decode, or one dynamic graph) as one OpenVINO model, so that the weights
they share are stored once: export merges them, compression sees each weight once, compile splits them again.

In the merged model every input, output and operation name is prefixed with its variant (`prefill/x`), and a
constant the variants hold alike is one node feeding both. `ov.save_model` writes each constant once, and NNCF
compresses a constant feeding several operations once, so the chunk's .bin holds one copy of its weights through
export and compression (a static SmolLM2 decoder chunk: 18 MB of INT4 weights, 36 MB as two IRs).
"""
from __future__ import annotations

import hashlib

SEPARATOR = "/"


def merge_graphs(graphs: dict):
    """One ov.Model holding every variant's graph {name: ov.Model}, with equal constants made one node."""
    import openvino as ov

    seen = {}  # (type, shape, sha256 of the bytes) -> the constant's output kept
    results, parameters = [], []
    for variant, model in graphs.items():
        prefix = variant + SEPARATOR
        for port in list(model.inputs) + list(model.outputs):
            port.get_tensor().set_names({prefix + name for name in port.get_names()})
        for op in model.get_ordered_ops():
            op.set_friendly_name(prefix + op.get_friendly_name())
            if op.get_type_name() != "Constant":
                continue
            data = op.get_data()
            key = (op.get_element_type().get_type_name(), tuple(data.shape), hashlib.sha256(data).digest())
            if key in seen:
                op.output(0).replace(seen[key])
            else:
                seen[key] = op.output(0)
        results += model.get_results()
        parameters += model.get_parameters()
    return ov.Model(results, parameters, "chunk")


def graph_of(merged, variant: str):
    """The variant's graph of a merged model (as read from its IR), with its own input and output names."""
    import openvino as ov

    prefix = variant + SEPARATOR

    def mine(port):
        return port.get_any_name().startswith(prefix)

    results = [r for r, port in zip(merged.get_results(), merged.outputs) if mine(port)]
    parameters = [p for p, port in zip(merged.get_parameters(), merged.inputs) if mine(port)]
    model = ov.Model(results, parameters, variant)
    for port in list(model.inputs) + list(model.outputs):
        port.get_tensor().set_names({name[len(prefix):] for name in port.get_names()})
    return model
