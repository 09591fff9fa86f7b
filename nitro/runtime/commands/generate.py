"""`nitro generate ROOT PROMPT`: stream a completion of PROMPT to stdout, then a summary line to stderr."""
from __future__ import annotations

import sys

from . import add_common_arguments, fail, load_generator, print_stream, sampling_params, summary


def add_arguments(parser):
    add_common_arguments(parser, max_new_tokens=128)
    parser.add_argument("prompt", help="the text to continue")


def run(args) -> int:
    from ..model import ArtifactError

    try:
        params = sampling_params(args)
        gen = load_generator(args.root)
        stream = gen.stream(gen.encode(args.prompt), params)
    except (ArtifactError, ValueError) as exc:  # a missing build, bad options, or a prompt that cannot fit
        return fail("generate", exc)
    if not print_stream(stream):
        return 130
    print(summary(stream.completion), file=sys.stderr)
    return 0
