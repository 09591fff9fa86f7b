"""Data-aware compression through the real workflow: calibration tokens from the text's end, the activations
entering each chunk made chunk by chunk, NNCF's AWQ, scale estimation and GPTQ per chunk, and the build report."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import yaml
from test_incremental import changed_recipe, planned_jobs

from conftest import build_dir, tiny_recipe
from nitro.runtime import Model
from nitro.testing import snakemake

CALIBRATION = {"samples": 6, "tokens": 16}
COMPRESSION = {"mode": "INT8_SYM", "chunks": {
    "decoders": {"mode": "INT4_SYM", "group_size": 16, "awq": True, "scale_estimation": True},
    "head": {"mode": "INT4_SYM", "group_size": 16, "gptq": True},
}}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_sources):
    """A tiny Llama (embed, decoder_0 of 3 layers, decoder_1 of 2, head) with data-aware INT4 decoders and head,
    with dynamic graphs and with static ones, in float32."""
    work = build_dir(tmp_path_factory, "calibrated")
    recipe = {"models": {
        shapes: tiny_recipe(tiny_sources["llama"], compression=COMPRESSION, calibration=CALIBRATION,
                            inference_precision="f32", shapes=shapes)
        for shapes in ("dynamic", "static")}}
    snakemake(work, recipe)
    return work, recipe


def manifest(work, name="dynamic") -> dict:
    return json.loads((work / "results" / name / "manifest.json").read_text())


def test_a_data_aware_build_records_its_calibration_and_evaluation(calibrated):
    work, _ = calibrated
    for name in ("dynamic", "static"):
        m = manifest(work, name)
        assert m["calibration"] == {"text": "python-docs", **CALIBRATION, "chunks": ["decoder_0", "decoder_1", "head"]}
        compression = {c["name"]: c["compression"] for c in m["chunks"]}
        assert compression["decoder_1"] == COMPRESSION["chunks"]["decoders"]
        assert compression["head"] == COMPRESSION["chunks"]["head"] and compression["embed"] == {"mode": "INT8_SYM"}
        e = m["evaluation"]
        assert e["tokens"] == 64 and np.isfinite([e["perplexity"], e["kl_divergence"]]).all()
        assert 0 < e["top1_agreement"] < 1 and e["kl_divergence"] > 0  # 4-bit weights cost something
        steps = {(s["step"], s["chunk"]) for s in m["steps"]}
        assert {("calibration", None), ("activations", "embed"), ("activations", "decoder_0"),
                ("activations", "decoder_1")} <= steps
        assert ("activations", "head") not in steps  # no chunk after the head reads its output


def test_calibration_tokens_come_from_the_texts_end_apart_from_the_held_out_ones(calibrated):
    work, _ = calibrated
    root = work / "results/dynamic"
    calibration, heldout = np.load(root / "calibration/tokens.npy"), np.load(root / "reference/tokens.npy")
    assert calibration.shape == (6, 16) and heldout.shape == (1, 64)
    activations = np.load(root / "calibration/decoder_1.npy")
    assert activations.shape == (6, 16, 64) and np.isfinite(activations).all()
    # the held-out run of tokens appears nowhere in the calibration samples
    text = " ".join(map(str, calibration.ravel()))
    assert " ".join(map(str, heldout[0, :16])) not in text


def test_a_static_data_aware_chunk_gives_its_decode_and_prefill_graphs_the_same_weights(calibrated):
    """NNCF learns on the prefill graph; the decode graph is the compressed prefill graph reshaped, so feeding the
    tokens one at a time (decode graph) gives the logits feeding them at once (prefill graph) gives."""
    work, _ = calibrated
    model = Model(work / "results/static")
    ids = np.load(work / "results/static/reference/tokens.npy")[0, :12].tolist()
    at_once = model.forward(ids)
    model.reset()
    for token in ids[:-1]:
        model.forward([token])
    one_by_one = model.forward(ids[-1:])
    assert np.abs(at_once - one_by_one).max() < 1e-4 * np.abs(at_once).max()
    weights = work / "results/static/compressed/decoder_0/model.bin"
    dynamic = work / "results/dynamic/compressed/decoder_0/model.bin"
    assert weights.stat().st_size < 1.05 * dynamic.stat().st_size  # one copy for both graphs


def test_a_calibration_change_reruns_only_what_reads_it(calibrated):
    work, recipe = calibrated
    only = {"models": {"dynamic": recipe["models"]["dynamic"]}}
    # one chunk's data-aware setting: that chunk alone
    off = changed_recipe(only, "dynamic", compression={
        **COMPRESSION, "chunks": {**COMPRESSION["chunks"], "decoder_0": {"awq": False}}})
    assert planned_jobs(snakemake(work, off, "--dry-run")) == {
        "compress_chunk": 1, "compile_chunk": 1, "assemble": 1, "report": 1, "all": 1}
    # the head data-free: decoder_1's activations are no longer read, nothing else changes
    head_free = changed_recipe(only, "dynamic", compression={
        **COMPRESSION, "chunks": {**COMPRESSION["chunks"], "head": {"mode": "INT4_SYM", "group_size": 16}}})
    assert planned_jobs(snakemake(work, head_free, "--dry-run")) == {
        "compress_chunk": 1, "compile_chunk": 1, "assemble": 1, "report": 1, "all": 1}
    # more samples: new calibration tokens and activations, every data-aware chunk; and the held-out tokens,
    # which must keep clear of the calibration's at the same text's end
    more = changed_recipe(only, "dynamic", calibration={**CALIBRATION, "samples": 8})
    assert planned_jobs(snakemake(work, more, "--dry-run")) == {
        "calibration_tokens": 1, "activations_chunk": 3, "compress_chunk": 3, "compile_chunk": 3,
        "heldout_tokens": 1, "reference_chunk": 4, "assemble": 1, "report": 1, "all": 1}


def test_the_report_holds_the_layout_the_figures_and_a_chart(calibrated, tmp_path):
    work, recipe = calibrated
    report = tmp_path / "report.html"
    snakemake(work, recipe, "--report", str(report))
    embedded = [base64.b64decode(data).decode() for data in
                re.findall(r"data:text/html;[^,]*base64,([A-Za-z0-9+/=]+)", report.read_text())]
    pages = [page for page in embedded if "held-out tokens" in page]
    assert len(pages) == 2, f"{len(embedded)} embedded pages"
    m = manifest(work)
    page = next(p for p in pages if "dynamic graphs" in p)
    for figure in (m["evaluation"]["perplexity"], m["evaluation"]["reference_perplexity"],
                   f"{m['evaluation']['top1_agreement']:.1%}", "awq True", "decoder_1", "activations"):
        assert str(figure) in page, figure
    assert "<svg" in page


def test_data_aware_options_need_a_four_bit_mode_and_a_matmul(tmp_path, tiny_sources):
    from test_recipes import fails_with

    source = tiny_sources["llama"]
    fails_with(tmp_path / "a", tiny_recipe(source, compression={"mode": "INT8_SYM", "awq": True}),
               "models.bad.compression", "awq applies to 4-bit modes only", "not to mode INT8_SYM")
    fails_with(tmp_path / "b", tiny_recipe(source, compression={"mode": "INT4_SYM", "group_size": 16, "chunks": {
        "embed": {"scale_estimation": True}}}), "chunk embed is a table lookup", "decoder chunks and the head")
    fails_with(tmp_path / "c", tiny_recipe(source, calibration={"text": str(tmp_path / "missing.txt")}),
               "models.bad.calibration.text", "missing.txt", "no such file")


def test_data_aware_int4_keeps_more_of_smollm2_than_data_free(smollm2_builds):
    aware, free = (manifest(smollm2_builds[name].parents[1], name)["evaluation"]
                   for name in ("smollm2_int4_aware", "smollm2_int4"))
    print(f"SmolLM2 INT4 decoders: data-free top-1 {free['top1_agreement']:.3f} KL {free['kl_divergence']}; "
          f"AWQ + scale estimation top-1 {aware['top1_agreement']:.3f} KL {aware['kl_divergence']}")
    assert aware["top1_agreement"] > free["top1_agreement"] and aware["kl_divergence"] < free["kl_divergence"]
    assert aware["perplexity"] < free["perplexity"]


def test_held_out_tokens_that_would_reach_the_calibration_samples_fail_the_build(tmp_path, tiny_sources):
    """Held-out tokens come from the text's start, calibration samples from its end: a text too short for both
    fails the held-out step, which says why."""
    from transformers import AutoTokenizer

    from nitro.build.tokens import read_text

    text = tmp_path / "short.txt"
    text.write_text(read_text("python-docs")[:3000])
    length = len(AutoTokenizer.from_pretrained(str(tiny_sources["llama"]))(text.read_text())["input_ids"])
    samples = length // 16  # the calibration alone fits, with the 64 held-out tokens it does not
    recipe = tiny_recipe(tiny_sources["llama"], compression=COMPRESSION, evaluate={"text": str(text), "tokens": 64},
                         calibration={"text": str(text), "samples": samples, "tokens": 16})
    result = snakemake(tmp_path / "w", {"models": {"m": recipe}}, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"heldout: text {str(text)!r} is")]
    assert lines, result.stderr[-3000:]
    assert f"the calibration samples take {16 * samples} at its end" in lines[0]
    assert "give a longer text or fewer tokens" in lines[0]
    assert not (tmp_path / "w/results/m/reference/tokens.npy").exists()
