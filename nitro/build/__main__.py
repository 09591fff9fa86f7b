"""`python -m nitro.build STEP ...`: the command each Snakemake rule runs, one process per job, so every
job's memory is its own and is measured on its own."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
from pathlib import Path

from ..artifacts import DiskFull, free_mb, peak_rss_mb, write_json
from . import STEPS


@contextlib.contextmanager
def logged_step(args):
    """Run the block as the step `args` describes: refused at once when its file system has less free space than
    the rule declared; its wall time, peak RSS and the bytes it wrote recorded into its log (JSON) beside what
    the rule declared. A disk that fills while it runs ends it with one line saying so (its partial output is
    gone: rerun it once there is space)."""
    where = f"{args.step}{f' {args.chunk}' if args.chunk else ''}"
    folder = args.out.parent
    folder.mkdir(parents=True, exist_ok=True)
    if args.disk_mb and free_mb(folder) < args.disk_mb:
        sys.exit(f"{where}: not started: it writes about {args.disk_mb} MB, and {folder}'s file system has "
                 f"{free_mb(folder):.0f} MB free; free some space and run snakemake again")
    start = time.perf_counter()
    try:
        yield
    except DiskFull as exc:
        sys.exit(f"{where}: {exc.strerror}; it writes about {args.disk_mb} MB, and {free_mb(folder):.0f} MB are "
                 "free now that its partial output is gone; free some space and run snakemake again")
    write_json(args.log, {"step": args.step, "chunk": args.chunk, "wall_s": round(time.perf_counter() - start, 3),
                          "peak_rss_mb": round(peak_rss_mb(), 1), "mem_mb": args.mem_mb,
                          "written_mb": round(written_bytes(args.out) / 2**20, 2), "disk_mb": args.disk_mb})


def written_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nitro.build")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("--params", type=json.loads, required=True, help="the step's settings as JSON")
    parser.add_argument("--input", type=Path, help="the previous step's output folder")
    parser.add_argument("--activations", type=Path, help="what the previous chunk gave on a token set: the input "
                                                          "of the reference, activations and data-aware compress steps")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="JSON log: wall time, peak RSS, bytes written")
    parser.add_argument("--mem-mb", type=int, help="the memory the rule declared, recorded beside the peak")
    parser.add_argument("--disk-mb", type=int, help="the disk space the rule declared: checked free before the "
                                                    "step starts, recorded beside what it wrote")
    parser.add_argument("--chunk", default=None, help="the chunk a per-chunk step works on, for its log")
    args = parser.parse_args(argv)
    with logged_step(args):
        importlib.import_module(STEPS[args.step]).run(args)


if __name__ == "__main__":
    main()
