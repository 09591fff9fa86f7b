"""`nitro verify ROOT`: check every file of a build against its manifest (size and sha256), and say which
do not match and how to rebuild them."""
from __future__ import annotations

from . import add_model_argument


def add_arguments(parser):
    add_model_argument(parser, loads=False)


def run(args) -> int:
    from ..artifacts import read_manifest, verify

    files = read_manifest(args.root)["files"]
    problems = verify(args.root, files, remember=False)
    for problem in problems:
        print(problem)
    print(f"{args.root}: {len(files) - len(problems)} of {len(files)} files match the manifest")
    return 1 if problems else 0
