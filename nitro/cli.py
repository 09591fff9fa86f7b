"""`nitro`: the command line. Each subcommand lives in the module that implements it; this file only routes.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`, and imports its heavy
dependencies inside `run`, so `nitro --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "generate": ("nitro.runtime.commands.generate", "generate a completion for a prompt, streamed"),
    "chat": ("nitro.runtime.commands.chat", "chat with a built model in the terminal"),
    "bench": ("nitro.runtime.bench", "measure TTFT, decode speed, load time and memory of a built model"),
    "serve": ("nitro.serve.server", "serve a built model over an OpenAI-compatible HTTP API"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nitro",
                                     description="Run, benchmark and serve models built by the NITRO workflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        modules[name] = importlib.import_module(module)
        modules[name].add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
