"""Trust what is loaded and what is served: files checked against the manifest at load and by `nitro verify`, a
full disk during a build, and a server that keeps answering while its build is replaced, then reloads it."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import nitro, one_line_error, start_server, tiny_recipe, wait_until_ready
from nitro import artifacts
from nitro.runtime import Model
from nitro.runtime.generate import Generator
from nitro.runtime.sampling import SamplingParams
from nitro.testing import make_checkpoint, snakemake


@pytest.fixture
def copy(tiny_builds, tmp_path) -> Path:
    root = tmp_path / "results/copy"
    shutil.copytree(tiny_builds["llama_f32"], root)
    return root


def flip_a_byte(path: Path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", ["compiled/decoder_1/dynamic.blob", "compressed/decoder_1/model.bin"])
def test_a_flipped_byte_is_refused_at_load_and_found_by_verify(copy, damaged):
    path = copy / damaged
    flip_a_byte(path)
    assert one_line_error(nitro("generate", copy, "Hello", "--max-new-tokens", 4), "generate").startswith(
        f"{path} does not match the manifest (sha256 ")
    files = json.loads((copy / "manifest.json").read_text())["files"]
    verified = nitro("verify", copy)
    assert verified.returncode == 1
    assert verified.stdout.splitlines() == [
        f"{path} does not match the manifest (sha256 {files[damaged]['sha256'][:16]}...): it changed after the "
        f"build; delete {path.parent} and {copy / 'manifest.json'}, then run snakemake again where the build was "
        "made, which builds them again",
        f"{copy}: {len(files) - 1} of {len(files)} files match the manifest"]
    if damaged.endswith(".bin"):  # not read at run time: without the hash check the build loads
        assert nitro("generate", copy, "Hello", "--max-new-tokens", 4, "--no-hash-check").returncode == 0


def test_the_hint_rebuilds_a_damaged_build(tmp_path, tiny_sources):
    """Snakemake rebuilds neither a changed file inside an output folder nor a missing output whose dependents
    are up to date ("Nothing to be done"): what the refusal says to delete makes it rebuild just that."""
    recipe = {"models": {"m": tiny_recipe(tiny_sources["qwen2"])}}
    snakemake(tmp_path, recipe)
    root = tmp_path / "results/m"
    flip_a_byte(root / "compressed/decoder_0/model.bin")
    shutil.rmtree(root / "compiled/head")
    refused = nitro("verify", root).stdout.splitlines()
    dry_run = snakemake(tmp_path, recipe, "--dry-run")
    assert len(refused) == 3 and "Nothing to be done" in dry_run.stdout + dry_run.stderr
    for line in refused[:2]:
        for path in filter(None, re.search(r"; delete (\S+)(?: and (\S+),)?", line).groups()):
            if Path(path).is_dir():
                shutil.rmtree(path)
            else:
                Path(path).unlink(missing_ok=True)
    snakemake(tmp_path, recipe)
    assert nitro("verify", root).returncode == 0


def test_a_truncated_file_is_refused_by_its_size_even_without_hashes(copy):
    path = copy / "compiled/head/decode.blob"
    path.write_bytes(path.read_bytes()[:-1])
    size = path.stat().st_size
    assert one_line_error(nitro("generate", copy, "Hello", "--no-hash-check"), "generate").startswith(
        f"{path} has {size} bytes, the manifest {size + 1}: it changed after the build; delete {path.parent}")


def test_a_verified_build_is_not_hashed_again(copy, monkeypatch, tmp_path):
    monkeypatch.setattr(artifacts, "VERIFIED", tmp_path / "verified.json")
    hashed = []
    real = artifacts.sha256
    monkeypatch.setattr(artifacts, "sha256", lambda path: hashed.append(path) or real(path))
    files = json.loads((copy / "manifest.json").read_text())["files"]
    Model(copy)
    assert len(hashed) == len(files)
    Model(copy)
    assert len(hashed) == len(files)  # remembered by size and modification time
    os.utime(copy / "compiled/embed/dynamic.blob")  # rewritten, as far as anyone can tell: hashed again
    Model(copy)
    assert len(hashed) == len(files) + 1


def mount_tmpfs(folder: Path, size_mb: int):
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}M", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a small file system here (needs root): {result.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    """A build folder whose results/ is a 120 MB file system of its own: the tiny Llama's float32 build (two
    33 MB vocabulary tables in each of source, export, compressed and compiled) does not fit in it."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, 120)
    (tmp_path / "work").mkdir()
    (tmp_path / "work/results").symlink_to(disk)
    yield tmp_path / "work", disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("declared", ["as the recipe says", "too small"])
def test_a_full_disk_fails_cleanly_and_the_rerun_completes_with_the_same_files(small_disk, tiny_sources, tiny_builds,
                                                                               declared):
    """As declared, a step that would not fit is refused before it starts; with a declaration too small to
    say so (--set-resources), the disk fills while it writes. Either way one line names the step and the space
    it needs, nothing partial is left, and after the disk grows the rerun builds the same files as a build that
    never ran out of space."""
    work, disk = small_disk
    recipe = {"models": {"llama_f32": tiny_recipe(tiny_sources["llama"], inference_precision="f32")}}
    options = [] if declared == "as the recipe says" else ["--set-resources", *(
        f"{rule}:disk_mb=1" for rule in ("source", "heldout_tokens", "export_chunk", "reference_chunk", "compress_chunk",
                                     "compile_chunk"))]
    result = snakemake(work, recipe, *options, check=False)
    assert result.returncode == 1
    expected = "not started: it writes about" if not options else "no space left on the file system of"
    failed = [line for line in result.stderr.splitlines() if expected in line]
    assert failed, result.stderr[-3000:]
    print(failed[0])
    assert "free some space and run snakemake again" in failed[0] and "Traceback" not in result.stderr
    assert not [p for p in disk.rglob("*") if ".partial" in p.name]
    assert not (disk / "llama_f32/manifest.json").exists()

    subprocess.run(["mount", "-o", "remount,size=1G", str(disk)], check=True)
    snakemake(work, recipe)
    built, reference = (json.loads((root / "manifest.json").read_text())["files"]
                        for root in (disk / "llama_f32", tiny_builds["llama_f32"]))
    assert built == reference


def test_declared_disk_bounds_what_each_step_wrote(tiny_builds, smollm2_builds):
    for root in [*tiny_builds.values(), *smollm2_builds.values()]:
        for log in (json.loads(p.read_text()) for p in (root / "logs").rglob("*.json")):
            assert log["written_mb"] <= log["disk_mb"], (root.name, log)


def test_a_rebuild_while_serving_then_a_reload_serves_the_new_build_with_no_failed_request(tmp_path, tiny_sources):
    """The server answers from the build it loaded while a rebuild (from other weights) replaces every file,
    then SIGHUP makes it load the new one; a client asking all along gets no error, first the old answer, at the
    end the new build's."""
    work, other = tmp_path / "work", make_checkpoint(tmp_path / "other", "llama", seed=1)
    recipe = {"models": {"m": tiny_recipe(tiny_sources["llama"])}}
    snakemake(work, recipe)
    root = work / "results/m"
    prompt, params = "The weather outside is", SamplingParams(max_new_tokens=8)

    def runtime_answer() -> str:
        gen = Generator(Model(root))
        return gen.generate(gen.encode(prompt), params).text

    old = runtime_answer()
    server = start_server(root, tmp_path / "server.log")
    answers, stop = [], threading.Event()

    def ask_all_along():
        while not stop.is_set():
            response = httpx.post(f"{server.url}/v1/completions", timeout=120,
                                  json={"model": "m", "prompt": prompt, "max_tokens": 8})
            answers.append((response.status_code, response.json()["choices"][0]["text"]
                            if response.status_code == 200 else response.text))

    try:
        wait_until_ready(server)
        first_build = httpx.get(f"{server.url}/health").json()["models"]["m"]["build"]
        asker = threading.Thread(target=ask_all_along)
        asker.start()
        snakemake(work, {"models": {"m": tiny_recipe(other)}})
        new = runtime_answer()
        assert new != old
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while httpx.get(f"{server.url}/health").json()["models"]["m"]["build"] == first_build:
            assert time.monotonic() < deadline, server.log.read_text()[-3000:]
            time.sleep(0.2)
        asked_before = len(answers)
        while len(answers) < asked_before + 3:
            time.sleep(0.2)
        stop.set()
        asker.join()
    finally:
        server.process.terminate()
        server.process.wait(60)
    print(f"{len(answers)} answers while rebuilding and reloading")
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    texts = [text for _, text in answers]
    assert texts[0] == old and texts[-1] == new and set(texts) == {old, new}
    assert "reloaded" in server.log.read_text()
