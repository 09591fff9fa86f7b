"""Stage 1: materialise the source as a Hugging Face folder (config, safetensors, tokenizer, generation config)
plus an index of which tensor lives in which safetensors file, so each export reads only its own tensors."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
from pathlib import Path

from ..artifacts import TENSOR_INDEX, TOKENIZER, atomic_dir, write_json

# Everything but weights that the runtime needs (tokenizer, chat template, generation settings).
TOKENIZER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)


def run(args):
    """The `source` step: --out is the HF folder; the tokenizer goes to its sibling folder."""
    materialise(args.params, args.out, args.out.parent / TOKENIZER)


def materialise(source: dict, out: Path, tokenizer_out: Path) -> None:
    """`source` is a resolved nitro.sources.Source as a dict: its kind and location."""
    kind, location = source["kind"], source["location"]
    with atomic_dir(out) as scratch:
        if kind == "gguf":
            _from_gguf(Path(location), scratch)
        else:
            _link_folder(Path(location) if kind == "hf_dir" else _download(location), scratch)
        write_json(scratch / TENSOR_INDEX, tensor_index(scratch))
        with atomic_dir(tokenizer_out) as tok:
            for name in TOKENIZER_FILES:
                if (scratch / name).is_file():
                    shutil.copy2(scratch / name, tok / name)


def _link_folder(folder: Path, dest: Path) -> None:
    """Hard-link (or copy, across file systems) the checkpoint's files (its weights are safetensors: see
    nitro.sources)."""
    for f in folder.iterdir():
        if f.is_file() and (f.suffix in (".safetensors", ".jinja") or f.name in TOKENIZER_FILES
                            or f.name == "model.safetensors.index.json"):
            try:
                os.link(f, dest / f.name)
            except OSError:
                shutil.copy2(f, dest / f.name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.safetensors", "*.json", "*.jinja"]
    return Path(snapshot_download(repo_id, allow_patterns=patterns))


def _from_gguf(path: Path, dest: Path) -> None:
    """Dequantise a GGUF checkpoint into float32 safetensors shards a tensor at a time, converting it as
    transformers' GGUF loader does (its config, tokenizer, tensor names and per-architecture processing), so the
    step holds at most a shard and one tensor: the loader itself holds the whole model in float32 (32 GB for an
    8B model). The file is read through a memory map whose pages are dropped after each tensor."""
    with _parsed_once(path) as reader:
        _convert_gguf(path, reader, dest)


@contextlib.contextmanager
def _parsed_once(path: Path):
    """The GGUF file parsed once, and gguf's tensor-name table built once, for the block. transformers' config,
    checkpoint and tokenizer loaders each parse the file anew with gguf's GGUFReader (about 4 s apiece for SmolLM2's
    49k-token vocabulary), and its tensor-name mapping builds the same table for every module of the model (397
    times for SmolLM2, 5.5 s); within the block they are handed the reader made here and the first table."""
    import gguf

    make_reader, make_names, path = gguf.GGUFReader, gguf.get_tensor_name_map, path.resolve()
    reader = make_reader(path)

    def shared_reader(file, *args, **kwargs):
        if Path(file).resolve() == path and not args and not kwargs:
            return reader
        return make_reader(file, *args, **kwargs)

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.cache(make_names)
    try:
        yield reader
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = make_reader, make_names


def _convert_gguf(path: Path, reader, dest: Path) -> None:
    import mmap

    import numpy as np
    import torch
    from gguf import dequantize
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map, load_gguf_checkpoint, read_field)

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    wanted = set(model.state_dict()) - ({"lm_head.weight"} if config.tie_word_embeddings else set())
    parsed = load_gguf_checkpoint(str(path))  # the metadata only
    architecture = read_field(reader, "general.architecture")[0]
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    hf_names = get_gguf_hf_weights_map(model, processor)
    with ShardWriter(dest) as shards:
        for tensor in reader.tensors:
            result = processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name,
                                       tensor_key_mapping=hf_names, parsed_parameters=parsed)
            name = hf_names.get(result.name)
            if name in wanted:
                shards.add(name, torch.from_numpy(np.array(result.weights, np.float32)))
            if hasattr(mmap, "MADV_DONTNEED"):
                reader.data._mmap.madvise(mmap.MADV_DONTNEED)  # np.memmap's own map of the file
    missing = wanted - set(shards.weight_map)
    if missing:
        raise ValueError(f"{path}: no tensor for {', '.join(sorted(missing)[:3])} (and {len(missing)} in all)")
    config_dict = config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.update(architectures=[type(model).__name__], dtype="float32")  # the shards' type
    (dest / "config.json").write_text(json.dumps(config_dict, indent=2))
    GenerationConfig.from_model_config(config).save_pretrained(dest)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(dest)


# safetensors' float dtypes -> torch's names for them
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


class ShardWriter:
    """Writes a checkpoint as safetensors shards of about `shard_bytes`, each written once full, plus the index
    Hugging Face loaders read (model.safetensors.index.json): memory holds a shard, never the checkpoint."""

    INDEX = "model.safetensors.index.json"

    def __init__(self, folder: Path, shard_bytes: int = 1 << 30):
        self.folder, self.shard_bytes = Path(folder), shard_bytes
        self.pending, self.pending_bytes, self.total_bytes, self.shards = {}, 0, 0, 0
        self.weight_map: dict[str, str] = {}

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self._flush()
            write_json(self.folder / self.INDEX, {"metadata": {"total_size": self.total_bytes},
                                                  "weight_map": self.weight_map})

    def add(self, name: str, tensor) -> None:
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        import torch

        if not self.pending:
            return
        self.shards += 1
        path = self.folder / f"model-{self.shards:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, tensor in self.pending.items():
            size = tensor.numel() * tensor.element_size()
            dtype = next(k for k, v in SAFETENSORS_DTYPES.items() if getattr(torch, v) == tensor.dtype)
            header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        with open(path, "wb") as f:
            f.write(len(text).to_bytes(8, "little"))
            f.write(text)
            for tensor in self.pending.values():
                f.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
        self.weight_map.update({name: path.name for name in self.pending})
        self.total_bytes += offset
        self.pending, self.pending_bytes = {}, 0


def safetensors_header(f) -> tuple[dict, int]:
    """(header, offset of the data) of a safetensors file open for binary reading: the header gives each
    tensor's dtype, shape and byte range from that offset."""
    length = int.from_bytes(f.read(8), "little")
    return json.loads(f.read(length)), 8 + length


def tensor_index(folder: Path) -> dict[str, str]:
    """Tensor name -> safetensors file name."""
    index = {}
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as f:
            header, _ = safetensors_header(f)
        index.update({name: path.name for name in header if name != "__metadata__"})
    return index
