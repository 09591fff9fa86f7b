"""`python -m nitro.build STEP ...`: the command each Snakemake rule runs, one process per job, so every
job's memory is its own and is measured on its own."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import time
from pathlib import Path

from ..artifacts import peak_rss_mb, write_json
from . import STEPS


@contextlib.contextmanager
def logged_step(log: Path, step: str, **fields):
    """Time the block and record its peak RSS into `log` (JSON), alongside `fields` (e.g. declared mem_mb)."""
    start = time.perf_counter()
    yield
    write_json(log, {"step": step, "wall_s": round(time.perf_counter() - start, 3),
                     "peak_rss_mb": round(peak_rss_mb(), 1), **fields})


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nitro.build")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--params", type=json.loads, required=True, help="the step's settings as JSON")
    parser.add_argument("--input", type=Path, help="the previous step's output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="JSON log: wall time and peak RSS")
    parser.add_argument("--mem-mb", type=int, help="the memory the rule declared, recorded beside the peak")
    parser.add_argument("--chunk", default=None, help="the chunk a per-chunk step works on, for its log")
    args = parser.parse_args(argv)
    with logged_step(args.log, args.step, chunk=args.chunk, mem_mb=args.mem_mb):
        importlib.import_module(STEPS[args.step]).run(args)


if __name__ == "__main__":
    main()
