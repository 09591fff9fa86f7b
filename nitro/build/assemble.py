"""Stage 5: load every chunk together from the compiled blobs, run one smoke inference, evaluate the model on the
held-out tokens against the uncompressed reference (nitro/build/evaluate.py), write manifest.json."""
from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from ..artifacts import (CHUNK_STEPS, COMPILED, COMPRESSED, TOKENS, META, REFERENCE, TOKENIZER, Manifest,
                         chunk_file, file_record, log_file, peak_rss_mb, write_manifest)
from .evaluate import BelowFloor, evaluate

VERSIONED = ("openvino", "nncf", "torch", "transformers", "snakemake", "nitro")


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


def build_manifest(root: Path, header: dict, chunk_names: list[str], activation_chunks: list[str]) -> Manifest:
    """The manifest the runtime loads: the recipe's header, then what the chunks' folders hold (graphs' inputs and
    outputs, compression, device), the files' hashes, the package versions and every step's log."""
    chunks, files, kv_precisions = [], {}, set()
    for name in chunk_names:
        meta = json.loads((root / chunk_file(COMPILED, name, META)).read_text())
        xml = chunk_file(COMPRESSED, name, meta["xml"])
        weights = xml.replace(".xml", ".bin")
        files[xml], files[weights] = file_record(root / xml), file_record(root / weights)
        variants = {}
        for variant, info in meta["variants"].items():
            blob = chunk_file(COMPILED, name, info["blob"])
            files[blob] = file_record(root / blob)
            variants[variant] = {**info, "blob": blob}
        chunks.append({**meta["chunk"], "name": name, "compression": meta["compression"], "xml": xml,
                       "weights": weights if meta["weightless"] else None, "variants": variants})
        if "kv_precision" in meta:
            kv_precisions.add(meta["kv_precision"])
    for path in sorted((root / TOKENIZER).iterdir()):
        files[f"{TOKENIZER}/{path.name}"] = file_record(path)
    logs = [log_file("source"), log_file("heldout")] + [log_file(step, name) for step in CHUNK_STEPS
                                                         for name in chunk_names]
    if activation_chunks:  # the calibration tokens, through the chunks some data-aware chunk after them reads
        logs += [log_file("calibration")] + [log_file("activations", name) for name in activation_chunks]
    return {
        **header,
        "kv_precision": kv_precisions.pop(),
        "tokenizer": TOKENIZER,
        "eos_token_ids": _eos_ids(root / TOKENIZER),
        "chunks": chunks,
        "files": files,
        "versions": {p: _version(p) for p in VERSIONED},
        "steps": [json.loads((root / log).read_text()) for log in logs],
    }


def run(args):
    """The `assemble` step: --out is the manifest, in the model's folder."""
    try:
        assemble(args.out.parent, args.params)
    except BelowFloor as exc:
        raise SystemExit(f"assemble: {exc}") from None


def assemble(root: Path, params: dict) -> Manifest:
    """Load every chunk together from its blob as the runtime does, run one smoke inference, evaluate the model on
    the held-out tokens, write the manifest (not when the evaluation misses a floor the recipe set)."""
    from ..runtime import Model

    manifest = build_manifest(root, params["header"], params["chunks"], params["activation_chunks"])
    start = time.perf_counter()
    model = Model(root, manifest, check_hashes=False)  # hashed just now
    load_s = time.perf_counter() - start
    smoke_ids = [1, 2, 3]
    logits = model.forward(smoke_ids)
    model.reset()
    if logits.shape != (manifest["spec"]["vocab_size"],) or not np.isfinite(logits).all():
        raise RuntimeError(f"smoke inference gave unusable logits of shape {logits.shape}")
    manifest["smoke"] = {"input_ids": smoke_ids, "argmax": int(logits.argmax()), "load_s": round(load_s, 3),
                         "peak_rss_mb": round(peak_rss_mb(), 1)}
    ids = np.load(root / REFERENCE / TOKENS)[0]  # one sample
    reference = np.load(root / REFERENCE / f"{params['chunks'][-1]}.npy")[0]
    manifest["evaluation"] = evaluate(model.forward(ids, all_logits=True), ids, reference, params["evaluate"])
    model.reset()
    write_manifest(root, manifest)
    return manifest
