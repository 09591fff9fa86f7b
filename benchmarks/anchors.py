"""Run one anchor, OpenVINO GenAI's LLMPipeline or optimum-intel's OVModelForCausalLM, on an `optimum-cli export
openvino` folder, timed exactly as `nitro bench` times NITRO (same options, same JSON).

    python benchmarks/anchors.py genai|optimum EXPORT_DIR [--property KEY=VALUE ...] [nitro bench options]

compare.py runs it in a process of its own per tool, so each tool's load time and peak RSS are its own.
Token times are taken in Python when each token id arrives (a streamer), as in `nitro bench`. `--property` gives
the CPU plugin an OpenVINO property (compare.py: the dynamic quantization NITRO's recipe sets).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nitro.commands.bench import add_arguments, report
from nitro.runtime.bench import measure


def genai_clock():
    """A GenAI streamer that records the time of each call (a call may bring several tokens)."""
    import openvino_genai as ov_genai

    class Clock(ov_genai.StreamerBase):
        def __init__(self):
            super().__init__()
            self.times = []

        def write(self, token):
            self.times.append(time.perf_counter())
            return ov_genai.StreamingStatus.RUNNING

        def end(self):
            pass

    return Clock()


def genai_loader(folder: Path, properties: dict):
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    def load():
        pipe = ov_genai.LLMPipeline(str(folder), "CPU", **properties)

        def generate(prompt, new_tokens):
            config = ov_genai.GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, do_sample=False)
            clock = genai_clock()
            start = time.perf_counter()
            result = pipe.generate(ov.Tensor(np.array([prompt], np.int64)), config, clock)
            return clock.times[0] - start, clock.times[-1] - clock.times[0], list(result.tokens[0])

        return generate

    return load


def optimum_loader(folder: Path, properties: dict):
    import torch
    from optimum.intel import OVModelForCausalLM
    from transformers import GenerationConfig
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        """generate() puts the prompt first, then each new token."""

        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def load():
        model = OVModelForCausalLM.from_pretrained(str(folder), device="CPU", ov_config=dict(properties))

        def generate(prompt, new_tokens):
            # No EOS id: generation runs through EOS as `ignore_eos` does, rather than masking it out.
            config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
            clock = Clock()
            start = time.perf_counter()
            out = model.generate(torch.tensor([prompt]), generation_config=config, streamer=clock)
            tokens = clock.times[1:]
            return tokens[0] - start, tokens[-1] - tokens[0], out[0, len(prompt):].tolist()

        return generate

    return load


LOADERS = {"genai": genai_loader, "optimum": optimum_loader}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=LOADERS)
    parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                        help="an OpenVINO property for the CPU plugin (repeatable)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    properties = dict(p.split("=", 1) for p in args.property)
    vocab_size = json.loads((args.root / "config.json").read_text())["vocab_size"]
    report(measure(args.tool, args.root, LOADERS[args.tool](args.root, properties), args, vocab_size), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
