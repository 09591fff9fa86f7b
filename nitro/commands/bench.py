"""`nitro bench ROOT`: time to first token, decode speed, load time and peak memory of a built model, as a table
and (--json) a file. What is measured and how: nitro.runtime.bench."""
from __future__ import annotations

from pathlib import Path

from . import add_model_argument


def add_arguments(parser):
    add_model_argument(parser)
    parser.add_argument("--prompt-len", type=int, default=128,
                        help="prompt tokens (default 128): random ids from the vocabulary, the same on every run")
    parser.add_argument("--prompt-ids", type=Path, metavar="JSON",
                        help="a JSON list of prompt token ids to use instead of --prompt-len random ones")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per run (default 128)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs; figures are their median (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this JSON file")


def report(result: dict, args) -> None:
    """Print the figures as a table and, with --json, write them."""
    from ..artifacts import write_json

    r = result
    rows = [
        ("model", f"{r['model']} ({r['tool']})"),
        ("tokens", f"{r['prompt_tokens']} prompt + {r['new_tokens']} new, greedy, EOS ignored"),
        ("runs", f"median of {r['runs']} after {r['warmup']} warm-up"),
        ("load", f"{r['load_s']:.2f} s"),
        ("TTFT", f"{r['ttft_ms']:.1f} ms"),
        ("decode", f"{r['decode_tokens_per_s']:.1f} tok/s"),
        ("per output token", f"{r['tpot_ms']:.2f} ms"),
        ("peak RSS", f"{r['peak_rss_mb']:.0f} MB"),
    ]
    for name, value in rows:
        print(f"{name:<17} {value}")
    if args.json:
        write_json(args.json, r)


def run(args) -> int:
    from ..artifacts import read_manifest
    from ..runtime.bench import measure, nitro_loader

    vocab_size = read_manifest(args.root)["spec"]["vocab_size"]
    report(measure("nitro", args.root, nitro_loader(args.root, args.check_hashes), args, vocab_size), args)
    return 0
