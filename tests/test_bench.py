"""`nitro bench`: its JSON holds every figure, the figures agree with each other, and it times the runtime's own
greedy tokens. No speed is asserted: speed is compared side by side by benchmarks/compare.py."""
from __future__ import annotations

import argparse
import json
import statistics

import pytest

from nitro.cli import main
from nitro.commands.bench import add_arguments
from nitro.runtime import Model, bench
from nitro.runtime.generate import Generator
from nitro.runtime.sampling import SamplingParams

FIELDS = {"tool", "model", "prompt_tokens", "new_tokens", "warmup", "runs", "load_s", "ttft_ms", "decode_s",
          "decode_tokens_per_s", "tpot_ms", "peak_rss_mb", "samples", "output_ids"}


def run_bench(root, tmp_path, *options) -> dict:
    out = tmp_path / "bench.json"
    assert main(["bench", str(root), *options, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_figures_are_complete_and_consistent(tiny_builds, tmp_path, capsys):
    root = tiny_builds["llama_default"]
    r = run_bench(root, tmp_path, "--prompt-len", "20", "--new-tokens", "6", "--runs", "3")
    assert set(r) == FIELDS
    assert (r["tool"], r["prompt_tokens"], r["new_tokens"], r["runs"], r["warmup"]) == ("nitro", 20, 6, 3, 1)
    assert len(r["samples"]) == 3 and len(r["output_ids"]) == 6
    assert r["decode_s"] == statistics.median(s["decode_s"] for s in r["samples"])
    assert r["ttft_ms"] == pytest.approx(statistics.median(s["ttft_ms"] for s in r["samples"]), abs=1e-3)
    steps = r["new_tokens"] - 1
    assert r["decode_s"] == pytest.approx(steps / r["decode_tokens_per_s"], rel=1e-3)
    assert r["tpot_ms"] == pytest.approx(1000 * r["decode_s"] / steps, rel=1e-3)
    assert min(r["load_s"], r["ttft_ms"], r["decode_s"], r["peak_rss_mb"]) > 0
    printed = capsys.readouterr().out
    assert f"{r['decode_tokens_per_s']:.1f} tok/s" in printed and f"{r['ttft_ms']:.1f} ms" in printed


def test_bench_times_the_greedy_tokens_with_eos_ignored(tiny_builds, tmp_path):
    root = tiny_builds["qwen2_default"]
    prompt = [5, 17, 300, 42, 9, 1000, 77]
    (tmp_path / "prompt.json").write_text(json.dumps(prompt))
    r = run_bench(root, tmp_path, "--prompt-ids", str(tmp_path / "prompt.json"), "--new-tokens", "12",
              "--runs", "1", "--warmup", "0")
    assert r["prompt_tokens"] == len(prompt)
    expected = Generator(Model(root)).generate(prompt, SamplingParams(max_new_tokens=12, ignore_eos=True))
    assert r["output_ids"] == expected.token_ids


def test_every_run_gets_a_prompt_of_its_own():
    """A tool that caches prompt prefixes (OpenVINO GenAI) must not skip a prefill it has seen; run i gets the
    same prompt in every tool, and the first measured run the prompt itself."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["model", "--prompt-len", "16", "--new-tokens", "3", "--runs", "3", "--warmup", "2"])
    prompts = []

    def load():
        def generate(prompt, new_tokens):
            prompts.append(prompt)
            return 0.01, 0.02, [7] * new_tokens

        return generate

    r = bench.measure("fake", "model", load, args, vocab_size=1000)
    assert len(prompts) == 5 and len({tuple(p) for p in prompts}) == 5
    assert prompts[2] == bench.random_prompt(1000, 16)
    assert all(sorted(p) == sorted(prompts[2]) for p in prompts)
    assert (r["ttft_ms"], r["decode_tokens_per_s"]) == (10.0, 100.0)


@pytest.mark.parametrize("options, named", [
    (["--prompt-len", "90", "--new-tokens", "10"], "max_seq_len = 96"),
    (["--new-tokens", "1"], "--new-tokens 1"),
])
def test_bench_rejects_what_cannot_be_measured(tiny_builds, capsys, options, named):
    assert main(["bench", str(tiny_builds["llama_default"]), *options]) == 1
    assert named in capsys.readouterr().err
