"""Cluster builds: the shipped executor profiles run the same workflow, job by job, as one machine does."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import OutputSettings, ResourceSettings

from conftest import REPO
from nitro.artifacts import sha256, verify
from nitro.testing import snakemake

PROFILES = REPO / "profiles"
MEASURED = {"wall_s", "compile_s", "load_s", "peak_rss_mb"}
PINNED = {"compile_chunk", "assemble"}  # write or load device-specific blobs: pinned to the device's partition


def ir_hashes(results: Path) -> dict[str, str]:
    """sha256 of every IR file of the exported and compressed chunks."""
    return {str(p.relative_to(results)): sha256(p) for stage in ("export", "compressed")
            for p in sorted((results / stage).rglob("*")) if p.suffix in (".xml", ".bin")}


def without_measurements(data):
    """`data` without the wall times and memory peaks a build measures, which no two runs share."""
    if isinstance(data, dict):
        return {k: without_measurements(v) for k, v in data.items() if k not in MEASURED}
    if isinstance(data, list):
        return [without_measurements(v) for v in data]
    return data


def expected_jobs(chunks: list[str]) -> set[tuple[str, str]]:
    """(rule, chunk) of every job of a one-model build; chunk is "" for the per-model rules."""
    per_chunk = {(rule, c) for rule in ("export_chunk", "reference_chunk", "compress_chunk", "compile_chunk")
                 for c in chunks}
    return {("source", ""), ("heldout_tokens", ""), ("assemble", ""), ("report", "")} | per_chunk


@pytest.fixture(scope="module")
def cluster_build(tmp_path_factory) -> Path:
    """The default recipe built from scratch through the cluster-generic profile: every job is submitted to
    profiles/cluster-generic/submit.sh, which runs it as its own detached process. Never cached: the point
    is that this run executes every job."""
    work = tmp_path_factory.mktemp("smollm2_cluster")
    snakemake(work, None, "--profile", str(PROFILES / "cluster-generic"))
    return work


def test_cluster_build_has_the_local_builds_ir_and_manifest(cluster_build, smollm2_builds):
    local, cluster = smollm2_builds["smollm2"], cluster_build / "results/smollm2"
    local_manifest, cluster_manifest = (json.loads((r / "manifest.json").read_text()) for r in (local, cluster))
    local_ir = ir_hashes(local)
    assert len(local_ir) == 2 * 2 * len(local_manifest["chunks"])  # every chunk's .xml and .bin, exported, compressed
    assert ir_hashes(cluster) == local_ir
    for manifest, root in ((local_manifest, local), (cluster_manifest, cluster)):
        assert verify(root, manifest["files"], remember=False) == []
    # All but measured times and memory peaks is the same, down to the smoke argmax and the hashes of the
    # compiled blobs: the same device on the same machine compiles the same IR to the same blob.
    assert without_measurements(cluster_manifest) == without_measurements(local_manifest)


def test_submit_script_ran_each_job_as_its_own_detached_process(cluster_build):
    jobs = sorted((cluster_build / ".snakemake/local_jobs").iterdir())
    records = [json.loads((job / "record.json").read_text()) for job in jobs]
    manifest = json.loads((cluster_build / "results/smollm2/manifest.json").read_text())
    chunks = [chunk["name"] for chunk in manifest["chunks"]]
    ran = [(r["job"]["rule"], r["job"]["wildcards"].get("chunk", "")) for r in records]
    assert sorted(ran) == sorted(expected_jobs(chunks))  # each job exactly once
    pids = [r["pid"] for r in records]
    assert len(set(pids)) == len(pids)
    for job, record in zip(jobs, records):
        assert record["session"] == record["pid"]  # leads its own session: detached from Snakemake
        assert int((job / "pid").read_text()) == record["pid"]  # the process submit.sh started
        assert (job / "exit").read_text().strip() == "0"


def test_compile_on_another_machine_from_the_copied_compressed_chunks(smollm2_builds, tmp_path):
    """README, "the device is your own machine": compressed/, reference/, tokenizer/ and logs/ copied from a build
    with their modification times (as `rsync -a` copies) are all that compiling the chunks and assembling need,
    when modification times do not trigger reruns (the checkout's code is newer than the copies)."""
    built, copied = smollm2_builds["smollm2"], tmp_path / "results/smollm2"
    for part in ("compressed", "reference", "tokenizer", "logs"):
        shutil.copytree(built / part, copied / part)
    result = snakemake(tmp_path, None, "--rerun-triggers", "params", "input", "code")
    ran = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.M))
    assert ran == {"compile_chunk", "assemble", "report", "all"}
    assert not (copied / "source").exists() and not (copied / "export").exists()
    manifest, local = (json.loads((r / "manifest.json").read_text()) for r in (copied, built))
    assert without_measurements(manifest) == without_measurements(local)


def dry_run_jobs(output: str) -> list[dict]:
    """Each job Snakemake's dry run lists: its rule, wildcards and resources."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output)[1:]:
        job = {"rule": re.match(r"(?:local)?rule (\w+):", block).group(1), "wildcards": {}, "resources": {}}
        for field in ("wildcards", "resources"):
            line = re.search(rf"^    {field}: (.*)$", block, re.M)
            if line:
                job[field] = dict(item.split("=", 1) for item in line.group(1).split(", "))
        jobs.append(job)
    return jobs


def rule_declarations(workdir: Path) -> dict:
    """What each rule that runs a command declares (Snakemake's record of the rule as written)."""
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(ResourceSettings(), snakefile=REPO / "Snakefile", workdir=workdir)._workflow
        return {rule.name: rule.ruleinfo for rule in workflow.rules if not rule.norun}


def test_slurm_dry_run_lists_every_job_with_its_declared_resources(tmp_path):
    result = snakemake(tmp_path, None, "--profile", str(PROFILES / "slurm"), "--dry-run")
    jobs = [job for job in dry_run_jobs(result.stdout) if job["rule"] != "all"]
    chunks = sorted({job["wildcards"]["chunk"] for job in jobs if "chunk" in job["wildcards"]})
    assert chunks == ["decoder_0", "decoder_1", "decoder_2", "embed", "head"]
    assert sorted((j["rule"], j["wildcards"].get("chunk", "")) for j in jobs) == sorted(expected_jobs(chunks))
    for job in jobs:
        assert int(job["resources"]["mem_mb"]) > 0 and int(job["resources"]["runtime"]) > 0, job
        assert (job["resources"].get("slurm_partition") == "npu") == (job["rule"] in PINNED), job

    declared = rule_declarations(tmp_path)
    assert {job["rule"] for job in jobs} <= set(declared)
    for name, info in declared.items():
        assert info.threads is not None, f"rule {name} declares no threads"
        resources = info.resources[1] if info.resources else {}
        assert {"mem_mb", "runtime"} <= set(resources), f"rule {name} lacks mem_mb or runtime"
