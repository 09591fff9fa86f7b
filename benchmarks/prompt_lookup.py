"""Prompt-lookup decoding, NITRO's against OpenVINO GenAI's, on SmolLM2 with prompts whose answers reuse their text.

    python benchmarks/prompt_lookup.py [--draft 4] [--new-tokens 64] [--rounds 3] [--precision f32]
                                       [--dynamic-quantization 32] [--draft-model]

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

`--draft-model` measures speculative decoding with a draft model instead, in both tools on the same pair: SmolLM2
at INT4 (each tool's own INT4 weights, as compare.py's) drafting --draft tokens a call for SmolLM2 at INT8. No
smaller model with SmolLM2's tokenizer is at hand, and the draft is as large as the model it drafts for, so the
figures compare the two tools' speculative decoding, not what a real pair (a 1B model drafting for an 8B) gains.
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
    parser.add_argument("--draft-model", action="store_true",
                        help="draft with SmolLM2 at INT4 instead of prompt lookup, in both tools")
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "FOLDER", "DRAFT_FOLDER", "PROMPTS"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def nitro_generator(folder: Path, draft_folder: Path | None, new_tokens: int, properties: dict):
    """NITRO's runtime on its build (whose recipe set the same properties as GenAI's), drafting by prompt lookup,
    or with the build in `draft_folder`."""
    from nitro.runtime import Model
    from nitro.runtime.generate import Generator
    from nitro.runtime.sampling import SamplingParams

    gen = Generator(Model(folder), draft_model=draft_folder and Model(draft_folder))
    setting = "draft_tokens" if draft_folder else "prompt_lookup"

    def generate(ids: list[int], draft: int) -> tuple[float, list[int]]:
        done = gen.generate(ids, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True, **{setting: draft}))
        return done.decode_tokens_per_s, done.token_ids

    return generate


def genai_generator(folder: Path, draft_folder: Path | None, new_tokens: int, properties: dict):
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    drafting = ({"draft_model": ov_genai.draft_model(str(draft_folder), "CPU", **properties)} if draft_folder
                else {"prompt_lookup": True})
    pipes = {False: ov_genai.LLMPipeline(str(folder), "CPU", **properties),
             True: ov_genai.LLMPipeline(str(folder), "CPU", **drafting, **properties)}

    def generate(ids: list[int], draft: int) -> tuple[float, list[int]]:
        config = ov_genai.GenerationConfig(max_new_tokens=new_tokens, ignore_eos=True, do_sample=False)
        if draft:
            config.num_assistant_tokens = draft
            if not draft_folder:
                config.max_ngram_size = LOOKUP_NGRAM
        clock = genai_clock()
        result = pipes[bool(draft)].generate(ov.Tensor(np.array([ids], np.int64)), config, clock)
        tokens = [int(t) for t in result.tokens[0]]
        # A streamer call may bring several tokens (an accepted draft): time from the first to the last call.
        return (len(tokens) - 1) / (clock.times[-1] - clock.times[0]), tokens

    return generate


def worker(tool: str, folder: Path, draft_folder: Path | None, prompts_path: Path) -> dict:
    """One tool over every prompt, greedy then drafting (by prompt lookup, or with the model in `draft_folder`),
    after a warm-up run of each."""
    request = json.loads(prompts_path.read_text())
    generate = {"nitro": nitro_generator, "genai": genai_generator}[tool](folder, draft_folder, request["new_tokens"],
                                                                         request["properties"])
    for draft in (0, request["draft"]):
        generate(request["prompts"][0], draft)
    results = []
    for ids in request["prompts"]:
        plain_tok_s, plain = generate(ids, 0)
        drafted_tok_s, drafted = generate(ids, request["draft"])
        results.append({"plain_tok_s": plain_tok_s, "drafted_tok_s": drafted_tok_s, "plain": plain,
                        "same_tokens": drafted == plain})
    return {"results": results}


def chat_prompts(build: Path) -> list[list[int]]:
    from nitro.runtime.generate import chat_ids, load_tokenizer

    tokenizer = load_tokenizer(build / "tokenizer")
    return [chat_ids(tokenizer, [{"role": "user", "content": task.format(PASSAGES[p])}]) for task, p in TASKS]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        tool, folder, draft_folder, prompts = args.worker
        print(json.dumps(worker(tool, Path(folder), Path(draft_folder) if draft_folder else None, Path(prompts))))
        return 0
    out = args.out.resolve()
    subjects = []
    for weights in ("int8", "int4") if args.draft_model else ("int8",):
        # the recipe sets the dynamic quantization; INT4's starts from the INT8 build's source folder, built first
        t = prepare(MODEL, out, weights, args.dynamic_quantization)
        print(f"{t.name}: NITRO build (snakemake) ...", flush=True)
        snakemake(out / "work", {"models": {t.name: {**t.recipe, "inference_precision": args.precision}}})
        subjects.append(t)
    s = subjects[0]
    genai_properties = dict(s.recipe["device_properties"])
    if args.precision != "default":
        genai_properties["INFERENCE_PRECISION_HINT"] = args.precision
    for t in subjects:
        if not (t.export / "openvino_model.xml").is_file():
            print(f"{t.name}: optimum-cli export openvino {' '.join(t.export_options)} ...", flush=True)
            optimum_export(t.hf, t.export, optimum_environment(out), t.export_options)
    prompts = out / "prompts.json"
    prompts.write_text(json.dumps({"prompts": chat_prompts(s.build), "draft": args.draft,
                                   "new_tokens": args.new_tokens, "properties": genai_properties}))
    folders = {"nitro": [t.build for t in subjects], "genai": [t.export for t in subjects]}
    rounds = {tool: [] for tool in folders}
    for r in range(args.rounds):
        for tool in list(folders)[r % 2:] + list(folders)[:r % 2]:
            print(f"round {r + 1}/{args.rounds}: {tool} ...", flush=True)
            model, *draft = folders[tool]
            command = ["--worker", tool, str(model), str(draft[0]) if draft else "", str(prompts)]
            proc = subprocess.run([sys.executable, __file__, *command], capture_output=True, text=True,
                                  env=worker_environment())
            if proc.returncode:
                raise RuntimeError(f"{tool} failed:\n{proc.stderr[-4000:]}")
            rounds[tool].append(json.loads(proc.stdout.splitlines()[-1])["results"])
    print_table(rounds, args)
    return 0


def print_table(rounds: dict, args) -> None:
    median = {tool: [{key: statistics.median(run[i][key] for run in runs) for key in ("plain_tok_s", "drafted_tok_s")}
                     for i in range(len(TASKS))] for tool, runs in rounds.items()}
    how, column = ("a draft model (SmolLM2 at INT4)", "+draft") if args.draft_model else ("prompt lookup", "+lookup")
    print(f"\n{MODEL}, INT8 weights, {args.precision} precision, dynamic quantization group "
          f"{args.dynamic_quantization or 'off'}, {args.new_tokens} new tokens, {args.draft} drafted a call by {how}; "
          f"decode tok/s, median of {args.rounds} rounds")
    print(f"{'prompt':52} {'NITRO':>7} {column:>8} {'GenAI':>7} {column:>8} {column[1:] + ' N÷G':>11}  "
          f"{column[1:]} = greedy (N/G)")
    ratios = []
    for i, (task, _) in enumerate(TASKS):
        n, g = median["nitro"][i], median["genai"][i]
        ratios.append(n["drafted_tok_s"] / g["drafted_tok_s"])
        same = "/".join("yes" if all(run[i]["same_tokens"] for run in rounds[tool]) else "no" for tool in rounds)
        print(f"{task.splitlines()[0][:52]:52} {n['plain_tok_s']:7.1f} {n['drafted_tok_s']:8.1f} "
              f"{g['plain_tok_s']:7.1f} {g['drafted_tok_s']:8.1f} {ratios[-1]:10.2f}×  {same}")
    speedups = {tool: statistics.median(m["drafted_tok_s"] / m["plain_tok_s"] for m in median[tool])
                for tool in median}
    agree = sum(rounds["nitro"][0][i]["plain"] == rounds["genai"][0][i]["plain"] for i in range(len(TASKS)))
    print(f"\nNITRO ÷ GenAI with {how}: median {statistics.median(ratios):.2f}× "
          f"(range {min(ratios):.2f}–{max(ratios):.2f}); speedup from it: NITRO "
          f"{speedups['nitro']:.2f}×, GenAI {speedups['genai']:.2f}×; greedy tokens equal between the tools on "
          f"{agree}/{len(TASKS)} prompts (weights compressed by each tool's own NNCF call)")


if __name__ == "__main__":
    sys.exit(main())
