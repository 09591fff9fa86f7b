"""What `nitro bench ROOT` measures: time to first token, decode speed, load time and peak memory of a built model.

Generation is greedy on token ids with EOS ignored, so every run makes exactly `--new-tokens` tokens and
the figures compare with other tools fed the same ids (benchmarks/compare.py runs OpenVINO GenAI and
optimum-intel through `measure` too). Tokenizing and detokenizing are left out: they are not the model's speed.
Every run gets a prompt of its own, so a tool that caches prompt prefixes (OpenVINO GenAI does by default)
cannot skip the prefill of a prompt it has seen.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from ..artifacts import peak_rss_mb


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


def measure(tool: str, model_path, load, args, vocab_size: int) -> dict:
    """Time `load()` (modules already imported) -> generate(prompt, n), which returns (seconds to the first
    token, seconds from the first token to the last, token ids); then the generation over warm-up and
    measured runs. `args` holds the options of nitro.commands.bench. Returns the figures as a dict, with the ids
    generated for the prompt itself."""
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


def nitro_loader(root: Path, check_hashes: bool = True):
    """A `measure` loader for a NITRO build: the runtime's forward pass and argmax, nothing else."""
    from .model import Model, check_fits

    def load():
        model = Model(root, check_hashes=check_hashes)

        def generate(prompt, new_tokens):
            model.reset()
            check_fits(len(prompt), new_tokens, model.max_seq_len)
            start = time.perf_counter()
            ids = [int(model.forward(prompt).argmax())]
            first = time.perf_counter()
            while len(ids) < new_tokens:
                ids.append(int(model.forward(ids[-1:]).argmax()))
            return first - start, time.perf_counter() - first, ids

        return generate

    return load
