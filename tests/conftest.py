"""Shared fixtures and helpers: run the real Snakemake workflow on recipes, tiny random checkpoints, the SmolLM2
builds, the `nitro` command, and `nitro serve` processes on loopback.

Builds are session-scoped and grouped into as few Snakemake runs as possible: every job starts Python,
torch and OpenVINO, which dominates the time of a tiny build.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from nitro.testing import TINY, make_checkpoint, snakemake

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-d41f7"  # the API key of the servers the tests start with one


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
            "compression": {"mode": "none"}, "evaluate": {"tokens": 64}, **overrides}


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory) -> dict[str, Path]:
    root = build_dir(tmp_path_factory, "checkpoints")
    sources = {}
    for family in TINY:
        folder = root / family
        sources[family] = folder if (folder / "config.json").is_file() else make_checkpoint(folder, family)
    return sources


@pytest.fixture(scope="session")
def tiny_builds(tmp_path_factory, tiny_sources) -> dict[str, Path]:
    """Each tiny family built uncompressed: at f32 with the CPU's dynamic shapes, with a decode graph beside
    them, and with an NPU's static ones, at the CPU's default precision, and for an NPU (compiled by the NPU
    plugin's NPUW path onto the CPU); in one Snakemake run."""
    work = build_dir(tmp_path_factory, "tiny_builds")
    models = {}
    for family, source in tiny_sources.items():
        models[f"{family}_f32"] = tiny_recipe(source, inference_precision="f32")
        models[f"{family}_f32_static"] = tiny_recipe(source, inference_precision="f32", shapes="static")
        models[f"{family}_f32_decode_graph"] = tiny_recipe(source, inference_precision="f32", decode_graph=True)
        models[f"{family}_default"] = tiny_recipe(source)
        models[f"{family}_npu"] = tiny_recipe(source, device="NPU", npuw_on_cpu=True)
    snakemake(work, {"models": models})
    return {name: work / "results" / name for name in models}


@pytest.fixture(scope="session")
def smollm2_builds(tmp_path_factory) -> dict[str, Path]:
    """The real SmolLM2: the shipped default recipe (INT8), the same with a decode graph, an uncompressed f32
    build, an NPU build with the NPU defaults (INT4_SYM decoders) checked through the NPU plugin's NPUW path on
    the CPU, a CPU build with the NPU build's compression, and one with that compression learned from
    calibration data (AWQ and scale estimation). All but the first reuse its HF folder."""
    work = build_dir(tmp_path_factory, "smollm2")
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]["smollm2"]
    snakemake(work, {"models": {"smollm2": default}})
    hf_folder = work / "results/smollm2/source"
    snakemake(work, {"models": {
        "smollm2_decode_graph": {**default, "source": str(hf_folder), "decode_graph": True},
        "smollm2_fp32": {**default, "source": str(hf_folder), "compression": {"mode": "none"},
                         "inference_precision": "f32"},
        "smollm2_npu": {**default, "source": str(hf_folder), "device": "NPU", "npuw_on_cpu": True},
        "smollm2_int4": {**default, "source": str(hf_folder),
                         "compression": {"chunks": {"decoders": {"mode": "INT4_SYM", "group_size": 64}}}},
        "smollm2_int4_aware": {**default, "source": str(hf_folder), "calibration": {"samples": 32},
                               "compression": {"chunks": {"decoders": {"mode": "INT4_SYM", "group_size": 64,
                                                                       "awq": True, "scale_estimation": True}}}},
    }})
    return {name: work / "results" / name
            for name in ("smollm2", "smollm2_decode_graph", "smollm2_fp32", "smollm2_npu", "smollm2_int4",
                         "smollm2_int4_aware")}


def nitro(*args) -> subprocess.CompletedProcess:
    """The `nitro` command line, run as a user runs it."""
    return subprocess.run([sys.executable, "-m", "nitro.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def one_line_error(result: subprocess.CompletedProcess, command: str) -> str:
    """The error line of a command that failed as it should: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"nitro {command}: error: "), result.stderr
    return lines[0].removeprefix(f"nitro {command}: error: ")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=900)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=30).json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path | list[Path], log: Path, *options: str) -> Server:
    """`nitro serve` on a free loopback port, for one build or several."""
    port = free_port()
    roots = [str(r) for r in (root if isinstance(root, list) else [root])]
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "nitro.cli", "serve", *roots, "--port", str(port),
                                    *options], stdout=out, stderr=subprocess.STDOUT)
    return Server(f"http://127.0.0.1:{port}", process, log)


def wait_until_ready(server: Server, timeout_s: float = 900):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited ({server.process.returncode}):\n{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the server did not answer /health in {timeout_s} s:\n{server.log.read_text()[-4000:]}")
