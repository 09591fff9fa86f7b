"""Every build is evaluated on held-out text against its uncompressed model: the reference is transformers'
float32, the figures land in the manifest, `nitro info` prints them, and a floor the recipe sets fails the build."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_parity import FAMILIES, hf_logits, hf_model

from conftest import nitro, tiny_recipe
from nitro.build.evaluate import log_probs
from nitro.testing import snakemake


def evaluation(root) -> dict:
    return json.loads((root / "manifest.json").read_text())["evaluation"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_chunk_by_chunk_reference_is_transformers_float32(family, tiny_builds, tiny_sources):
    """The held-out tokens through the uncompressed chunks one at a time (a file between chunks) give the
    log-probabilities transformers gives on the whole model, static graphs (prefill calls) as dynamic ones."""
    hf = hf_model(tiny_sources[family])
    for build in (f"{family}_f32", f"{family}_f32_static"):
        reference = tiny_builds[build] / "reference"
        ids = np.load(reference / "tokens.npy")[0]  # one sample
        assert len(ids) == 64
        error = np.abs(np.load(reference / "head.npy")[0] - log_probs(hf_logits(hf, ids.tolist()))).max()
        print(f"{build}: max |log p - transformers'| = {error:.1e}")
        assert error < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_an_uncompressed_float32_build_agrees_with_its_reference(family, tiny_builds):
    for build in (f"{family}_f32", f"{family}_f32_static"):
        e = evaluation(tiny_builds[build])
        assert e["tokens"] == 64 and e["text"] == "python-docs"
        assert e["top1_agreement"] == 1.0 and abs(e["kl_divergence"]) < 1e-6
        assert e["perplexity"] == pytest.approx(e["reference_perplexity"], rel=1e-4)


def test_compression_costs_show_in_the_evaluation(smollm2_builds):
    """SmolLM2 on 256 held-out tokens: uncompressed f32 is the reference; INT8 costs little, INT4 more."""
    figures = {name: evaluation(root) for name, root in smollm2_builds.items()}
    for name, e in figures.items():
        print(f"{name:14} perplexity {e['perplexity']:8.3f} (reference {e['reference_perplexity']:.3f}) top-1 "
              f"{e['top1_agreement']:.3f} KL {e['kl_divergence']:.2e}")
    assert figures["smollm2_fp32"]["top1_agreement"] == 1.0 and abs(figures["smollm2_fp32"]["kl_divergence"]) < 1e-5
    int8, int4 = figures["smollm2"], figures["smollm2_int4"]
    assert int8["top1_agreement"] >= 0.9 and int8["kl_divergence"] < int4["kl_divergence"]
    assert int4["top1_agreement"] < int8["top1_agreement"] and int4["perplexity"] > int8["perplexity"]


def test_a_missed_floor_fails_the_build_and_writes_no_manifest(tmp_path, tiny_sources):
    recipe = tiny_recipe(tiny_sources["qwen2"], compression={"mode": "INT8_SYM"}, evaluate={"tokens": 64, "max_kl": 0})
    result = snakemake(tmp_path, {"models": {"m": recipe}}, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("assemble: KL divergence")]
    assert lines, result.stderr[-3000:]
    print(lines[0])
    assert "is above evaluate.max_kl = 0" in lines[0] and "lower the floor in the recipe" in lines[0]
    assert not (tmp_path / "results/m/manifest.json").exists()


def test_nitro_info_prints_the_evaluation(tiny_builds):
    root = tiny_builds["llama_default"]
    result = nitro("info", root)
    assert result.returncode == 0, result.stderr
    e = evaluation(root)
    print(result.stdout)
    assert f"top-1 agreement {e['top1_agreement']:.1%}" in result.stdout
    assert f"perplexity {e['perplexity']}" in result.stdout and "reference  head" in result.stdout


def test_nitro_info_into_a_closed_pipe_stops_without_a_traceback(tiny_builds):
    """As `nitro info ROOT | head -1` when head has gone: a pipe whose reading end is closed before it writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    result = subprocess.run([sys.executable, "-m", "nitro.cli", "info", str(tiny_builds["llama_default"])],
                            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=600)
    os.close(write_end)
    assert result.returncode == 1 and result.stderr == "", result.stderr
