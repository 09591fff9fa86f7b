"""The `nitro` subcommands (generate, chat, bench, serve) and what they share: the model argument, the sampling
options and their mapping to SamplingParams, loading with a progress bar, streaming to the terminal.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`, and imports its heavy dependencies
inside `run`, so `nitro --help` stays fast. An error the user can fix (a missing build, a bad option, a prompt
that does not fit) is raised as ArtifactError or ValueError and printed by nitro/cli.py as one line.
"""
from __future__ import annotations

import sys
from pathlib import Path

DRAFT_TOKENS = 4  # --draft-tokens' default


def add_model_argument(parser, loads: bool = True):
    parser.add_argument("root", type=Path,
                        help="a built model: the folder holding manifest.json, e.g. results/smollm2")
    if loads:
        parser.add_argument("--no-hash-check", dest="check_hashes", action="store_false",
                            help="check only that the build's files are there with their sizes, not their sha256 "
                                 "(a hash checked once is remembered while the file keeps its size and time)")


def add_sampling_arguments(parser, max_new_tokens: int):
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"most tokens generated per answer (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 (the default) is greedy decoding")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="sample within this probability mass (nucleus)")
    parser.add_argument("--min-p", type=float, default=0.0,
                        help="sample among tokens at least this share of the likeliest one's probability (0: off)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="divide the scores of tokens already in the text by this (1: off)")
    parser.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop when this text is generated (repeatable); it is not printed")
    parser.add_argument("--prompt-lookup", type=int, default=0, metavar="N",
                        help="greedy only: guess N next tokens from where the last ones occur earlier in the text "
                             "and check them in one call; the same text, faster when the answer repeats its prompt "
                             "(0: off)")
    parser.add_argument("--draft-model", type=Path, default=None, metavar="ROOT",
                        help="greedy only: a smaller build with the same tokenizer (e.g. Llama 3.2 1B for Llama 3.1 "
                             "8B) guesses the next tokens, checked in one call of this model; the same text, faster "
                             "as far as the two agree")
    parser.add_argument("--draft-tokens", type=int, default=None, metavar="N",
                        help=f"with --draft-model: tokens it guesses a call (default {DRAFT_TOKENS})")


def sampling_params(args):
    from ..runtime.sampling import SamplingParams

    return SamplingParams.from_temperature(
        args.temperature, max_new_tokens=args.max_new_tokens, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, seed=args.seed, stop=args.stop,
        prompt_lookup=args.prompt_lookup, draft_tokens=draft_tokens(args),
    )


def draft_tokens(args) -> int:
    if args.draft_tokens is not None and not args.draft_model:
        raise ValueError(f"--draft-tokens {args.draft_tokens} goes with --draft-model ROOT")
    if not args.draft_model:
        return 0
    return DRAFT_TOKENS if args.draft_tokens is None else args.draft_tokens


def load_generator(root, check_hashes: bool = True, draft_model: Path | None = None):
    """The build in `root` loaded, with the build in `draft_model` beside it to draft for it."""
    from ..runtime.generate import Generator
    from ..runtime.model import Model

    draft = draft_model and Model(draft_model, progress=True, check_hashes=check_hashes)
    return Generator(Model(root, progress=True, check_hashes=check_hashes), draft_model=draft)


def print_stream(stream) -> bool:
    """Write the text deltas to stdout as they come, then a newline. False when Ctrl-C stopped it."""
    try:
        for delta in stream:
            sys.stdout.write(delta)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return False
    finally:
        print()
    return True
