"""Bad input, as a user meets it: each case through the real CLI or workflow gives one line naming what is wrong
and what fixes it, exit status 1, no traceback, and no half-built artifact."""
from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import nitro, one_line_error, tiny_recipe
from nitro import GenerationConfig
from nitro.testing import snakemake


@pytest.mark.parametrize("option, value, message", [
    ("--top-k", "100000000", "top_k = 100000000: the vocabulary has {vocab} tokens; give at most {vocab} "
                             "(0 keeps every token)"),
    ("--top-k", "-2", "top_k = -2: must be >= 0 (0 keeps every token)"),
    ("--temperature", "nan", "temperature = nan: must be a finite number >= 0 (0 is greedy)"),
    ("--temperature", "inf", "temperature = inf: must be a finite number >= 0 (0 is greedy)"),
    ("--top-p", "nan", "top_p = nan: must be a finite number"),
    ("--repetition-penalty", "inf", "repetition_penalty = inf: must be a finite number"),
])
def test_sampling_values_out_of_bounds_are_refused(tiny_builds, option, value, message):
    root = tiny_builds["llama_f32"]
    vocab = json.loads((root / "manifest.json").read_text())["spec"]["vocab_size"]
    result = nitro("generate", root, "Hello", "--temperature", "0.7", option, value, "--max-new-tokens", 4)
    assert one_line_error(result, "generate") == message.format(vocab=vocab)


def test_the_python_api_checks_sampling_values_the_same_way(tiny_builds):
    from nitro import load_pipeline

    with pytest.raises(ValueError, match="^temperature = nan: must be a finite number$"):
        GenerationConfig(do_sample=True, temperature=float("nan"))
    pipe = load_pipeline(tiny_builds["llama_f32"], GenerationConfig(do_sample=True, top_k=10**8))
    with pytest.raises(ValueError, match="^top_k = 100000000: the vocabulary has"):
        pipe.generate("Hello", max_new_tokens=4)


@pytest.fixture
def damaged(tiny_builds, tmp_path):
    """A copy of a tiny build, to break."""
    root = tmp_path / "results/copy"
    shutil.copytree(tiny_builds["llama_f32"], root)
    return root


@pytest.mark.parametrize("command", ["generate", "serve"])
def test_a_missing_blob_is_named(damaged, command):
    blob = damaged / "compiled/decoder_1/dynamic.blob"
    blob.unlink()
    args = ["Hello"] if command == "generate" else ["--port", "1"]
    assert one_line_error(nitro(command, damaged, *args), command) == (
        f"{blob} is missing; delete {blob.parent} and {damaged / 'manifest.json'}, then run snakemake again where "
        "the build was made, which builds them again")


def unloadable(root, rel: str, openvino: str | None = None):
    """A blob the plugin refuses, listed in the manifest as it is (so that it passes the files' check and the
    runtime must say why the plugin refused it); with `openvino`, the manifest says it was built by that version."""
    from nitro.artifacts import file_record

    blob = root / rel
    blob.write_bytes(blob.read_bytes()[:100])
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][rel] = file_record(blob)
    if openvino:
        manifest["versions"]["openvino"] = openvino
    (root / "manifest.json").write_text(json.dumps(manifest))
    return blob


def test_an_unloadable_blob_is_called_damaged_not_another_version(damaged):
    blob = unloadable(damaged, "compiled/decoder_1/dynamic.blob")
    message = one_line_error(nitro("generate", damaged, "Hello"), "generate")
    assert message.startswith(f"cannot load {blob} on CPU (") and "OpenVINO" not in message
    assert message.endswith(f"the file is damaged, or was compiled on another kind of device; delete {blob.parent} "
                            f"and {damaged / 'manifest.json'}, then run snakemake again where the build was made, "
                            "which builds them again")


def test_a_blob_from_another_openvino_names_both_versions(damaged):
    from importlib import metadata

    blob = unloadable(damaged, "compiled/embed/dynamic.blob", openvino="2000.1.0")
    assert one_line_error(nitro("generate", damaged, "Hello"), "generate") == (
        f"cannot load {blob}: it was compiled by OpenVINO 2000.1.0, this is OpenVINO {metadata.version('openvino')}; "
        "compile the chunks again with this one: snakemake --forcerun compile_chunk")


@pytest.mark.parametrize("command", ["generate", "serve"])
def test_a_missing_tokenizer_folder_is_named(damaged, command):
    shutil.rmtree(damaged / "tokenizer")
    args = ["Hello"] if command == "generate" else ["--port", "1"]
    assert one_line_error(nitro(command, damaged, *args), command) == (
        f"{damaged / 'tokenizer'} is missing; delete {damaged / 'manifest.json'} and run snakemake again where the "
        "build was made (it rebuilds what is missing)")


def workflow_error(work, recipe: dict) -> str:
    """The one line a bad recipe gets from the workflow, which must stop before any job."""
    result = snakemake(work, {"models": {"bad": recipe}}, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert not (work / "results").exists(), "work started despite a bad recipe"
    lines = result.stderr.splitlines()
    return lines[lines.index(next(line for line in lines if line.startswith("WorkflowError"))) + 1]


@pytest.mark.parametrize("offline", [True, False])
def test_a_mistyped_source_path_fails_at_once(tmp_path, tiny_sources, monkeypatch, offline):
    """A relative path that is not there looks like a hub id (org/name): without a reachable hub (or with
    HF_HUB_OFFLINE) it fails at once instead of retrying the hub for ~25 s."""
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    line = workflow_error(tmp_path, tiny_recipe("models/x"))
    assert time.monotonic() - start < 20
    assert line.startswith(f"bad recipe for model 'bad': source 'models/x': no such folder or file "
                           f"({tmp_path / 'models/x'}), and ")
    if offline:
        assert line.endswith("it cannot be tried as a hub id: HF_HUB_OFFLINE is set")


@pytest.mark.parametrize("compression, message", [
    ({"mode": "INT4_SYM", "group_size": 64},  # the tiny Llama: hidden 64, attention output 4 x 24 = 96, MLP 160
     "group_size 64 does not divide chunk decoder_0's attention output (heads x head_dim) of 96 channels; valid "
     "group sizes for it: 16, 32, -1 (-1: per channel)"),
    ({"mode": "none", "chunks": {"decoders": {"mode": "NF4"}}},
     "group_size 128 (NNCF's default for NF4) does not divide chunk decoder_0's hidden size of 64 channels; valid "
     "group sizes for it: 16, 32, -1 (-1: per channel)"),
    ({"mode": "INT8_SYM", "group_size": 32},
     "group_size applies to 4-bit modes only (INT4_SYM, INT4_ASYM, NF4), not to mode INT8_SYM; remove it"),
])
def test_compression_that_cannot_apply_fails_before_any_job(tmp_path, tiny_sources, compression, message):
    recipe = tiny_recipe(tiny_sources["llama"], compression=compression)
    assert workflow_error(tmp_path, recipe) == f"bad recipe for model 'bad': models.bad.compression: {message}"


def test_per_channel_group_size_and_an_inherited_one_are_accepted(tmp_path, tiny_sources):
    """-1 (per channel) is valid, as the schema says; a model-wide 4-bit group size does not make an 8-bit
    override of one chunk an error (it is left out of that chunk's settings)."""
    recipe = tiny_recipe(tiny_sources["llama"], compression={
        "mode": "INT4_SYM", "group_size": -1, "chunks": {"embed": {"mode": "INT8_ASYM"}}})
    result = snakemake(tmp_path, {"models": {"ok": recipe}}, "--dry-run")
    assert "compress_chunk" in result.stdout


def test_a_decode_graph_for_static_shapes_fails_before_any_job(tmp_path, tiny_sources):
    recipe = tiny_recipe(tiny_sources["llama"], device="NPU", npuw_on_cpu=True, decode_graph=True)
    assert workflow_error(tmp_path, recipe) == (
        "bad recipe for model 'bad': models.bad.decode_graph applies to dynamic shapes: a static build has a "
        "decode graph already (shapes = auto with device NPU)")


def test_a_misspelled_key_names_the_allowed_keys_in_one_line(tmp_path, tiny_sources):
    recipe = {**tiny_recipe(tiny_sources["llama"]), "chunk_sise": 3}
    assert workflow_error(tmp_path, recipe) == (
        "recipe.models.bad: unknown key 'chunk_sise'; allowed keys: calibration, chunk_size, compression, "
        "decode_graph, device, device_properties, evaluate, inference_precision, kv_cache_precision, max_seq_len, "
        "npuw_on_cpu, prefill_len, shapes, source")
