"""What the build leaves behind: IR shaped for its device, a complete manifest, and memory within what rules declare."""
from __future__ import annotations

import json
import os
import stat

import openvino as ov
import pytest

from nitro.artifacts import verify


def all_builds(tiny_builds, smollm2_builds):
    return {**tiny_builds, **smollm2_builds}


def test_ir_shapes_follow_the_build(tiny_builds, smollm2_builds):
    """Static builds (the NPU's, and any built with shapes: static): every IR input static. Dynamic builds (CPU
    by default): only the dynamic graph's token axis and the KV inputs' slot axis are open (a decode graph's one
    token is fixed), everything else is fixed."""
    core = ov.Core()
    checked = {"static": 0, "dynamic": 0}
    for root in all_builds(tiny_builds, smollm2_builds).values():
        shapes = json.loads((root / "manifest.json").read_text())["shapes"]
        for xml in root.glob("*/*/*.xml"):
            for port in core.read_model(xml).inputs:
                (variant, name), shape = port.get_any_name().split("/", 1), port.get_partial_shape()  # prefill/x
                open_axes = [i for i, d in enumerate(shape) if d.is_dynamic]
                past = name.startswith("past_")
                expected = [2] if past and shapes == "dynamic" else [1] if variant == "dynamic" else []
                assert open_axes == expected, f"{xml}: {name} {shape}"
            checked[shapes] += 1
    assert min(checked.values()) >= 4 * 2 * 5  # every stage's IR of every chunk, of both kinds of build


def test_manifest_is_complete(smollm2_builds):
    root = smollm2_builds["smollm2"]
    m = json.loads((root / "manifest.json").read_text())
    assert m["source"]["kind"] == "gguf" and m["family"] == "llama"
    assert m["spec"]["num_layers"] == 30 and m["spec"]["tie_word_embeddings"]
    assert [c["name"] for c in m["chunks"]] == ["embed", "decoder_0", "decoder_1", "decoder_2", "head"]
    assert [c["num_layers"] for c in m["chunks"] if c["kind"] == "decoder"] == [10, 10, 10]
    assert m["device"]["device"] == "CPU" and m["eos_token_ids"] == [2]
    for chunk in m["chunks"]:
        assert chunk["compression"]["mode"] == "INT8_SYM"
        for variant in chunk["variants"].values():
            assert variant["inputs"] and variant["outputs"] and variant["compile_s"] > 0
    assert verify(root, m["files"], remember=False) == []
    kinds = {rel.split("/")[0] for rel in m["files"]}
    assert kinds == {"compiled", "compressed", "tokenizer"} and "tokenizer/tokenizer.json" in m["files"]
    assert {"openvino", "nncf", "torch", "transformers"} <= {k for k, v in m["versions"].items() if v}
    steps = {(s["step"], s["chunk"]) for s in m["steps"]}
    assert ("source", None) in steps and ("compile", "head") in steps and len(steps) == 2 + 4 * 5
    assert m["smoke"]["load_s"] > 0 and m["smoke"]["peak_rss_mb"] > 0
    assert m["evaluation"]["tokens"] == 256 and m["evaluation"]["top1_agreement"] >= 0.9


def build_bytes(root) -> int:
    """What a build's folder holds on disk, but its copy of the checkpoint."""
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and f.relative_to(root).parts[0] != "source")


def test_a_static_build_stores_its_weights_once(smollm2_builds):
    """An NPU build's decoder chunks hold their prefill and decode graphs on one copy of the weights: one IR per
    chunk, and weightless compiled blobs that read the IR's .bin at load; the embedding and the head have one
    graph each, whose blob holds its weights. The build takes no more disk than 1.15x the CPU build with the same
    compression (one dynamic graph per chunk)."""
    npu, cpu = smollm2_builds["smollm2_npu"], smollm2_builds["smollm2_int4"]
    manifests = {root: json.loads((root / "manifest.json").read_text()) for root in (npu, cpu)}
    print(f"disk: NPU build {build_bytes(npu) / 2**20:.0f} MB, CPU build {build_bytes(cpu) / 2**20:.0f} MB; load "
          f"and smoke inference peak RSS: NPU {manifests[npu]['smoke']['peak_rss_mb']:.0f} MB, CPU "
          f"{manifests[cpu]['smoke']['peak_rss_mb']:.0f} MB")
    assert build_bytes(npu) <= 1.15 * build_bytes(cpu)
    for chunk in manifests[npu]["chunks"]:
        expected = {"embed": ["prefill"], "decoder": ["prefill", "decode"], "head": ["decode"]}[chunk["kind"]]
        assert sorted(chunk["variants"]) == sorted(expected)
        if chunk["kind"] != "decoder":
            assert chunk["weights"] is None
            continue
        assert chunk["weights"] == chunk["xml"].replace(".xml", ".bin")
        blobs = sum((npu / v["blob"]).stat().st_size for v in chunk["variants"].values())
        assert blobs < 0.25 * (npu / chunk["weights"]).stat().st_size, chunk["name"]  # graphs, no weights


def test_outputs_have_the_modes_of_ordinary_files(tiny_builds, smollm2_builds):
    """Atomic writes go through private scratch files (0600) and folders (0700); what they become must have the
    modes open() and mkdir() give under the umask, so a model one user builds can be loaded by another. (Files the
    source step hard-links from an HF folder share the checkpoint's inode, and keep its mode.)"""
    umask = os.umask(0)
    os.umask(umask)
    for root in all_builds(tiny_builds, smollm2_builds).values():
        for path in [root, *root.rglob("*")]:
            if path.is_file() and path.stat().st_nlink > 1:
                continue
            expected = (0o777 if path.is_dir() else 0o666) & ~umask
            assert stat.S_IMODE(path.stat().st_mode) == expected, f"{path}: {oct(path.stat().st_mode)}"


@pytest.mark.parametrize("build", ["smollm2", "smollm2_decode_graph", "smollm2_fp32", "smollm2_int4_aware"])
def test_declared_memory_bounds_measured_peak(smollm2_builds, build):
    root = smollm2_builds[build]
    logs = [json.loads(p.read_text()) for p in sorted((root / "logs").rglob("*.json"))]
    steps = json.loads((root / "manifest.json").read_text())["steps"]
    assert len(logs) == len(steps) + 2  # the assembly and the report write theirs after the manifest
    # source, held-out tokens, 4 steps of 5 chunks; with data-aware decoders the calibration tokens through the
    # embedding and the first two decoder chunks
    assert len(steps) == 2 + 4 * 5 + (1 + 3 if build == "smollm2_int4_aware" else 0)
    for log in logs:
        print(f"{log['step']:9} {str(log['chunk']):10} peak {log['peak_rss_mb']:7.0f} MB  declared {log['mem_mb']} MB")
        assert log["peak_rss_mb"] <= log["mem_mb"], log


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_export_reads_tensors_as_safetensors_stores_them(tmp_path, dtype):
    """The export's own reader (no memory map) gives the tensors safetensors' loader gives, bit for bit."""
    import torch
    from safetensors.torch import load_file, save_file

    from nitro.build.export import read_safetensors

    generator = torch.Generator().manual_seed(0)
    tensors = {"a.weight": torch.randn(7, 5, generator=generator), "b.bias": torch.randn(3, generator=generator),
               "c.weight": torch.randn(2, 4, 6, generator=generator)}
    path = tmp_path / "w.safetensors"
    save_file({k: v.to(getattr(torch, dtype)) for k, v in tensors.items()}, str(path))
    expected = load_file(str(path))
    got = read_safetensors(path, ["c.weight", "a.weight"])
    assert set(got) == {"c.weight", "a.weight"}
    for name, tensor in got.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name])
