"""Bad recipes fail before any work starts, with a message naming the bad key or value; defaults have one source."""
from __future__ import annotations

import json

import pytest
import yaml
from snakemake.utils import validate

from conftest import REPO, tiny_recipe
from nitro.pipeline import ModelConfig
from nitro.testing import snakemake


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


def test_unknown_architecture(tmp_path, tiny_sources):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    config = json.loads((tiny_sources["llama"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    fails_with(tmp_path / "w", tiny_recipe(folder), "GPT2LMHeadModel", "not supported", "llama", "qwen2")


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
