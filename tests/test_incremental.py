"""Incremental builds, checked through Snakemake itself: what reruns after a change, and after a kill."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, build_dir, tiny_recipe
from nitro.artifacts import verify
from nitro.testing import snakemake


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from a dry run's job table (empty when nothing is to be done)."""
    counts = {}
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M):
        if rule != "total":
            counts[rule] = int(count)
    return counts


WORKFLOW = ("Snakefile", "rules", "workflow", "config", "profiles", "nitro")


@dataclass
class Build:
    """A build made by a copy of the workflow and the package, which a test may edit."""

    work: Path
    code: Path
    recipe: dict

    def snakemake(self, recipe: dict | None = None, *args: str) -> subprocess.CompletedProcess:
        return snakemake(self.work, recipe or self.recipe, *args, snakefile=self.code / "Snakefile")

    def planned_jobs(self, recipe: dict | None = None) -> dict[str, int]:
        return planned_jobs(self.snakemake(recipe, "--dry-run"))


@pytest.fixture(scope="module")
def incremental_build(tmp_path_factory, tiny_sources) -> Build:
    """A tiny Llama built by a copy of the workflow and the package (in the build's folder), so that a test can
    edit the code a step runs. (Snakemake compares an input's content, not only its time: touching a file is
    not an edit.)"""
    work = build_dir(tmp_path_factory, "incremental")
    (work / "code").mkdir(exist_ok=True)
    for part in WORKFLOW:
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, work / "code" / part, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / part, work / "code" / part)
    recipe = {"models": {"m": tiny_recipe(tiny_sources["llama"], compression={"mode": "INT8_ASYM"})}}
    build = Build(work, work / "code", recipe)
    build.snakemake()
    return build


def test_second_run_does_nothing(incremental_build):
    result = incremental_build.snakemake(None, "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr
    assert planned_jobs(result) == {}


def changed_recipe(recipe: dict, model: str = "m", **settings) -> dict:
    changed = json.loads(json.dumps(recipe))
    changed["models"][model].update(settings)
    return changed


def test_one_chunk_compression_change_reruns_only_that_chunk(incremental_build):
    build, root = incremental_build, incremental_build.work / "results/m"
    changed = changed_recipe(build.recipe, compression={"mode": "INT8_ASYM",
                                                        "chunks": {"decoder_1": {"mode": "INT8_SYM"}}})
    assert build.planned_jobs(changed) == {"compress_chunk": 1, "compile_chunk": 1, "assemble": 1, "report": 1, "all": 1}
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.xml")}
    build.snakemake(changed)
    rewritten = {p.relative_to(root).parts[:2] for p, t in before.items()
                 if not p.exists() or p.stat().st_mtime_ns != t}
    assert rewritten == {("compressed", "decoder_1")}
    manifest = json.loads((root / "manifest.json").read_text())
    modes = {c["name"]: c["compression"]["mode"] for c in manifest["chunks"]}
    assert modes == {"embed": "INT8_ASYM", "decoder_0": "INT8_ASYM", "decoder_1": "INT8_SYM", "head": "INT8_ASYM"}
    build.snakemake()  # back to the module's recipe for the other tests


def test_evaluation_settings_rerun_what_reads_them(incremental_build):
    """A floor is checked by the final step alone; the held-out text's length changes the reference too."""
    build = incremental_build
    assert build.planned_jobs(changed_recipe(build.recipe, evaluate={"tokens": 64, "min_top1": 0.1})) == {
        "assemble": 1, "report": 1, "all": 1}
    assert build.planned_jobs(changed_recipe(build.recipe, evaluate={"tokens": 80})) == {
        "heldout_tokens": 1, "reference_chunk": 4, "assemble": 1, "report": 1, "all": 1}


def test_context_length_change_on_a_dynamic_build_reruns_only_the_assembly(incremental_build):
    """Dynamic graphs take any number of tokens and cache slots: max_seq_len and prefill_len are read by the
    runtime alone, through the manifest."""
    build = incremental_build
    changed = changed_recipe(build.recipe, max_seq_len=128, prefill_len=8)
    assert build.planned_jobs(changed) == {"assemble": 1, "report": 1, "all": 1}
    build.snakemake(changed)
    manifest = json.loads((build.work / "results/m/manifest.json").read_text())
    assert (manifest["max_seq_len"], manifest["prefill_len"]) == (128, 8)
    build.snakemake()


def test_context_length_change_on_a_static_build_reruns_what_reads_it(tiny_builds):
    """Static graphs: max_seq_len sizes the decoder chunks' cache inputs (not the embedding's or the head's);
    prefill_len the prefill graphs of the embedding and the decoder chunks (the head has only a decode graph)."""
    work = tiny_builds["llama_f32_static"].parents[1]
    recipe = yaml.safe_load((work / "recipe.yaml").read_text())
    only = {"models": {"llama_f32_static": recipe["models"]["llama_f32_static"]}}
    decoders = 2  # 5 layers in chunks of 3
    longer = changed_recipe(only, "llama_f32_static", max_seq_len=128)
    assert planned_jobs(snakemake(work, longer, "--dry-run")) == {
        "export_chunk": decoders, "compress_chunk": decoders, "compile_chunk": decoders, "assemble": 1, "report": 1,
        "all": 1, "reference_chunk": decoders + 1}  # the head's reference reads the last decoder's
    shorter_prefill = changed_recipe(only, "llama_f32_static", prefill_len=8)
    assert planned_jobs(snakemake(work, shorter_prefill, "--dry-run")) == {
        "export_chunk": decoders + 1, "compress_chunk": decoders + 1, "compile_chunk": decoders + 1, "assemble": 1,
        "report": 1, "all": 1, "reference_chunk": decoders + 2}


EVERY_CHUNK = {"export_chunk": 4, "reference_chunk": 4, "compress_chunk": 4, "compile_chunk": 4, "assemble": 1,
               "report": 1, "all": 1}


@pytest.mark.parametrize("module, jobs", [
    ("nitro/models/__init__.py", EVERY_CHUNK),  # imported by the export, by name only of its package
    ("nitro/models/llama.py", EVERY_CHUNK),  # imported by name (nitro.models.modules_for)
    ("nitro/build/source.py", {"source": 1, "heldout_tokens": 1, **EVERY_CHUNK}),  # the export imports its reader
    ("nitro/build/reference.py", {"reference_chunk": 4, "assemble": 1, "report": 1, "all": 1}),
    ("nitro/build/compress.py", {"compress_chunk": 4, "compile_chunk": 4, "assemble": 1, "report": 1, "all": 1}),
    ("nitro/build/compile.py", {"compile_chunk": 4, "assemble": 1, "report": 1, "all": 1}),
    ("nitro/runtime/model.py", {"assemble": 1, "report": 1, "all": 1}),  # the final step loads it as the runtime does
    ("nitro/build/report.py", {"report": 1, "all": 1}),
    ("nitro/runtime/generate.py", {}),  # no step runs it
    ("nitro/serve/app.py", {}),
])
def test_editing_a_module_reruns_the_steps_that_import_it(incremental_build, module, jobs):
    path = incremental_build.code / module
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit\n")
    try:
        assert incremental_build.planned_jobs() == jobs
    finally:
        path.write_bytes(original)


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
    assert verify(root, manifest["files"], remember=False) == []
    assert not list(root.rglob("*.partial")), "scratch files left behind"
    assert planned_jobs(snakemake(tmp_path, recipe, "--dry-run")) == {}
