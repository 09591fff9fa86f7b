"""Prompt-lookup decoding, NITRO's against OpenVINO GenAI's, on SmolLM2 with prompts whose answers reuse their text.

    python benchmarks/prompt_lookup.py [--draft 4] [--new-tokens 64] [--rounds 3] [--precision f32]
                                       [--dynamic-quantization 32]

Builds SmolLM2 with the default recipe (INT8) and exports it for GenAI with optimum-cli (INT8, as compare.py),
then runs, for each prompt, greedy decoding without and with prompt lookup (up to --draft tokens drafted from
n-grams of up to 3 tokens, in both tools), each tool in a process of its own, tools alternating round by round.
Prints the decode tok/s of every prompt and tool (median of the rounds), NITRO ÷ GenAI with prompt lookup, each
tool's speedup from it, and whether each tool's prompt-lookup tokens equal its own greedy tokens. `--precision`
sets both tools' INFERENCE_PRECISION_HINT (default: the CPU's own, bf16 where it has AVX-512 bf16, where a call
over several tokens rounds otherwise than one over a single token, and near-ties may swap).
`--dynamic-quantization` sets both tools' DYNAMIC_QUANTIZATION_GROUP_SIZE: 0 (the default) is NITRO's own CPU
setting, activations left unquantized; GenAI keeps the CPU plugin's default unless told, which on CPUs with VNNI
quantizes them to 8 bits in groups of 32, so the two would otherwise not run the same computation there.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from anchors import genai_clock
from compare import optimum_environment, optimum_export, prepare, worker_environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from nitro.testing import snakemake  # noqa: E402

MODEL = "smollm2-135m"
LOOKUP_NGRAM = 3  # GenAI's max_ngram_size, as NITRO's nitro.runtime.generate.LOOKUP_NGRAM
PASSAGES = [
    "The printing press was invented by Johannes Gutenberg around 1440. It used movable metal type, oil-based ink "
    "and a wooden press adapted from those used to make wine. Within fifty years presses were running in more "
    "than two hundred cities across Europe, and books became cheap enough for many people to own.",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes the air pressure is lower, so water "
    "boils at a lower temperature: in Denver it boils at about 95 degrees, and on Mount Everest at about 70.",
    "To make a cup of tea, boil fresh water, warm the pot, add one spoon of tea for each cup, pour on the water, "
    "wait four minutes, then pour the tea through a strainer into the cups and add milk if you like.",
]
TASKS = [
    ("Repeat the following text exactly, word for word:\n\n{}", 0),
    ("Rewrite the following text in the past tense, changing nothing else:\n\n{}", 1),
    ("Copy the steps of this recipe as a numbered list:\n\n{}", 2),
    ("Which sentence of this text mentions Denver? Quote it exactly.\n\n{}", 1),
    ("Summarize this text in two sentences, using its own words:\n\n{}", 0),
]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/lookup", help="where builds go")
    parser.add_argument("--draft", type=int, default=4, help="tokens drafted a call (default 4)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated a prompt (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each tool once a round (default 3)")
    parser.add_argument("--precision", choices=("default", "f32", "bf16"), default="default",
                        help="both tools' inference precision (default: the CPU plugin's own)")
    parser.add_argument("--dynamic-quantization", type=int, default=0, metavar="GROUP",
                        help="both tools' DYNAMIC_QUANTIZATION_GROUP_SIZE (default 0: off, NITRO's CPU default)")
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "FOLDER", "PROMPTS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def nitro_generator(folder: Path, new_tokens: int, properties: dict):
    """NITRO's runtime on its build (whose recipe set the same properties as GenAI's)."""
    from nitro.runtime import Model
    from nitro.runtime.generate import Generator
    from nitro.runtime.sampling import SamplingParams

    gen = Generator(Model(folder))

    def generate(ids: list[int], draft: int) -> tuple[float, list[int]]:
        done = gen.generate(ids, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True, prompt_lookup=draft))
        return done.decode_tokens_per_s, done.token_ids

    return generate


def genai_generator(folder: Path, new_tokens: int, properties: dict):
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    pipes = {False: ov_genai.LLMPipeline(str(folder), "CPU", **properties),
             True: ov_genai.LLMPipeline(str(folder), "CPU", prompt_lookup=True, **properties)}

    def generate(ids: list[int], draft: int) -> tuple[float, list[int]]:
        config = ov_genai.GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, do_sample=False)
        if draft:
            config.num_assistant_tokens, config.max_ngram_size = draft, LOOKUP_NGRAM
        clock = genai_clock()
        result = pipes[bool(draft)].generate(ov.Tensor(np.array([ids], np.int64)), config, clock)
        tokens = [int(t) for t in result.tokens[0]]
        # A streamer call may bring several tokens (an accepted draft): time from the first to the last call.
        return (len(tokens) - 1) / (clock.times[-1] - clock.times[0]), tokens

    return generate


def worker(tool: str, folder: Path, prompts_path: Path) -> dict:
    """One tool over every prompt, greedy then with prompt lookup, after a warm-up run of each."""
    request = json.loads(prompts_path.read_text())
    generate = {"nitro": nitro_generator, "genai": genai_generator}[tool](folder, request["new_tokens"],
                                                                         request["properties"])
    for draft in (0, request["draft"]):
        generate(request["prompts"][0], draft)
    results = []
    for ids in request["prompts"]:
        plain_tok_s, plain = generate(ids, 0)
        lookup_tok_s, looked = generate(ids, request["draft"])
        results.append({"plain_tok_s": plain_tok_s, "lookup_tok_s": lookup_tok_s, "plain": plain,
                        "same_tokens": looked == plain})
    return {"results": results}


def chat_prompts(build: Path) -> list[list[int]]:
    from nitro.runtime.generate import chat_ids, load_tokenizer

    tokenizer = load_tokenizer(build / "tokenizer")
    return [chat_ids(tokenizer, [{"role": "user", "content": task.format(PASSAGES[p])}]) for task, p in TASKS]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        tool, folder, prompts = args.worker
        print(json.dumps(worker(tool, Path(folder), Path(prompts))))
        return 0
    out = args.out.resolve()
    s = prepare(MODEL, out, "int8", args.dynamic_quantization)  # its recipe sets the dynamic quantization
    print(f"{MODEL}: NITRO build (snakemake) ...", flush=True)
    snakemake(out / "work", {"models": {s.name: {**s.recipe, "inference_precision": args.precision}}})
    genai_properties = dict(s.recipe["device_properties"])
    if args.precision != "default":
        genai_properties["INFERENCE_PRECISION_HINT"] = args.precision
    if not (s.export / "openvino_model.xml").is_file():
        print(f"{MODEL}: optimum-cli export openvino --weight-format int8 ...", flush=True)
        optimum_export(s.hf, s.export, optimum_environment(out), s.export_options)
    prompts = out / "prompts.json"
    prompts.write_text(json.dumps({"prompts": chat_prompts(s.build), "draft": args.draft,
                                   "new_tokens": args.new_tokens, "properties": genai_properties}))
    folders = {"nitro": s.build, "genai": s.export}
    rounds = {tool: [] for tool in folders}
    for r in range(args.rounds):
        for tool in list(folders)[r % 2:] + list(folders)[:r % 2]:
            print(f"round {r + 1}/{args.rounds}: {tool} ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--worker", tool, str(folders[tool]), str(prompts)],
                                  capture_output=True, text=True, env=worker_environment())
            if proc.returncode:
                raise RuntimeError(f"{tool} failed:\n{proc.stderr[-4000:]}")
            rounds[tool].append(json.loads(proc.stdout.splitlines()[-1])["results"])
    print_table(rounds, args)
    return 0


def print_table(rounds: dict, args) -> None:
    median = {tool: [{key: statistics.median(run[i][key] for run in runs) for key in ("plain_tok_s", "lookup_tok_s")}
                     for i in range(len(TASKS))] for tool, runs in rounds.items()}
    print(f"\n{MODEL}, INT8 weights, {args.precision} precision, dynamic quantization group "
          f"{args.dynamic_quantization or 'off'}, {args.new_tokens} new tokens, {args.draft} drafted a call; "
          f"decode tok/s, median of {args.rounds} rounds")
    print(f"{'prompt':52} {'NITRO':>7} {'+lookup':>8} {'GenAI':>7} {'+lookup':>8} {'lookup N÷G':>11}  "
          "lookup = greedy (N/G)")
    ratios = []
    for i, (task, _) in enumerate(TASKS):
        n, g = median["nitro"][i], median["genai"][i]
        ratios.append(n["lookup_tok_s"] / g["lookup_tok_s"])
        same = "/".join("yes" if all(run[i]["same_tokens"] for run in rounds[tool]) else "no" for tool in rounds)
        print(f"{task.splitlines()[0][:52]:52} {n['plain_tok_s']:7.1f} {n['lookup_tok_s']:8.1f} "
              f"{g['plain_tok_s']:7.1f} {g['lookup_tok_s']:8.1f} {ratios[-1]:10.2f}×  {same}")
    speedups = {tool: statistics.median(m["lookup_tok_s"] / m["plain_tok_s"] for m in median[tool]) for tool in median}
    agree = sum(rounds["nitro"][0][i]["plain"] == rounds["genai"][0][i]["plain"] for i in range(len(TASKS)))
    print(f"\nNITRO ÷ GenAI with prompt lookup: median {statistics.median(ratios):.2f}× "
          f"(range {min(ratios):.2f}–{max(ratios):.2f}); speedup from prompt lookup: NITRO "
          f"{speedups['nitro']:.2f}×, GenAI {speedups['genai']:.2f}×; greedy tokens equal between the tools on "
          f"{agree}/{len(TASKS)} prompts (INT8 weights compressed by each tool's own NNCF call)")


if __name__ == "__main__":
    sys.exit(main())
