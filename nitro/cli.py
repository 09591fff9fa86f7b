"""`nitro`: the command line. Each subcommand lives in nitro/commands/; this file routes to it and turns the
errors a user can fix into one line on stderr and exit status 1."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

SUBCOMMANDS = {
    "generate": "generate a completion for a prompt, streamed",
    "chat": "chat with a built model in the terminal",
    "bench": "measure TTFT, decode speed, load time and memory of a built model",
    "serve": "serve built models over an OpenAI-compatible HTTP API, with a chat page at /",
    "verify": "check a build's files against its manifest (size and sha256)",
    "info": "show a build's chunks, compression, accuracy on held-out text and build steps",
}


def main(argv=None) -> int:
    from .artifacts import ArtifactError

    parser = argparse.ArgumentParser(prog="nitro",
                                     description="Run, benchmark and serve models built by the NITRO workflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, help_text in SUBCOMMANDS.items():
        modules[name] = importlib.import_module(f"nitro.commands.{name}")
        modules[name].add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        status = modules[args.command].run(args)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at exit
        return status
    except (ArtifactError, ValueError) as exc:  # a missing build, a bad option, a prompt that cannot fit
        print(f"nitro {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader is gone (`nitro info ROOT | head -1`): stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        return 1


if __name__ == "__main__":
    sys.exit(main())
