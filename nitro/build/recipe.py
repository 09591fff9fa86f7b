"""A model's build recipe: the validated config for one model, its source, its chunk plan, and what each step is
given: its parameters (only what that step reads, so that a change reruns only the steps it affects) and its
declared memory.

The Snakefile calls this while it builds the DAG, so it imports neither torch nor OpenVINO.
"""
from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..artifacts import DECODE, DYNAMIC, PREFILL
from ..models import ModelSpec, graph_modules, spec_for
from ..sources import Source
from . import STEPS
from .tokens import PYTHON_DOCS

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the nitro package
# Modules a package imports by name (importlib), which no import statement shows.
IMPORTED_BY_NAME = {"nitro.models": graph_modules()}

# Resident size of a build step before any weights: Python, torch, OpenVINO, NNCF imported.
BASE_MB = 900
SHARD_MB = 1024  # the source step's safetensors shards (nitro.build.source.ShardWriter)
FOUR_BIT_MODES = ("INT4_SYM", "INT4_ASYM", "NF4")
NNCF_GROUP_SIZE = 128  # what NNCF's compress_weights uses for 4-bit modes when given no group size
GROUP_SIZES = (16, 32, 64, 128, 256)  # the group sizes an error suggests
# NNCF's data-aware options (4-bit modes): each learns from the activations entering the chunk's matmuls.
DATA_AWARE = ("awq", "scale_estimation", "gptq")
DATA_FREE_METRIC = "weight_quantization_error"  # the one sensitivity metric (for `ratio`) that reads no data
FOUR_BIT_KEYS = ("group_size", "ratio", *DATA_AWARE, "sensitivity_metric")  # what only a 4-bit mode uses
# From this many parameters, an NPU build's decoder layers default to channel-wise INT4 (one scale per output
# channel), below it to groups of 128 (or the largest smaller size that divides every layer): Intel's NPU models
# are published so (Llama-3-8B, Mistral-7B, MiniCPM-V-4.5 channel-wise; Qwen2.5-1.5B, Phi-3-mini group 128), as
# channel-wise INT4 costs small models more accuracy and saves big ones the NPU's work on group scales.
NPU_CHANNEL_WISE_PARAMS = 4e9


class RecipeError(ValueError):
    """A recipe that cannot be built; the message names the bad key and value."""


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


def input_channels(spec: ModelSpec, kind: str) -> dict[str, int]:
    """The input channels of a chunk's weight matrices (by what they are), along which NNCF forms its groups."""
    hidden = {"hidden size": spec.hidden_size}
    if kind != "decoder":
        return hidden
    return {**hidden, "attention output (heads x head_dim)": spec.num_heads * spec.head_dim,
            "MLP intermediate size": spec.intermediate_size}


def largest_group(channels) -> int:
    """The largest group of at most NNCF's default size that divides all these input channels; -1 (per channel)
    where none does."""
    groups = [g for g in GROUP_SIZES if g <= NNCF_GROUP_SIZE and all(n % g == 0 for n in channels)]
    return groups[-1] if groups else -1


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
        config = self.source.hf_config()
        self.spec = spec_for(config)
        # what the export stores a weight in: a bf16 or f16 checkpoint's own type, else float32 (GGUF sources
        # are dequantised to float32; see nitro.build.export.narrow_weights)
        narrow = (config.get("dtype") or config.get("torch_dtype")) in ("bfloat16", "float16")
        self.export_bytes_per_weight = 2.0 if narrow else 4.0
        self.source.check_weights()
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
        if s["decode_graph"] and self.shapes() == "static":
            raise RecipeError(f"{where}.decode_graph applies to dynamic shapes: a static build has a decode graph "
                              f"already (shapes = {s['shapes']} with device {s['device']})")
        if s.get("npuw_on_cpu") and s["device"] != "NPU":
            raise RecipeError(f"{where}.npuw_on_cpu needs device: NPU (got device: {s['device']})")
        original = self.spec.rope_scaling.get("original_max_position_embeddings")
        if self.spec.rope_scaling.get("rope_type") == "longrope" and s["max_seq_len"] > original:
            raise RecipeError(
                f"{where}.max_seq_len = {s['max_seq_len']} exceeds the model's original context of {original} "
                "positions: past it transformers turns the whole sequence by longrope's long factors, recomputing "
                f"what it cached, which NITRO's cache does not do; use max_seq_len <= {original}")
        self._check_compression()
        for block in ("evaluate", "calibration"):
            text = s[block]["text"]
            if text != PYTHON_DOCS and not Path(text).is_file():
                raise RecipeError(f"{where}.{block}.text = {text!r}: no such file (give a UTF-8 text file, or "
                                  f"{PYTHON_DOCS!r}, the default)")

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

    def source_params(self) -> dict:
        return asdict(self.source)

    def export_params(self, name: str) -> dict:
        """What the export of this chunk reads besides the source: the chunk, and per graph variant its token
        count and (decoder chunks) its cache slots, None where the axis is open. Decoder chunks also take the
        cache's element type, and decoders and head whether they compute in f16. The architecture itself is
        read from the materialised source's config.json."""
        chunk = self.chunk(name)
        s, static = self.settings, self.shapes() == "static"
        if chunk.kind == "head":  # the runtime feeds it the one row whose logits it needs
            graphs = {DECODE: {"tokens": 1}}
        elif static and chunk.kind == "embed":
            # One graph, so the table is held once: a decode call looks its id up through the prefill graph (a
            # few rows more of a lookup cost nothing). NPUW shares no table between two graphs: its weights bank
            # needs NPUW_FOLD + NPUW_FUNCALL_FOR_ALL, with which it fails to compile a lookup alone.
            graphs = {PREFILL: {"tokens": s["prefill_len"]}}
        elif static:
            graphs = {PREFILL: {"tokens": s["prefill_len"]}, DECODE: {"tokens": 1}}
        else:
            graphs = {DYNAMIC: {"tokens": None}}
            if chunk.kind == "decoder" and s["decode_graph"]:  # decode steps without dynamic token shapes
                graphs[DECODE] = {"tokens": 1}
        params = {"chunk": asdict(chunk), "graphs": graphs}
        if chunk.kind == "decoder":
            for graph in graphs.values():
                graph["slots"] = s["max_seq_len"] if static else None
            params["kv_precision"] = self.kv_precision()
        if chunk.kind != "embed":
            params["f16_safe"] = self.compute_precision() == "f16"
        return params

    def heldout_tokens(self) -> int:
        """Held-out tokens the build is evaluated on: as the recipe says, at most max_seq_len."""
        return min(self.settings["evaluate"]["tokens"], self.settings["max_seq_len"])

    def heldout_params(self) -> dict:
        """One sample from the text's start. When calibration samples come from the same text's end, the held-out
        tokens must not reach them (checked by the step, which alone knows the text's token count)."""
        s = self.settings
        same_text = s["calibration"]["text"] == s["evaluate"]["text"] and self.calibrated()
        calibration = self.calibration_params()
        return {"text": s["evaluate"]["text"], "samples": 1, "tokens": self.heldout_tokens(), "from": "start",
                "reserved_at_end": calibration["samples"] * calibration["tokens"] if same_text else 0}

    def calibration_params(self) -> dict:
        c = self.settings["calibration"]
        return {"text": c["text"], "samples": c["samples"], "tokens": c["tokens"], "from": "end", "reserved_at_end": 0}

    def data_aware(self, name: str) -> bool:
        """Whether the chunk's compression learns from calibration activations."""
        c = self.compression(name)
        return any(c.get(k) for k in DATA_AWARE) or c.get("sensitivity_metric", DATA_FREE_METRIC) != DATA_FREE_METRIC

    def calibrated(self) -> bool:
        return any(self.data_aware(name) for name in self.chunk_names)

    def activation_chunks(self) -> list[str]:
        """The chunks whose output on the calibration tokens some data-aware chunk after them reads."""
        aware = [i for i, name in enumerate(self.chunk_names) if self.data_aware(name)]
        return self.chunk_names[:aware[-1]] if aware else []

    def manifest_params(self) -> dict:
        """What the final step writes into the manifest besides what it finds in the chunks' folders, and the
        evaluation's settings."""
        s = self.settings
        return {
            "chunks": self.chunk_names,
            "evaluate": {**s["evaluate"], "tokens": self.heldout_tokens()},
            "activation_chunks": self.activation_chunks(),
            "header": {
                "name": self.name,
                "family": self.spec.family,
                "spec": self.spec.to_dict(),
                # the recipe as given, but compression: each chunk records its own, so two spellings of one
                # compression (a mode named, or left to its default) build, and record, the same model; and
                # calibration, recorded below where a chunk reads it
                "settings": {k: v for k, v in s.items() if k not in ("compression", "calibration")},
                "source": asdict(self.source),
                "max_seq_len": s["max_seq_len"],
                "prefill_len": s["prefill_len"],
                "shapes": self.shapes(),
                "device": self.device_params(),
                # what the data-aware chunks learned from; None when no chunk is data-aware (and reads it)
                "calibration": {**s["calibration"], "chunks": [n for n in self.chunk_names if self.data_aware(n)]}
                if self.calibrated() else None,
            },
        }

    def shapes(self) -> str:
        """Static graphs for an NPU, which compiles nothing else; dynamic ones elsewhere, where a static graph
        per token count would hold its own copy of the weights (the CPU plugin shares none between graphs)."""
        s = self.settings
        if s["shapes"] != "auto":
            return s["shapes"]
        return "static" if s["device"] == "NPU" else "dynamic"

    def compression(self, name: str) -> dict:
        """The chunk's compression: the device's default (default_compression), then the model-wide setting,
        then `decoders`, then the chunk's own override; a mode given anywhere replaces the default as a whole.
        Group size, ratio and the data-aware options are kept for 4-bit modes only, the group size made explicit
        (NNCF's default otherwise)."""
        given = {}
        for _, block in self._compression_blocks(name):
            given.update({k: v for k, v in block.items() if k != "chunks" and v is not None})
        given = {k: v for k, v in given.items() if v is not False}  # `awq: false` builds what no `awq` does
        result = given if "mode" in given else {**self.default_compression(self.chunk(name)), **given}
        if result["mode"] not in FOUR_BIT_MODES:
            return {"mode": result["mode"]}
        return {"group_size": NNCF_GROUP_SIZE, **result}

    def default_compression(self, chunk: Chunk) -> dict:
        """What a chunk gets where the recipe names no mode: INT8_SYM, except an NPU build's decoder layers:
        symmetric INT4 (what the NPU computes fastest), channel-wise from NPU_CHANNEL_WISE_PARAMS, else in the
        largest group of at most 128 that divides each layer's input channels."""
        if self.settings["device"] != "NPU" or chunk.kind != "decoder":
            return {"mode": "INT8_SYM"}
        if sum(chunk_params(self.spec, c) for c in self.chunks) >= NPU_CHANNEL_WISE_PARAMS:
            return {"mode": "INT4_SYM", "group_size": -1}
        return {"mode": "INT4_SYM", "group_size": largest_group(input_channels(self.spec, chunk.kind).values())}

    def _compression_blocks(self, name: str) -> list[tuple[str, dict]]:
        """The recipe's compression settings that apply to a chunk, as (where, settings), later ones winning."""
        comp, where = self.settings["compression"], f"models.{self.name}.compression"
        overrides = comp.get("chunks", {})
        keys = (["decoders"] if self.chunk(name).kind == "decoder" else []) + [name]
        return [(where, comp)] + [(f"{where}.chunks.{k}", overrides[k]) for k in keys if k in overrides]

    def _check_compression(self):
        """Group size and ratio only where a 4-bit mode uses them, and a group size that divides the input
        channels of every layer it applies to: checked here, before any job, instead of failing inside NNCF."""
        for chunk in self.chunks:
            mode = self.default_compression(chunk)["mode"]
            for where, block in self._compression_blocks(chunk.name):
                mode = block.get("mode", mode)
                unused = [k for k in FOUR_BIT_KEYS if block.get(k) not in (None, False)]
                if unused and mode not in FOUR_BIT_MODES:
                    both = len(unused) > 1
                    raise RecipeError(f"{where}: {' and '.join(unused)} {'apply' if both else 'applies'} to 4-bit "
                                      f"modes only ({', '.join(FOUR_BIT_MODES)}), not to mode {mode}; remove "
                                      f"{'them' if both else 'it'}")
            settings = self.compression(chunk.name)
            if chunk.kind == "embed" and self.data_aware(chunk.name):
                raise RecipeError(f"models.{self.name}.compression: chunk embed is a table lookup, which NNCF's "
                                  f"data-aware options ({', '.join(DATA_AWARE)}, sensitivity_metric) do not apply "
                                  "to; set them for decoder chunks and the head")
            if "sensitivity_metric" in settings and settings.get("ratio", 1) == 1:
                raise RecipeError(f"models.{self.name}.compression: chunk {chunk.name} has a sensitivity_metric but "
                                  "no ratio below 1: the metric picks which layers stay at 8 bits, and with ratio 1 "
                                  "none do; give a ratio (e.g. 0.8) or remove the metric")
            group = settings.get("group_size", -1)
            if group == -1:
                continue
            channels = input_channels(self.spec, chunk.kind)
            bad = {what: n for what, n in channels.items() if n % group}
            if bad:
                what, n = next(iter(bad.items()))
                valid = [g for g in GROUP_SIZES if all(c % g == 0 for c in channels.values())]
                given = "" if any(b.get("group_size") for _, b in self._compression_blocks(chunk.name)) else (
                    f" (NNCF's default for {settings['mode']})")
                raise RecipeError(
                    f"models.{self.name}.compression: group_size {group}{given} does not divide chunk "
                    f"{chunk.name}'s {what} of {n} channels; valid group sizes for it: "
                    f"{', '.join(map(str, valid + [-1]))} (-1: per channel)")

    def device_params(self) -> dict:
        """Device name and the OpenVINO properties every compile of this model uses."""
        s = self.settings
        props = {"PERFORMANCE_HINT": "LATENCY"}
        if s["device"] == "CPU":
            # The CPU plugin quantizes activations to 8 bits for compressed weights by default where the CPU has
            # VNNI: faster over many tokens (a 128-token SmolLM2 chunk 32.9 -> 25.4 ms), no faster over one, and
            # SmolLM2 INT8 then answers "What is the capital of France?" with "L'Étoile, la Marseillaise, la
            # femme..." instead of "The capital of France is Paris." (KL 0.0044 -> 0.0076 nats on held-out
            # text). Off, the weights alone are compressed; device_properties can turn it on (README).
            props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = "0"
        if s["inference_precision"] != "default":
            props["INFERENCE_PRECISION_HINT"] = s["inference_precision"]
        if s["device"] == "NPU":
            # Through the NPU plugin's NPUW path, as OpenVINO GenAI's NPU pipeline, whose weights bank lets a
            # chunk's graphs share one copy (nitro/build/compile.py); npuw_on_cpu runs its subgraphs on the CPU.
            props = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU" if s.get("npuw_on_cpu") else "NPU"}
        props.update(s.get("device_properties", {}))
        device = {"device": s["device"], "properties": props}
        if s.get("npuw_on_cpu"):
            # NPUW's CPU subgraphs compute in the CPU plugin's default precision: bf16 on CPUs with AVX-512 bf16,
            # which puts the tiny models' logits 0.7-2.5 % off the f32 static build's (0.1 % in f32 with the f16
            # cache; a real NPU computes in f16). In f32 the check gives the same figures on every CPU.
            device["host_properties"] = {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}
        return device

    def mem_mb(self, step: str, name: str | None = None) -> int:
        """Declared peak memory of a step: a fixed base plus a multiple of the weights it holds. The multiples
        cover the copies each step makes; tests/test_artifacts.py checks every step's measured peak against them."""
        f32_mb = lambda params: params * 4 / 2**20  # noqa: E731
        if step == "source":
            total = sum(chunk_params(self.spec, c) for c in self.chunks)
            if self.source.kind != "gguf":  # links (or downloads) files and reads their headers
                return BASE_MB
            # a shard of float32 tensors (one file write of it), and the largest tensor being converted
            largest = max(chunk_params(self.spec, c) for c in self.chunks if c.kind != "decoder")
            return math.ceil(BASE_MB + 2.0 * min(f32_mb(total), SHARD_MB) + 3.0 * f32_mb(largest))
        if step in ("heldout", "calibration", "report"):  # a tokenizer and the text; the report's chart
            return BASE_MB
        if step == "assemble":  # every chunk loaded as the runtime loads it: its compressed weights, and a copy
            # of them for each graph that holds its own; the evaluation's logits (its rows, then stacked) and the
            # reference's log-probabilities, compared a few rows at a time
            compressed_mb = sum(chunk_params(self.spec, c) * self._compressed_bytes_per_weight(c.name)
                                * (1.0 + 2.0 * self._weight_copies(c.name)) for c in self.chunks) / 2**20
            return math.ceil(BASE_MB + compressed_mb + 4.0 * f32_mb(self._heldout_logits()))
        factor = {"export": 4.0, "reference": 3.0, "activations": 3.0, "compress": 3.0, "compile": 3.0}[step]
        held = 0
        if step == "reference" and name == "head":
            # the stored table and a float32 copy of one block of it at a time (at most all of it), and the
            # log-probabilities, computed in place
            factor, held = 2.0, 1.5 * f32_mb(self._heldout_logits())
        elif step == "activations" or step == "compress" and self.data_aware(name):
            # the calibration activations entering the chunk and leaving it, and NNCF's statistics of its matmuls'
            # inputs; GPTQ keeps every sample's input of the widest matmul (measured on SmolLM2: 5.8 such arrays)
            held = 6.0 * f32_mb(self._calibration_tokens() * self.spec.hidden_size)
            if step == "compress" and self.compression(name).get("gptq"):
                widest = max(self.spec.hidden_size, self.spec.intermediate_size)
                held += 8.0 * f32_mb(self._calibration_tokens() * widest)
        return math.ceil(BASE_MB + factor * f32_mb(chunk_params(self.spec, self.chunk(name))) + held)

    def _weight_copies(self, name: str) -> int:
        """Copies of a chunk's weights its compiled graphs hold at run time: one per graph, as the CPU plugin
        repacks them for each, but one for an NPU's, which share a weights bank (nitro/build/compile.py)."""
        return 1 if self.settings["device"] == "NPU" else len(self.export_params(name)["graphs"])

    def _heldout_logits(self) -> int:
        return self.heldout_tokens() * self.spec.vocab_size

    def _calibration_tokens(self) -> int:
        c = self.settings["calibration"]
        return c["samples"] * c["tokens"]

    def disk_mb(self, step: str, name: str | None = None) -> int:
        """Declared disk space a step writes: its weights in the precision it writes them, once (a chunk's IR
        holds its variants on one copy; compiled blobs one each, but for an NPU's weightless decoder blobs), plus a
        little for graphs and metadata (checked against what each step wrote by tests/test_artifacts.py). A step
        checks it is free before it starts."""
        if step in ("assemble", "heldout", "calibration", "report"):
            return 1
        if step == "source":
            if self.source.kind == "gguf":
                return math.ceil(4 * sum(chunk_params(self.spec, c) for c in self.chunks) / 2**20) + 16
            return math.ceil(sum(Path(f).stat().st_size for f in self.source.files()) / 2**20) + 16
        chunk = self.chunk(name)
        if step == "reference":  # float32 activations [1,T,D], or the head's log-probabilities [1,T,V]
            width = self.spec.vocab_size if chunk.kind == "head" else self.spec.hidden_size
            return math.ceil(4 * self.heldout_tokens() * width / 2**20) + 1
        if step == "activations":  # float32 activations [N,T,D]
            return math.ceil(4 * self._calibration_tokens() * self.spec.hidden_size / 2**20) + 1
        variants = len(self.export_params(name)["graphs"])
        if step == "export":
            bytes_per_weight = self.export_bytes_per_weight
        else:
            bytes_per_weight = self._compressed_bytes_per_weight(name)
        copies = 1
        if step == "compile":  # a blob per graph, but an NPU's decoder blobs are weightless (nitro/build/compile.py)
            copies = 0 if self.settings["device"] == "NPU" and chunk.kind == "decoder" else self._weight_copies(name)
        return math.ceil(1.1 * copies * chunk_params(self.spec, chunk) * bytes_per_weight / 2**20) + 2 * variants

    def _compressed_bytes_per_weight(self, name: str) -> float:
        """A weight's bytes after compression, with its share of the scales (f16) and zero points."""
        c = self.compression(name)
        if c["mode"] == "none":
            return 4.0
        if c["mode"] not in FOUR_BIT_MODES:
            return 1.0
        group = c["group_size"] if c["group_size"] > 0 else self.spec.hidden_size
        return 0.5 + 2.5 / group + (1 - c.get("ratio", 1.0)) * 0.5  # what `ratio` leaves at 8 bits


def config_error(config: dict, schema_path: str) -> str:
    """What is wrong with a recipe the schema rejects, as one line: where, and for a misspelled key the keys
    allowed there (instead of Snakemake's dump of the schema)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    where = "recipe" + "".join(f".{p}" for p in error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return f"{where}: unknown key {', '.join(map(repr, unknown))}; allowed keys: {', '.join(allowed)}"
    return f"{where}: {error.message}"


def step_code(step: str) -> list[str]:
    """The package files a step runs, relative to PACKAGE_ROOT: the dispatcher, the step's module, and every nitro
    module they import, directly or not, at load time or inside a function, with the packages around each. Editing
    any of them makes the step's outputs stale. A package's lazy attributes (a module `__getattr__`, as nitro's
    own `nitro.LlamaPipeline`) are not followed: no step asks for them."""
    seen: set[str] = set()
    todo = ["nitro.build.__main__", STEPS[step]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += IMPORTED_BY_NAME.get(name, [])
        todo += _nitro_imports(name)
    return sorted(str(_module_file(name).relative_to(PACKAGE_ROOT)) for name in seen)


def _module_file(name: str) -> Path:
    path = PACKAGE_ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _nitro_imports(name: str) -> list[str]:
    """The nitro modules that module `name` imports anywhere in its code."""
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _statements(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names if _is_module(f"{base}.{alias.name}")]
    return [m for m in found if m.split(".")[0] == "nitro"]


def _is_module(name: str) -> bool:
    if name.split(".")[0] != "nitro":
        return False
    path = PACKAGE_ROOT.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _statements(node):
    """Every node below `node`, except the bodies of module `__getattr__` functions (lazy attributes)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef) and child.name == "__getattr__":
            continue
        yield child
        yield from _statements(child)
