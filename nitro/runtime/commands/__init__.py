"""What the `nitro generate` and `nitro chat` commands share: sampling options, loading with a progress bar,
the per-answer summary line and error reporting. Heavy imports stay inside functions (see nitro/cli.py)."""
from __future__ import annotations

import sys


def add_common_arguments(parser, max_new_tokens: int):
    parser.add_argument("root", help="a built model: the folder holding manifest.json, e.g. results/smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"most tokens generated per answer (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sampling temperature; 0 (the default) is greedy decoding")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="sample within this probability mass (nucleus)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="divide the scores of tokens already in the text by this (1: off)")
    parser.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop when this text is generated (repeatable); it is not printed")


def sampling_params(args):
    from ..sampling import SamplingParams

    if args.temperature < 0:
        raise ValueError(f"--temperature {args.temperature}: must be >= 0 (0 is greedy)")
    return SamplingParams(
        max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0, temperature=args.temperature or 1.0,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
        stop=args.stop,
    )


def loading_bar(chunks):
    """Model(progress=...): a progress bar over the chunks being loaded, shown on a terminal only."""
    from tqdm import tqdm

    return tqdm(chunks, desc="loading chunks", unit="chunk", leave=False, disable=None)


def load_generator(root):
    from ..generate import Generator
    from ..model import Model

    return Generator(Model(root, progress=loading_bar))


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


def summary(completion, context: str = "") -> str:
    """One line: prompt tokens (and how many were actually prefilled), new tokens, TTFT, decode speed."""
    c = completion
    cached = c.prompt_tokens - c.prefilled_tokens
    reused = f" ({c.prefilled_tokens} prefilled, {cached} from cache)" if cached else ""
    return (f"[prompt {c.prompt_tokens} tokens{reused}, {len(c.token_ids)} new tokens, "
            f"TTFT {c.ttft_s:.2f} s, decode {c.decode_tokens_per_s:.1f} tok/s{context}]")


def fail(command: str, exc: Exception) -> int:
    print(f"nitro {command}: error: {exc}", file=sys.stderr)
    return 1
