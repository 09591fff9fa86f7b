"""A token set through one chunk's exported (uncompressed) graph, on the CPU in float32, chunk after chunk, so that a
step holds one chunk's weights and the activations between chunks ([N,T,D] for N samples of T tokens) go through
files. For the held-out tokens this is the reference a build is evaluated against (the head's output kept as
log-probabilities [N,T,V]); for the calibration tokens, the activations entering each chunk that data-aware
compression learns from. Every chunk's input comes from the uncompressed chunks before it, so a chunk's calibration
does not depend on how the others are compressed, and changing one chunk's compression rebuilds that chunk only.

NITRO's exported graphs give transformers' float32 logits to ~1e-6 (tests/test_parity.py), so this is the
transformers reference without the whole model in memory at float precision (32 GB for an 8B model).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..artifacts import DECODE, DYNAMIC, KV, META, POSITION_IDS, PREFILL, is_past, past_name, write_array
from .evaluate import log_probs
from .graphs import graph_of

F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the reference computes in float32 on any CPU


def run(args):
    """--input is the chunk's export folder, --activations what the chunk before it gave (the token ids for
    the embedding)."""
    write_array(args.out, reference_output(args.input, np.load(args.activations)))


def reference_output(exported: Path, samples: np.ndarray) -> np.ndarray:
    """The chunk's output for every sample, each a sequence of its own: ids [N,T] -> hidden [N,T,D] (embedding),
    hidden [N,T,D] -> hidden [N,T,D] (decoders), hidden [N,T,D] -> log-probabilities [N,T,V] (head)."""
    import openvino as ov

    meta = json.loads((exported / META).read_text())
    chunk, variants = meta["chunk"], meta["variants"]
    variant = DECODE if chunk["kind"] == "head" else PREFILL if PREFILL in variants else DYNAMIC
    core = ov.Core()
    graph = graph_of(core.read_model(exported / meta["xml"]), variant)
    if chunk["kind"] == "head":
        return _head_log_probs(core, graph, samples)
    request = core.compile_model(graph, "CPU", F32).create_infer_request()
    return np.stack([_sequence_output(request, chunk, x) for x in samples])


def _head_log_probs(core, graph, samples: np.ndarray) -> np.ndarray:
    """The head's log-probabilities [N,T,V] for hidden states [N,T,D], one block of the vocabulary table at a time
    (nitro.models VocabTable) where the head's output is the blocks' logits joined: each block is compiled on its
    own, with the norm before it, so the step holds one block's float32 weights, not the whole table's (the
    Llama-3.2-1B shape's head: 2345 MB peak compiled whole, 1450 MB a block at a time). A head that transforms
    the joined logits (Gemma 2's soft cap) is compiled whole."""
    import openvino as ov

    logits = graph.output(0).get_node().input_value(0)
    joined = logits.get_node()
    blocks = ([joined.input_value(i) for i in range(joined.get_input_size())]
              if joined.get_type_name() == "Concat" else [logits])
    out = np.empty((*samples.shape[:2], graph.output(0).get_partial_shape()[-1].get_length()), np.float32)
    first = 0
    for block in blocks:
        request = core.compile_model(ov.Model([ov.opset16.result(block)], graph.get_parameters()), "CPU",
                                     F32).create_infer_request()
        width = block.get_partial_shape()[-1].get_length()
        for n, x in enumerate(samples):
            for t, row in enumerate(x):
                out[n, t, first:first + width] = _infer(request, {0: row[None, None]})[0, 0]
        first += width
        del request
    for rows in out:
        for row in rows:
            row[...] = log_probs(row)
    return out


def _sequence_output(request, chunk: dict, x: np.ndarray) -> np.ndarray:
    if chunk["kind"] == "embed":
        return np.concatenate([_infer(request, {0: block[None]})[0, :n] for block, n, _ in _calls(request, x)])
    return _run_decoder(request, chunk, x.astype(np.float32))


def _infer(request, inputs: dict) -> np.ndarray:
    """One call's first output (hidden states, or the head's logits), copied out of the request's buffer, which
    the next call overwrites."""
    request.infer(inputs)
    return request.get_output_tensor(0).data.copy()


def _calls(request, x: np.ndarray):
    """The calls that take the sequence `x` through the graph: (input block padded to the graph's token count,
    tokens of it that are real, first position). A static graph takes its own token count a call; a dynamic one
    the whole sequence at once."""
    axis = request.model_inputs[0].get_partial_shape()[1]
    size = axis.get_length() if axis.is_static else len(x)
    for start in range(0, len(x), size):
        block = x[start:start + size]
        n = len(block)
        yield np.concatenate([block, np.zeros((size - n, *block.shape[1:]), block.dtype)]), n, start


def _run_decoder(request, chunk: dict, x: np.ndarray) -> np.ndarray:
    """Decoder layers over the sequence, call after call, each call's keys and values cached for the next (past
    slot s is valid below the call's first position, so unwritten slots are masked)."""
    import openvino as ov

    pasts = {p.get_any_name(): p for p in request.model_inputs if is_past(p.get_any_name())}
    slots_axis = next(iter(pasts.values())).get_partial_shape()[2]
    slots = slots_axis.get_length() if slots_axis.is_static else len(x)
    cache = {}
    for name, port in pasts.items():
        shape = [d.get_length() if d.is_static else slots for d in port.get_partial_shape()]
        cache[name] = ov.Tensor(port.get_element_type(), shape)
        cache[name].data[...] = 0
        request.set_tensor(name, cache[name])
    out = []
    for block, n, start in _calls(request, x):
        positions = np.arange(start, start + len(block), dtype=np.int64)[None]
        out.append(_infer(request, {0: block[None], POSITION_IDS: positions})[0, :n])
        kv = request.get_tensor(KV).data
        for j in range(chunk["num_layers"]):
            for row, kind in ((2 * j, "key"), (2 * j + 1, "value")):
                cache[past_name(kind, chunk["first_layer"] + j)].data[0, :, start:start + n] = kv[row, :, :n]
    return np.concatenate(out)
