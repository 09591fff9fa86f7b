"""The contract between the build and the runtime, in one place: the folders of a built model, the names of its
graphs' inputs and outputs, the manifest that ties them together, and how every file is written.

The build (nitro/build/, run by the Snakemake rules) writes through this module and the runtime (nitro/runtime/,
nitro/serve/) reads through it; neither imports the other. A built model is a folder `results/<name>/`:

    manifest.json            what the runtime loads: the Manifest below
    report.html              the build's report page (nitro/build/report.py), which `snakemake --report` embeds
    tokenizer/               tokenizer, chat template and generation config (read by the runtime)
    compiled/<chunk>/        one compiled blob per graph variant + meta.json (read by the runtime)
    compressed/<chunk>/      NNCF-compressed IR + meta.json (what `compiled/` is compiled from; an NPU blob is
                             weightless and reads its weights from this IR's .bin at run time)
    export/<chunk>/          uncompressed IR + meta.json
    reference/               the held-out tokens (tokens.npy) and what the uncompressed chunks make of them
                             (<chunk>.npy: each chunk's output; the head's as log-probabilities), for evaluation
    calibration/             with data-aware compression: the calibration tokens (tokens.npy) and each
                             uncompressed chunk's output on them (<chunk>.npy), the input of the chunk after it
    source/                  the checkpoint as a Hugging Face folder + tensor_index.json
    logs/                    every step's wall time and peak RSS: source.json, <stage>/<chunk>.json, assemble.json

Chunks are `embed`, `decoder_0`..`decoder_N` and `head`. Their graphs (variants) are `prefill` and `decode` in a
static build, one `dynamic` graph in a dynamic one; the head has only `decode`. A chunk's IR (model.xml and
model.bin) holds all its variants' graphs on one copy of the weights (see nitro/build/graphs.py).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import shutil
import uuid
from pathlib import Path
from typing import TypedDict

MANIFEST = "manifest.json"
REPORT = "report.html"
META = "meta.json"  # a chunk folder's own description (chunk, variants, compression, device)
CHUNK_XML = "model.xml"  # a chunk's IR in export/ and compressed/, every variant in it

# Stage folders of a built model, in the order the workflow writes them.
SOURCE, EXPORT, REFERENCE, COMPRESSED, COMPILED = "source", "export", "reference", "compressed", "compiled"
CALIBRATION = "calibration"
TOKENS = "tokens.npy"  # in REFERENCE and CALIBRATION: token ids [samples, tokens] (held-out: one sample)
TOKENIZER, LOGS = "tokenizer", "logs"
TENSOR_INDEX = "tensor_index.json"  # in SOURCE: tensor name -> safetensors file holding it

# Graph variants.
PREFILL, DECODE, DYNAMIC = "prefill", "decode", "dynamic"

# Graph inputs and outputs. Embedding: INPUT_IDS [1,T] -> HIDDEN [1,T,D]. Decoder chunk: HIDDEN, POSITION_IDS [1,T]
# and past_name(kind, layer) [1,KV,slots,hd] per layer -> HIDDEN and KV [2*layers,KV,T,hd] (layer j's new keys at
# 2j, its values at 2j+1). Head: HIDDEN [1,1,D] -> LOGITS [1,1,V].
INPUT_IDS, HIDDEN, POSITION_IDS, KV, LOGITS = "input_ids", "x", "position_ids", "kv", "logits"


def past_name(kind: str, layer: int) -> str:
    """A decoder chunk's cache input for layer `layer`'s keys (kind "key") or values ("value")."""
    return f"past_{kind}.{layer}"


def is_past(name: str) -> bool:
    return name.startswith("past_")


def with_tokens(name: str, shape, size: int) -> list[int]:
    """A graph input's shape with its token axis set to `size` (-1: open): a cache input's slot axis (past K/V
    [1,KV,slots,hd]), every other input's axis 1 ([1,T,...])."""
    shape = list(shape)
    shape[2 if is_past(name) else 1] = size
    return shape


def device_core(device: dict):
    """An OpenVINO Core for the manifest's device: with the properties it sets on the devices it delegates to
    (`host_properties`, e.g. the CPU under an NPU emulated by NPUW), which OpenVINO applies when a blob is
    compiled or imported, not from the blob."""
    import openvino as ov

    core = ov.Core()
    for name, properties in device.get("host_properties", {}).items():
        core.set_property(name, properties)
    return core


def chunk_file(stage: str, chunk: str, name: str) -> str:
    """A file of a chunk's stage folder, relative to the model's folder (as the manifest names files)."""
    return f"{stage}/{chunk}/{name}"


# The steps run once per chunk, in order; their logs, the source's and the held-out text's are the manifest's
# `steps`.
CHUNK_STEPS = ("export", "reference", "compress", "compile")


def log_file(step: str, chunk: str | None = None) -> str:
    """A step's log, relative to the model's folder."""
    return f"{LOGS}/{step}.json" if chunk is None else f"{LOGS}/{step}/{chunk}.json"


class Port(TypedDict):
    shape: list[int]  # -1 where the axis is open (dynamic graphs)
    type: str  # OpenVINO element type name, e.g. "f32", "i64"


class Variant(TypedDict):
    blob: str  # the compiled graph, relative to the model's folder
    properties: dict  # OpenVINO properties its import needs besides the manifest's device properties
    inputs: dict[str, Port]
    outputs: dict[str, Port]
    compile_s: float


class Chunk(TypedDict):
    name: str
    kind: str  # "embed" | "decoder" | "head"
    first_layer: int
    num_layers: int
    compression: dict  # the NNCF settings it was compressed with
    xml: str  # the compressed IR its blobs were compiled from, relative to the model's folder
    weights: str | None  # that IR's .bin when the blobs are weightless and read it at import, else None
    variants: dict[str, Variant]


def layer_span(chunk: Chunk) -> str:
    """A decoder chunk's layers as "first-last"; "" for the embedding and the head."""
    if chunk["kind"] != "decoder":
        return ""
    return f"{chunk['first_layer']}-{chunk['first_layer'] + chunk['num_layers'] - 1}"


def compression_settings(chunk: Chunk) -> str:
    """The chunk's compression settings besides its mode, as "key value, ..." ("" when there are none)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(chunk["compression"].items()) if k != "mode")


class FileRecord(TypedDict):
    bytes: int
    sha256: str


class Manifest(TypedDict):
    """manifest.json: everything the runtime needs besides the files it names."""

    name: str  # the model's name in the recipe
    family: str  # "llama" | "qwen2"
    spec: dict  # nitro.models.ModelSpec as a dict: vocab_size, hidden_size, num_kv_heads, head_dim, ...
    settings: dict  # the recipe as validated, defaults filled in; compression is in each chunk's record
    calibration: dict | None  # with data-aware chunks: the calibration text, samples, tokens a sample, the chunks
    source: dict  # the resolved source: kind, location
    max_seq_len: int  # KV cache slots
    prefill_len: int  # tokens per prefill call
    shapes: str  # "static" | "dynamic"
    device: dict  # {"device": "CPU", "properties": {...}, optionally "host_properties": {"CPU": {...}}}: how every
    # blob was compiled and is imported (see device_core)
    kv_precision: str  # "f32" | "f16" | "bf16": the cache's element type at the graph boundary
    tokenizer: str  # the tokenizer folder, relative to the model's folder
    eos_token_ids: list[int]
    chunks: list[Chunk]  # in execution order: embed, decoders, head
    files: dict[str, FileRecord]  # every file the runtime reads, and the IR behind each blob
    versions: dict[str, str | None]  # package versions that built it; blobs load only on the same OpenVINO
    steps: list[dict]  # every step's log: step, chunk, wall_s, peak_rss_mb, mem_mb (declared)
    smoke: dict  # the final load: input_ids, argmax, load_s, peak_rss_mb
    evaluation: dict  # on the held-out tokens: perplexity, and top-1 agreement and KL against the reference


class ArtifactError(RuntimeError):
    """The built artifacts are missing, or cannot be loaded here."""


def read_manifest(root: Path) -> Manifest:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{path} not found: build the model first (snakemake --cores 2)")
    return json.loads(path.read_text())


def write_manifest(root: Path, manifest: Manifest) -> None:
    write_json(Path(root) / MANIFEST, manifest)


def _scratch(path: Path) -> Path:
    """A unique hidden name beside `path` for it to be written under first. Created with open(..., "x") or mkdir,
    it gets the mode the umask gives (mkstemp and mkdtemp would make it private, 0600/0700, and so the output),
    so a model one user builds can be loaded or served by another."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"


@contextlib.contextmanager
def _atomic_file(path: Path, mode: str):
    """An open scratch file beside `path` that becomes `path` once the block completes; a disk that fills raises
    DiskFull, as atomic_dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(path)
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)
    except OSError as exc:
        if _out_of_space(exc, path.parent):
            raise DiskFull(errno.ENOSPC, f"no space left on the file system of {path.parent} while writing "
                                         f"{path.name}") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    """Write JSON atomically: a reader (or a rerun after a kill) never sees half a file."""
    with _atomic_file(path, "x") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically, as write_json."""
    with _atomic_file(path, "xb") as f:
        f.write(text.encode())


def write_array(path: Path, array) -> None:
    """Write a numpy array (.npy) atomically, as write_json."""
    import numpy as np

    with _atomic_file(path, "xb") as f:
        np.save(f, array)


class DiskFull(OSError):
    """An output did not fit on its file system; nothing of it was kept."""


def _out_of_space(exc: Exception, folder: Path) -> bool:
    """Whether a write into `folder` failed for want of space: ENOSPC, or a library's own write error that drops
    the errno (OpenVINO's save_model says "iostream error") on a file system that is full or was (a job running
    beside this one may have freed some space since)."""
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return True
    return "iostream error" in str(exc) or os.statvfs(folder).f_bavail == 0


def free_mb(folder: Path) -> float:
    """Space the file system holding `folder` has left for this process's user."""
    return shutil.disk_usage(folder).free / 2**20


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a scratch folder beside `final` that becomes `final` only if the block completes. A block that fails
    because the disk filled (ENOSPC, or a library's own I/O error while no space is left) raises DiskFull."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.partial"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    scratch = _scratch(final)
    scratch.mkdir()
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    except Exception as exc:
        if _out_of_space(exc, scratch):
            raise DiskFull(errno.ENOSPC, f"no space left on the file system of {final.parent} while writing "
                                         f"{final.name}") from exc
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> FileRecord:
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


# Files whose hash matched the manifest, by absolute path -> [bytes, mtime_ns, sha256]: a file unchanged since (same
# size and modification time) is not read again, so a second load of a verified build costs a stat per file.
VERIFIED = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nitro" / "verified.json"


def verify(root: Path, files: dict[str, FileRecord], hashes: bool = True, remember: bool = True) -> list[str]:
    """What does not match the manifest's `files` in the build `root`, one line per file (an empty list when all
    do): a file missing, of another size, or (with `hashes`) of another sha256. With `remember`, hashes that
    matched are remembered in VERIFIED and not computed again while the file keeps its size and time."""
    root = Path(root).resolve()
    known = json.loads(VERIFIED.read_text()) if remember and hashes and VERIFIED.is_file() else {}
    problems, verified = [], {}
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            gone = path if path.parent.is_dir() else path.parent  # a whole folder is reported once
            message = f"{gone} is missing; {rebuild_hint(root, path.parent if gone == path else None)}"
            if message not in problems:
                problems.append(message)
            continue
        stat = path.stat()
        if stat.st_size != expected["bytes"]:
            problems.append(f"{path} has {stat.st_size} bytes, the manifest {expected['bytes']}: it changed after "
                            f"the build; {rebuild_hint(root, path.parent)}")
            continue
        if not hashes:
            continue
        seen = [stat.st_size, stat.st_mtime_ns, expected["sha256"]]
        if known.get(str(path)) != seen:
            if sha256(path) != expected["sha256"]:
                problems.append(f"{path} does not match the manifest (sha256 {expected['sha256'][:16]}...): it "
                                f"changed after the build; {rebuild_hint(root, path.parent)}")
                continue
            verified[str(path)] = seen
    if verified and remember:
        with contextlib.suppress(OSError):  # a read-only home: verify again next time
            write_json(VERIFIED, {**known, **verified})
    return problems


def rebuild_hint(root: Path, folder: Path | None = None) -> str:
    """How to get a build's damaged `folder` (or, with none, its missing files) back. Snakemake rebuilds neither
    a changed file inside an output folder nor a missing output whose dependents are up to date; with the
    manifest gone, it rebuilds the final step and whatever it needs that is missing."""
    manifest = Path(root) / MANIFEST
    if folder is None:
        return f"delete {manifest} and run snakemake again where the build was made (it rebuilds what is missing)"
    return f"delete {folder} and {manifest}, then run snakemake again where the build was made, which builds them again"


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory: the kernel's high-water mark of its own address space (VmHWM). Not
    getrusage's ru_maxrss, which a process started by fork and exec (a Snakemake job, a subprocess) inherits from
    its parent's peak. 0 for a process that has exited; ru_maxrss for this process where there is no /proc."""
    status = Path(f"/proc/{pid}/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0  # a zombie: exited, memory released
    if pid == "self":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return 0.0
