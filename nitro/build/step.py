"""What every build step shares: atomic outputs and a log of its wall time and peak memory."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import time
import uuid
from pathlib import Path


def _scratch(path: Path) -> Path:
    """A unique hidden name beside `path` for it to be written under first. Created with open(..., "x") or mkdir,
    it gets the mode the umask gives (mkstemp and mkdtemp would make it private, 0600/0700, and so the output),
    so a model one user builds can be loaded or served by another."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.partial"


def write_json(path: Path, data) -> None:
    """Write JSON atomically: a reader (or a rerun after a kill) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(path)
    with open(tmp, "x") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Yield a scratch folder beside `final` that becomes `final` only if the block completes."""
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
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far: the kernel's high-water mark of its own address space.
    (getrusage's ru_maxrss would also count the parent that forked it, Snakemake itself, across exec.)"""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def logged_step(log: Path, step: str, **fields):
    """Time the block and record its peak RSS into `log` (JSON), alongside `fields` (e.g. declared mem_mb)."""
    start = time.perf_counter()
    extra: dict = {}
    yield extra
    write_json(
        log,
        {
            "step": step,
            "wall_s": round(time.perf_counter() - start, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            **fields,
            **extra,
        },
    )
