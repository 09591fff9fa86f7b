"""Stage 5: load every chunk together from the warm blobs, run one smoke inference, write manifest.json."""
from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .step import peak_rss_mb, write_json

VERSIONED = ("openvino", "nncf", "torch", "transformers", "snakemake", "nitro")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _eos_ids(tokenizer_dir: Path) -> list[int]:
    """Every EOS id the model's generation config names (plus the config's own)."""
    ids = []
    for name in ("generation_config.json", "config.json"):
        path = tokenizer_dir / name
        if path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    return sorted(set(ids))


def build_manifest(root: Path, recipe: dict, chunk_names: list[str], logs: list[Path]) -> dict:
    """The manifest the runtime loads: layout, graphs' inputs/outputs, compression, device, hashes, versions."""
    chunks, files = [], {}
    for name in chunk_names:
        meta = json.loads((root / "compiled" / name / "meta.json").read_text())
        variants = {}
        for variant, info in meta["variants"].items():
            blob = f"compiled/{name}/{info['blob']}"
            xml = f"compressed/{name}/{info['xml']}"
            for rel in (blob, xml, xml.replace(".xml", ".bin")):
                files[rel] = sha256(root / rel)
            variants[variant] = {**info, "blob": blob, "xml": xml}
        chunks.append({**meta["chunk"], "name": name, "compression": meta["compression"], "variants": variants})
    kv = {json.loads((root / "compiled" / n / "meta.json").read_text())["kv_precision"] for n in chunk_names}
    return {
        "format": 1,
        **recipe,
        "kv_precision": kv.pop(),
        "tokenizer": "tokenizer",
        "eos_token_ids": _eos_ids(root / "tokenizer"),
        "chunks": chunks,
        "files": files,
        "versions": {p: _version(p) for p in VERSIONED},
        "steps": [json.loads(Path(log).read_text()) for log in logs],
    }


def compile_model(root: Path, recipe: dict, chunk_names: list[str], logs: list[Path]) -> dict:
    from ..runtime import Model

    manifest = build_manifest(root, recipe, chunk_names, logs)
    start = time.perf_counter()
    model = Model(root, manifest)
    load_s = time.perf_counter() - start
    smoke_ids = [1, 2, 3]
    logits = model.forward(smoke_ids)
    model.reset()
    if logits.shape != (manifest["spec"]["vocab_size"],) or not np.isfinite(logits).all():
        raise RuntimeError(f"smoke inference gave unusable logits of shape {logits.shape}")
    manifest["smoke"] = {"input_ids": smoke_ids, "argmax": int(logits.argmax()), "load_s": round(load_s, 3),
                         "peak_rss_mb": round(peak_rss_mb(), 1)}
    write_json(root / "manifest.json", manifest)
    return manifest
