"""`nitro generate ROOT PROMPT`: stream a completion of PROMPT to stdout, then a summary line to stderr."""
from __future__ import annotations

import sys

from . import add_model_argument, add_sampling_arguments, load_generator, print_stream, sampling_params


def add_arguments(parser):
    add_model_argument(parser)
    parser.add_argument("prompt", help="the text to continue")
    add_sampling_arguments(parser, max_new_tokens=128)


def run(args) -> int:
    params = sampling_params(args)
    gen = load_generator(args)
    stream = gen.stream(gen.encode(args.prompt), params)
    if not print_stream(stream):
        return 130
    print(stream.completion.summary(), file=sys.stderr)
    return 0
