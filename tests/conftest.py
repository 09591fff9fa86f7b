"""Shared fixtures: run the real Snakemake workflow on recipes, tiny random checkpoints, the SmolLM2 builds.

Builds are session-scoped and grouped into as few Snakemake runs as possible: every job starts Python,
torch and OpenVINO, which dominates the time of a tiny build.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from nitro.testing import make_checkpoint, snakemake

REPO = Path(__file__).resolve().parents[1]


def build_dir(tmp_path_factory, name: str) -> Path:
    """A fresh folder, or with NITRO_TEST_CACHE set a persistent one, so that repeated local runs reuse
    earlier builds (Snakemake then reruns nothing)."""
    cache = os.environ.get("NITRO_TEST_CACHE")
    if cache:
        (Path(cache) / name).mkdir(parents=True, exist_ok=True)
        return Path(cache) / name
    return tmp_path_factory.mktemp(name)


def tiny_recipe(source: Path, **overrides) -> dict:
    return {"source": str(source), "chunk_size": 3, "max_seq_len": 96, "prefill_len": 16,
            "compression": {"mode": "none"}, **overrides}


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory) -> dict[str, Path]:
    root = build_dir(tmp_path_factory, "checkpoints")
    sources = {}
    for family in ("llama", "qwen2"):
        folder = root / family
        sources[family] = folder if (folder / "config.json").is_file() else make_checkpoint(folder, family)
    return sources


@pytest.fixture(scope="session")
def tiny_builds(tmp_path_factory, tiny_sources) -> dict[str, Path]:
    """Each tiny family built uncompressed: at f32 with the CPU's dynamic shapes and with an NPU's static ones,
    and at the CPU's default precision; in one Snakemake run."""
    work = build_dir(tmp_path_factory, "tiny_builds")
    models = {}
    for family, source in tiny_sources.items():
        models[f"{family}_f32"] = tiny_recipe(source, inference_precision="f32")
        models[f"{family}_f32_static"] = tiny_recipe(source, inference_precision="f32", shapes="static")
        models[f"{family}_default"] = tiny_recipe(source)
    snakemake(work, {"models": models})
    return {name: work / "results" / name for name in models}


@pytest.fixture(scope="session")
def smollm2_builds(tmp_path_factory) -> dict[str, Path]:
    """The real SmolLM2: the shipped default recipe (INT8), an uncompressed f32 build, and an NPU build
    checked through the NPU plugin's NPUW path on the CPU. The last two reuse the first's HF folder."""
    work = build_dir(tmp_path_factory, "smollm2")
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]["smollm2"]
    snakemake(work, {"models": {"smollm2": default}})
    hf_folder = work / "results/smollm2/source"
    snakemake(work, {"models": {
        "smollm2_fp32": {**default, "source": str(hf_folder), "compression": {"mode": "none"},
                         "inference_precision": "f32"},
        "smollm2_npu": {**default, "source": str(hf_folder), "device": "NPU", "npuw_on_cpu": True},
    }})
    return {name: work / "results" / name for name in ("smollm2", "smollm2_fp32", "smollm2_npu")}
