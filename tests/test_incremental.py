"""Incremental builds, checked through Snakemake itself: what reruns after a change, and after a kill."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, build_dir, snakemake, tiny_recipe


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from a dry run's job table (empty when nothing is to be done)."""
    counts = {}
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M):
        if rule != "total":
            counts[rule] = int(count)
    return counts


@pytest.fixture(scope="module")
def incremental_build(tmp_path_factory, tiny_sources):
    work = build_dir(tmp_path_factory, "incremental")
    recipe = {"models": {"m": tiny_recipe(tiny_sources["llama"], compression={"mode": "INT8_ASYM"})}}
    snakemake(work, recipe)
    return work, recipe


def test_second_run_does_nothing(incremental_build):
    work, recipe = incremental_build
    result = snakemake(work, recipe, "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr
    assert planned_jobs(result) == {}


def test_one_chunk_compression_change_reruns_only_that_chunk(incremental_build):
    work, recipe = incremental_build
    changed = json.loads(json.dumps(recipe))
    changed["models"]["m"]["compression"]["chunks"] = {"decoder_1": {"mode": "INT8_SYM"}}
    assert planned_jobs(snakemake(work, changed, "--dry-run")) == {
        "compress_chunk": 1, "warmup_chunk": 1, "compile": 1, "all": 1}
    before = {p: p.stat().st_mtime_ns for p in (work / "results/m").rglob("*.xml")}
    snakemake(work, changed)
    rewritten = {p.relative_to(work / "results/m").parts[:2] for p, t in before.items()
                 if not p.exists() or p.stat().st_mtime_ns != t}
    assert rewritten == {("compressed", "decoder_1")}
    manifest = json.loads((work / "results/m/manifest.json").read_text())
    modes = {c["name"]: c["compression"]["mode"] for c in manifest["chunks"]}
    assert modes == {"embed": "INT8_ASYM", "decoder_0": "INT8_ASYM", "decoder_1": "INT8_SYM", "head": "INT8_ASYM"}
    snakemake(work, recipe)  # back to the module's recipe for the other tests


def test_max_seq_len_change_reruns_exports(incremental_build):
    work, recipe = incremental_build
    changed = json.loads(json.dumps(recipe))
    changed["models"]["m"]["max_seq_len"] = 128
    jobs = planned_jobs(snakemake(work, changed, "--dry-run"))
    assert jobs["export_chunk"] == 4 and jobs["compress_chunk"] == 4 and jobs["warmup_chunk"] == 4
    assert "source" not in jobs


def test_killed_build_resumes_without_corrupt_artifacts(tmp_path, tiny_sources):
    recipe = {"models": {"k": tiny_recipe(tiny_sources["qwen2"])}}
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--cores", "2", "--configfile", str(tmp_path / "recipe.yaml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    exported = tmp_path / "results/k/export"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (exported.is_dir() and any(exported.iterdir())):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job tree, mid-build, as a power loss would
    proc.wait()
    assert not (tmp_path / "results/k/manifest.json").exists()

    snakemake(tmp_path, recipe, "--unlock")  # Snakemake's own lock survives a kill -9; nothing else needs care
    snakemake(tmp_path, recipe)
    root = tmp_path / "results/k"
    manifest = json.loads((root / "manifest.json").read_text())
    from nitro.build.compile import sha256

    for rel, digest in manifest["files"].items():
        assert sha256(root / rel) == digest, rel
    assert not list(root.rglob("*.partial")), "scratch files left behind"
    assert planned_jobs(snakemake(tmp_path, recipe, "--dry-run")) == {}
