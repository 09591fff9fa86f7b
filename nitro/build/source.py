"""Stage 1: materialise the source as a Hugging Face folder (config, safetensors, tokenizer, generation config)
plus an index of which tensor lives in which safetensors file, so each export reads only its own tensors."""
from __future__ import annotations

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
    """Dequantise with transformers' GGUF loader and save as a plain float32 checkpoint."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


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
