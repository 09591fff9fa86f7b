"""`python -m nitro.build STAGE ...`: the command each Snakemake rule runs, one process per job, so every
job's memory is its own and is measured on its own."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .step import logged_step


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nitro.build")
    parser.add_argument("stage", choices=("source", "export", "compress", "warmup", "compile"))
    parser.add_argument("--params", type=json.loads, required=True, help="the stage's settings as JSON")
    parser.add_argument("--input", type=Path, help="the previous stage's output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True, help="JSON log: wall time and peak RSS")
    parser.add_argument("--mem-mb", type=int, help="the memory the rule declared, recorded beside the peak")
    parser.add_argument("--chunk", default=None)
    parser.add_argument("--logs", type=Path, nargs="*", default=[], help="compile: the other steps' logs")
    args = parser.parse_args(argv)
    p = args.params

    with logged_step(args.log, args.stage, chunk=args.chunk, mem_mb=args.mem_mb):
        if args.stage == "source":
            from .recipe import Source
            from .source import materialise

            materialise(Source(**p["source"]), args.out, Path(p["tokenizer_out"]))
        elif args.stage == "export":
            from .export import export_chunk

            export_chunk(args.input, p, args.out)
        elif args.stage == "compress":
            from .compress import compress_chunk

            compress_chunk(args.input, p, args.out)
        elif args.stage == "warmup":
            from .warmup import warmup_chunk

            warmup_chunk(args.input, p, args.out)
        else:
            from .compile import compile_model

            compile_model(args.out.parent, p["recipe"], p["chunks"], args.logs)


if __name__ == "__main__":
    main()
