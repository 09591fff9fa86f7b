"""`nitro bench ROOT`: time to first token, decode speed, load time and peak memory of a built model.

Generation is greedy on token ids with EOS ignored, so every run makes exactly `--new-tokens` tokens and
the figures compare with other tools fed the same ids (benchmarks/compare.py runs OpenVINO GenAI and
optimum-intel through `measure` too). Tokenizing and detokenizing are left out: they are not the model's speed.
Every run gets a prompt of its own, so a tool that caches prompt prefixes (OpenVINO GenAI does by default)
cannot skip the prefill of a prompt it has seen.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("root", type=Path, help="a built model: the folder holding manifest.json")
    parser.add_argument("--prompt-len", type=int, default=128,
                        help="prompt tokens (default 128): random ids from the vocabulary, the same on every run")
    parser.add_argument("--prompt-ids", type=Path, metavar="JSON",
                        help="a JSON list of prompt token ids to use instead of --prompt-len random ones")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per run (default 128)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs; figures are their median (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this JSON file")


def prompt_ids(args, vocab_size: int) -> list[int]:
    """The prompt of --prompt-ids, or --prompt-len ids drawn with a fixed seed, so every tool gets the same."""
    if args.prompt_ids:
        ids = json.loads(Path(args.prompt_ids).read_text())
        if not ids or any(not 0 <= i < vocab_size for i in ids):
            raise ValueError(f"--prompt-ids {args.prompt_ids}: needs a non-empty list of ids below {vocab_size}")
        return ids
    if args.prompt_len < 1:
        raise ValueError(f"--prompt-len {args.prompt_len}: must be at least 1")
    return random_prompt(vocab_size, args.prompt_len)


def random_prompt(vocab_size: int, length: int) -> list[int]:
    """Token ids drawn with a fixed seed: speed does not depend on which ids they are, only on how many."""
    import numpy as np

    return np.random.default_rng(0).integers(0, vocab_size, length).tolist()


def check_counts(args):
    if args.new_tokens < 2:
        raise ValueError(f"--new-tokens {args.new_tokens}: must be at least 2 (one to time the first token, "
                         "the rest to time decoding)")
    if args.runs < 1 or args.warmup < 0:
        raise ValueError(f"--runs {args.runs} / --warmup {args.warmup}: need at least 1 run and no negative warm-up")


def peak_rss_mb(pid="self") -> float:
    """A process's peak resident memory: the high-water mark of its own address space (VmHWM). Not ru_maxrss,
    which a process started by Python's subprocess (vfork, then exec) inherits from its parent's peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0  # the process has exited and released its memory


def measure(tool: str, model_path, load, args, vocab_size: int) -> dict:
    """Time `load()` (modules already imported) -> generate(prompt, n), which returns (seconds to the first
    token, seconds from the first token to the last, token ids); then the generation over warm-up and
    measured runs. Returns the figures as a dict, with the ids generated for the prompt itself."""
    check_counts(args)
    prompt = prompt_ids(args, vocab_size)
    # Measured run i gets the prompt rotated by i (run 0: the prompt itself); warm-ups get rotations past those.
    rotations = [args.runs + i for i in range(args.warmup)] + list(range(args.runs))
    start = time.perf_counter()
    generate = load()
    load_s = time.perf_counter() - start
    samples, outputs = [], []
    for r in (r % len(prompt) for r in rotations):
        ttft_s, decode_s, ids = generate(prompt[r:] + prompt[:r], args.new_tokens)
        if len(ids) != args.new_tokens:
            raise RuntimeError(f"{tool} generated {len(ids)} tokens instead of {args.new_tokens}")
        samples.append({"ttft_ms": round(ttft_s * 1000, 3), "decode_s": round(decode_s, 6)})
        outputs.append([int(i) for i in ids])
    measured = samples[args.warmup:]
    return {
        "tool": tool,
        "model": str(model_path),
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "runs": args.runs,
        "load_s": round(load_s, 3),
        **summarize(measured, args.new_tokens),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "samples": measured,
        "output_ids": outputs[args.warmup],  # those of the prompt itself
    }


def summarize(samples: list[dict], new_tokens: int) -> dict:
    """Median TTFT and decode time over runs, and the decode rate and time per output token that follow from
    that median, so the three always agree."""
    decode_s = statistics.median(s["decode_s"] for s in samples)
    steps = new_tokens - 1
    return {
        "ttft_ms": round(statistics.median(s["ttft_ms"] for s in samples), 3),
        "decode_s": decode_s,
        "decode_tokens_per_s": round(steps / decode_s, 3),
        "tpot_ms": round(decode_s / steps * 1000, 3),
    }


def report(result: dict, args) -> None:
    """Print the figures as a table and, with --json, write them."""
    from ..build.step import write_json

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


def nitro_loader(root: Path):
    """A `measure` loader for a NITRO build: the runtime's forward pass and argmax, nothing else."""
    from .model import Model

    def load():
        model = Model(root)

        def generate(prompt, new_tokens):
            model.reset()
            model.check_fits(len(prompt) + new_tokens)
            start = time.perf_counter()
            ids = [int(model.forward(prompt).argmax())]
            first = time.perf_counter()
            while len(ids) < new_tokens:
                ids.append(int(model.forward(ids[-1:]).argmax()))
            return first - start, time.perf_counter() - first, ids

        return generate

    return load


def run(args) -> int:
    from .model import ArtifactError, read_manifest

    try:
        manifest = read_manifest(args.root)
        result = measure("nitro", args.root, nitro_loader(args.root), args, manifest["spec"]["vocab_size"])
    except (ArtifactError, ValueError) as exc:  # a missing build, bad options, or a run that cannot fit
        print(f"nitro bench: error: {exc}", file=sys.stderr)
        return 1
    report(result, args)
    return 0
