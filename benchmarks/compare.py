"""NITRO side by side with OpenVINO GenAI's LLMPipeline and optimum-intel's OVModelForCausalLM, and NITRO's
build against `optimum-cli export openvino`, on the same checkpoints, with INT8 and with INT4 weights, at a short
and a long prompt. One command:

    python benchmarks/compare.py            # SmolLM2-135M and the Qwen2.5-0.5B and Llama-3.2-1B shapes
    python benchmarks/compare.py --quick    # SmolLM2 only, fewer tokens and runs: checks the harness

Prints the tables and writes benchmarks/out/compare.json and compare.png. benchmarks/README.md says what each
figure means. Every tool runs in a process of its own, one after the other in rotating order, round after round.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's nitro, as the workers and the rules use
from nitro.artifacts import atomic_dir, log_file, peak_rss_mb, write_json  # noqa: E402
from nitro.build.recipe import input_channels, largest_group  # noqa: E402
from nitro.models import spec_for  # noqa: E402
from nitro.runtime.bench import random_prompt, summarize  # noqa: E402
from nitro.runtime.model import cache_capacity  # noqa: E402
from nitro.testing import REAL_SHAPES, make_checkpoint, snakemake  # noqa: E402

# Benchmark name -> family of the random-weight checkpoint at that real shape; None: the default recipe's SmolLM2.
MODELS = {"smollm2-135m": None, "qwen2.5-0.5b": "qwen2", "llama-3.2-1b": "llama"}
# What a model's recipe changes from the default one. A chunk's export and compression hold its float32 weights,
# 243 MB a layer at the 1B shape: chunks of 4 layers keep those steps near 1.3 GB (10 layers: 2.7 GB).
RECIPE_CHANGES = {"llama-3.2-1b": {"chunk_size": 4}}
TARGET_PROMPT = 128  # the prompt length issue 17's decode and TTFT targets are set at
MAX_SEQ_LEN = 4096  # every build's and export's context here, so that the long prompt fits with its new tokens
WEIGHTS = ("int8", "int4")  # the weight formats every tool runs (weight_format)
MEMORY_TARGET_MODEL = "llama-3.2-1b"  # every build step's peak ≤ 0.35 × optimum-cli export's, at this shape
TOOLS = ("nitro", "genai", "optimum")
LABELS = {"nitro": "NITRO", "genai": "OpenVINO GenAI", "optimum": "optimum-intel"}
OPTIMUM_PINS = REPO / "benchmarks/optimum-intel.txt"
# The recompression the incremental-rebuild figure times: one decoder chunk to the other INT8 mode.
CHANGED_CHUNK = "decoder_0"
OTHER_INT8_MODE = {"INT8_SYM": "INT8_ASYM", "INT8_ASYM": "INT8_SYM"}


@dataclasses.dataclass
class Subject:
    """One benchmarked model at one weight format: the HF folder every tool starts from, NITRO's build (`name`
    is its model name in the recipe) and the anchors' export."""

    name: str
    recipe: dict
    hf: Path
    build: Path
    export: Path
    model: str  # the benchmark's model name (MODELS)
    weights: str  # one of WEIGHTS
    export_options: tuple  # optimum-cli's weight options for the anchors' export


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    anchor_env = optimum_environment(out)
    print(f"memory read bandwidth: measuring ({os.cpu_count()} threads) ...", flush=True)
    bandwidth = read_bandwidth_gbs()
    print(f"memory read bandwidth: {bandwidth:.1f} GB/s")
    subjects, timed, builds = [], {}, {}
    for name in args.models:
        # The INT8 build is timed (issue 4's build targets) and made first: SmolLM2's source comes from it.
        timed[name] = prepare(name, out, "int8", args.dynamic_quantization, args.decode_graph)
        builds[name] = build_figures(timed[name], out, anchor_env, args)
        subjects += [timed[name]] if "int8" in args.weights else []
        for weights in [w for w in args.weights if w != "int8"]:
            subjects.append(prepare(name, out, weights, args.dynamic_quantization, args.decode_graph))
            bring_up_to_date(subjects[-1], anchor_env, args)
    cases = []
    for s in subjects:
        for length in args.prompt_lens:
            figures = speed(s, out, anchor_env, args, length)
            cases.append({"model": s.model, "weights": s.weights, "prompt_tokens": length, "speed": figures,
                          "ceiling": ceiling(s, bandwidth, figures, length + args.new_tokens)})
    for name, s in timed.items():
        builds[name]["rebuild"] = rebuild_after_change(s, out, args)
    report = {
        "machine": machine(bandwidth, out / "optimum-intel"),
        "settings": {"prompt_tokens": args.prompt_lens, "new_tokens": args.new_tokens, "runs": args.runs,
                     "dynamic_quantization_group_size": args.dynamic_quantization,
                     "weights": {"int8": "NITRO: INT8_SYM (default recipe); anchors: optimum-cli --weight-format "
                                         "int8 (INT8_ASYM)",
                                 "int4": "INT4_SYM decoders in groups, INT8 embedding and head, NITRO and anchors "
                                         "alike (optimum-cli --weight-format int4 --sym --ratio 1.0)"}},
        "cases": cases,
        "builds": builds,
    }
    write_json(out / "compare.json", report)
    print_report(report)
    chart(report, out / "compare.png")
    print(f"\nwrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="SmolLM2 only, a 128-token prompt, 32 new tokens, 2 rounds: checks the harness")
    parser.add_argument("--models", nargs="+", choices=MODELS, help="benchmark only these (default: all)")
    parser.add_argument("--prompt-lens", type=int, nargs="+",
                        help="prompt lengths in tokens, each a set of rounds (default 128 1024; --quick 128)")
    parser.add_argument("--weights", nargs="+", choices=WEIGHTS, default=list(WEIGHTS),
                        help="weight formats, each a build and an export per model (default: int8 int4)")
    parser.add_argument("--dynamic-quantization", type=int, default=0, metavar="GROUP",
                        help="every tool's DYNAMIC_QUANTIZATION_GROUP_SIZE: 0 (default) is NITRO's CPU default, "
                             "activations unquantized; the CPU plugin's own default, on CPUs with VNNI, is 32")
    parser.add_argument("--decode-graph", action="store_true",
                        help="NITRO's builds with the recipe's decode_graph (a one-token graph per decoder chunk "
                             "beside the dynamic one), built apart from the default ones")
    parser.add_argument("--new-tokens", type=int, help="tokens generated per run (default 128; --quick 32)")
    parser.add_argument("--runs", type=int, help="interleaved rounds; figures are medians (default 5; --quick 2)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep builds, exports and their recorded figures from an earlier run (builds are "
                             "still brought up to date); for iterating, not for the final figures")
    parser.add_argument("--mem-mb", type=int, default=16000,
                        help="memory the NITRO build may use at once (snakemake --resources mem_mb; default 16000)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out", help="where everything is written")
    args = parser.parse_args(argv)
    args.models = args.models or (["smollm2-135m"] if args.quick else list(MODELS))
    args.new_tokens = args.new_tokens or (32 if args.quick else 128)
    args.runs = args.runs or (2 if args.quick else 5)
    args.prompt_lens = args.prompt_lens or ([128] if args.quick else [128, 1024])
    args.out = args.out.resolve()
    return args


def optimum_environment(out: Path) -> dict:
    """Environment of the optimum-intel processes: its pinned overlay (see optimum-intel.txt) first on PYTHONPATH."""
    overlay = out / "optimum-intel"
    pins = OPTIMUM_PINS.read_text()
    if not (overlay / "pins.txt").is_file() or (overlay / "pins.txt").read_text() != pins:
        print(f"installing optimum-intel and its transformers into {overlay} (pip --no-deps --target) ...",
              flush=True)
        with atomic_dir(overlay) as scratch:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                            str(scratch), "-r", str(OPTIMUM_PINS)], check=True)
            (scratch / "pins.txt").write_text(pins)
    return worker_environment(overlay)


def worker_environment(*first: Path) -> dict:
    """Child processes run this checkout's nitro (as the Snakemake rules do), after any `first` folders."""
    path = [*map(str, first), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}


def read_bandwidth_gbs(size_mb: int = 1024, repeats: int = 7) -> float:
    """How fast all cores together stream a buffer far larger than the caches (numpy sums, which release the
    GIL), best of `repeats`: the rate at which a decode step can at most read its weights."""
    import numpy as np

    buffer = np.ones(size_mb * 2**20 // 8)
    parts = np.array_split(buffer, os.cpu_count())
    best = 0.0
    with ThreadPoolExecutor(len(parts)) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = max(best, buffer.nbytes / (time.perf_counter() - start) / 1e9)
    return best


def prepare(name: str, out: Path, weights: str = "int8", dynamic_quantization: int = 0,
            decode_graph: bool = False) -> Subject:
    """The model's recipe and folders at a weight format; a random-weight checkpoint is made once and kept. The
    INT8 build is the default recipe's (for SmolLM2, whose source the other formats' builds then share). With
    `decode_graph` NITRO's build has it, and a name of its own; the anchors' export is the same."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]["smollm2"]
    work = out / "work"
    family = MODELS[name]
    suffix = "-decode-graph" if decode_graph else ""
    if family is None:
        recipe, hf = dict(default), work / "results" / f"{name}{suffix}" / "source"
    else:
        hf = out / "checkpoints" / name
        if not (hf / "config.json").is_file():
            print(f"{name}: making a random-weight checkpoint at the real shape ...", flush=True)
            random_checkpoint(hf, family, REAL_SHAPES[name])
        recipe = {**default, "source": str(hf), **RECIPE_CHANGES.get(name, {})}
    export_name = name if weights == "int8" else f"{name}-{weights}"
    if weights != "int8" and family is None:
        recipe["source"] = str(hf)
    compression, options = weight_format(weights, hf)
    recipe.update(max_seq_len=MAX_SEQ_LEN, compression={**recipe["compression"], **compression},
                  device_properties={"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(dynamic_quantization)},
                  decode_graph=decode_graph)
    build_name = export_name + suffix
    return Subject(build_name, recipe, hf, work / "results" / build_name, out / "anchors" / export_name, name,
                   weights, tuple(options))


def weight_format(weights: str, hf: Path) -> tuple[dict, list[str]]:
    """NITRO's compression recipe and optimum-cli's options for its export (which GenAI and optimum-intel run) at a
    weight format. INT4 is symmetric in the group NITRO's NPU default takes (the largest of at most 128 dividing
    every decoder layer's input channels: 64 for SmolLM2), embedding and head at 8 bits in both (optimum-cli's
    default for them). The checkpoint's config is read only for INT4: SmolLM2's exists once its INT8 build does."""
    if weights == "int8":
        return {}, ["--weight-format", "int8"]
    spec = spec_for(json.loads((hf / "config.json").read_text()))
    group = largest_group(input_channels(spec, "decoder").values())
    return ({"chunks": {"decoders": {"mode": "INT4_SYM", "group_size": group}}},
            ["--weight-format", "int4", "--sym", "--group-size", str(group), "--ratio", "1.0"])


def random_checkpoint(dest: Path, family: str, shape: dict):
    """make_checkpoint in a process of its own, so the full-precision model it holds is freed at once."""
    with atomic_dir(dest) as scratch:
        child = multiprocessing.get_context("spawn").Process(target=make_checkpoint, args=(scratch, family, shape))
        child.start()
        child.join()
        if child.exitcode:
            raise RuntimeError(f"making the {family} checkpoint at {dest} failed ({child.exitcode})")


def build_figures(s: Subject, out: Path, anchor_env: dict, args) -> dict:
    """Build with NITRO (Snakemake) and export with optimum-cli, timed, unless --reuse finds them recorded (the
    build's figures under its name, the export's under the export's, which builds of other recipes share)."""
    build_record, export_record = out / "anchors" / f"{s.name}.build.json", out / "anchors" / f"{s.export.name}.json"
    build = json.loads(build_record.read_text()) if args.reuse and build_record.is_file() else {}
    export = json.loads(export_record.read_text()) if args.reuse and export_record.is_file() else {}
    full = not ((s.build / "manifest.json").is_file() and "nitro_build_s" in build)
    print(f"{s.name}: NITRO build (snakemake{' --forceall' if full else ''}) ...", flush=True)
    wall = snakemake_build(s, out, args, *(["--forceall"] if full else []))
    if full:
        build = {"nitro_build_s": round(wall, 3)}
        write_json(build_record, build)
    if not export or not (s.export / "openvino_model.xml").is_file():
        print(f"{s.export.name}: optimum-cli export openvino {' '.join(s.export_options)} ...", flush=True)
        export = optimum_export(s.hf, s.export, anchor_env, s.export_options)
        write_json(export_record, export)
    steps = step_logs(s.build)
    return {
        "nitro_build_s": build["nitro_build_s"],
        "nitro_steps_s": round(sum(st["wall_s"] for st in steps), 3),
        "nitro_peak_step_rss_mb": max(st["peak_rss_mb"] for st in steps),
        "chunks": len(json.loads((s.build / "manifest.json").read_text())["chunks"]),
        "steps": steps,
        "optimum_export": export,
    }


def bring_up_to_date(s: Subject, anchor_env: dict, args):
    """Build with NITRO and export with optimum-cli, untimed: what the speed rounds of a weight format need."""
    print(f"{s.name}: NITRO build (snakemake) ...", flush=True)
    snakemake_build(s, args.out, args)
    if not (s.export / "openvino_model.xml").is_file():
        print(f"{s.name}: optimum-cli export openvino {' '.join(s.export_options)} ...", flush=True)
        optimum_export(s.hf, s.export, anchor_env, s.export_options)


def snakemake_build(s: Subject, out: Path, args, *options: str) -> float:
    start = time.perf_counter()
    snakemake(out / "work", {"models": {s.name: s.recipe}}, "--resources", f"mem_mb={args.mem_mb}", *options)
    return time.perf_counter() - start


def step_logs(build: Path) -> list[dict]:
    """Every build step's log (wall time, peak RSS), in build order: the manifest's list, then the assembly's."""
    manifest = json.loads((build / "manifest.json").read_text())
    assemble_log = json.loads((build / log_file("assemble")).read_text())
    return [{k: st[k] for k in ("step", "chunk", "wall_s", "peak_rss_mb")} for st in manifest["steps"] + [assemble_log]]


def optimum_export(hf: Path, dest: Path, env: dict, options) -> dict:
    """`optimum-cli export openvino` with the weight format's `options`: its wall time and peak RSS."""
    log = dest.parent / f"{dest.name}.export.log"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(dest) as scratch:
        cmd = [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(hf),
               "--task", "text-generation-with-past", *options, str(scratch)]
        figures = watch(cmd, env, log)
        if figures["returncode"]:
            raise RuntimeError(f"optimum-cli export of {hf} failed ({figures['returncode']}); see {log}")
    return {k: figures[k] for k in ("wall_s", "peak_rss_mb")}


def watch(cmd: list[str], env: dict, log: Path, limit_mb: float | None = None) -> dict:
    """Run `cmd` (output to `log`): its wall time, return code, and peak RSS polled from its own high-water mark
    (the kernel keeps the peak, so polling misses only the growth of its last 0.1 s). Past `limit_mb` it is
    killed, and `killed` says so."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as log_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        peak, killed = 0.0, False
        while proc.poll() is None:
            try:
                peak = max(peak, peak_rss_mb(proc.pid))
            except FileNotFoundError:  # exited between poll() and the read
                pass
            if limit_mb and peak > limit_mb and not killed:
                proc.kill()
                killed = True
            time.sleep(0.1)
    return {"wall_s": round(time.perf_counter() - start, 3), "peak_rss_mb": round(peak, 1),
            "returncode": proc.returncode, "killed": killed}


def speed(s: Subject, out: Path, anchor_env: dict, args, prompt_len: int) -> dict:
    """Each tool in a fresh process per round (1 warm-up + 1 measured run), rounds interleaved in rotating
    order so drifting load hits every tool alike; then the median of the rounds, and ratios to GenAI."""
    runs = out / "runs" / s.name / str(prompt_len)
    runs.mkdir(parents=True, exist_ok=True)
    vocab = json.loads((s.hf / "config.json").read_text())["vocab_size"]
    prompt = runs / "prompt.json"
    prompt.write_text(json.dumps(random_prompt(vocab, prompt_len)))
    rounds = {tool: [] for tool in TOOLS}
    for r in range(args.runs):
        for tool in TOOLS[r % 3:] + TOOLS[:r % 3]:
            print(f"{s.name}, {prompt_len}-token prompt: round {r + 1}/{args.runs}: {LABELS[tool]} ...", flush=True)
            rounds[tool].append(run_worker(tool, s, runs / f"{tool}-{r}.json", prompt, anchor_env, args))
    figures = {}
    for tool, results in rounds.items():
        figures[tool] = {
            **summarize(results, args.new_tokens),
            "load_s": statistics.median(x["load_s"] for x in results),
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in results),
            "rounds": [{k: x[k] for k in ("ttft_ms", "decode_s", "load_s", "peak_rss_mb")} for x in results],
            "output_ids": results[-1]["output_ids"],
        }
    genai = figures["genai"]
    for tool, f in figures.items():
        f["vs_genai"] = {k: round(f[k] / genai[k], 3) for k in ("ttft_ms", "decode_tokens_per_s", "tpot_ms",
                                                                  "load_s", "peak_rss_mb")}
        # The same ratios round by round: a round's tools run back to back, so its ratio shares the machine's
        # state, and their range shows how much of a ratio is noise.
        pairs = list(zip(rounds[tool], rounds["genai"]))
        f["vs_genai_by_round"] = {"ttft_ms": [round(x["ttft_ms"] / g["ttft_ms"], 3) for x, g in pairs],
                                  "decode_tokens_per_s": [round(g["decode_s"] / x["decode_s"], 3) for x, g in pairs]}
        f["same_tokens_as_genai"] = next((i for i, (a, b) in enumerate(zip(f["output_ids"], genai["output_ids"]))
                                          if a != b), args.new_tokens)
    return figures


def run_worker(tool: str, s: Subject, result: Path, prompt: Path, anchor_env: dict, args) -> dict:
    if tool == "nitro":
        cmd, env = [sys.executable, "-m", "nitro.cli", "bench", str(s.build)], worker_environment()
    else:
        cmd = [sys.executable, str(REPO / "benchmarks/anchors.py"), tool, str(s.export)]
        env = anchor_env if tool == "optimum" else worker_environment()
        for key, value in s.recipe["device_properties"].items():  # what NITRO's recipe sets, the same for both
            cmd += ["--property", f"{key}={value}"]
    cmd += ["--prompt-ids", str(prompt), "--new-tokens", str(args.new_tokens), "--runs", "1", "--warmup", "1",
            "--json", str(result)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{LABELS[tool]} on {s.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def decode_weight_bytes(build: Path, manifest: dict) -> int:
    """Weight bytes a decode step reads: every decoder chunk and the head (the embedding reads one row)."""
    chunks = [c for c in manifest["chunks"] if c["kind"] != "embed"]
    return sum((build / c["xml"]).with_suffix(".bin").stat().st_size for c in chunks)


def ceiling(s: Subject, bandwidth_gbs: float, figures: dict, tokens: int) -> dict:
    """Decode's physical ceiling: bandwidth ÷ weight bytes read per token (every decoder layer and the LM head;
    the embedding reads one row), taken from NITRO's compressed graphs. The KV-cache slots NITRO's attention
    reads every step at the end of the run (`tokens` long) are reported beside it: all `max_seq_len` for static
    graphs, the cache allocated so far for dynamic ones."""
    manifest = json.loads((s.build / "manifest.json").read_text())
    weight_bytes = decode_weight_bytes(s.build, manifest)
    spec = manifest["spec"]
    slots = cache_capacity(tokens, manifest["max_seq_len"], manifest["shapes"] == "dynamic")
    kv_item = {"f32": 4, "f16": 2, "bf16": 2}[manifest["kv_precision"]]
    kv_bytes = 2 * spec["num_layers"] * spec["num_kv_heads"] * slots * spec["head_dim"] * kv_item
    tokens_per_s = bandwidth_gbs * 1e9 / weight_bytes
    return {
        "bandwidth_gbs": round(bandwidth_gbs, 2),
        "weight_mb_per_token": round(weight_bytes / 1e6, 1),
        "decode_ceiling_tokens_per_s": round(tokens_per_s, 1),
        "share_of_ceiling": {t: round(f["decode_tokens_per_s"] / tokens_per_s, 3) for t, f in figures.items()},
        "nitro_kv_mb_per_token": round(kv_bytes / 1e6, 1),
        "nitro_kv_cache": f"{slots} slots ({manifest['shapes']} shapes), {manifest['kv_precision']}",
    }


def rebuild_after_change(s: Subject, out: Path, args) -> dict:
    """Time the rebuild after one chunk's compression changes, list the steps it reran, then change it back.
    The build is brought up to date first, so a code edit made meanwhile is not counted in the rebuild."""
    changed = copy.deepcopy(s.recipe)
    chunks = json.loads((s.build / "manifest.json").read_text())["chunks"]
    mode = OTHER_INT8_MODE[next(c["compression"]["mode"] for c in chunks if c["name"] == CHANGED_CHUNK)]
    changed["compression"] = {**changed["compression"], "chunks": {CHANGED_CHUNK: {"mode": mode}}}
    print(f"{s.name}: rebuild after recompressing {CHANGED_CHUNK} as {mode} ...", flush=True)
    snakemake_build(s, out, args)
    before = log_times(s.build)
    wall = snakemake_build(dataclasses.replace(s, recipe=changed), out, args)
    rerun = sorted(step for step, t in log_times(s.build).items() if before[step] != t)
    revert = snakemake_build(s, out, args)
    return {"change": f"{CHANGED_CHUNK} -> {mode}", "wall_s": round(wall, 3), "rerun_steps": rerun,
            "revert_wall_s": round(revert, 3)}


def log_times(build: Path) -> dict[str, int]:
    """Step (e.g. "compress/decoder_0") -> when its log was written: a step that reran rewrote its log."""
    logs = build / "logs"
    return {str(p.relative_to(logs).with_suffix("")): p.stat().st_mtime_ns for p in logs.rglob("*.json")}


def machine(bandwidth_gbs: float, overlay: Path) -> dict:
    from importlib import metadata

    import openvino as ov

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    versions = {p: metadata.version(p) for p in ("openvino", "openvino-genai", "optimum")}
    for dist in metadata.distributions(path=[str(overlay)]):
        versions[dist.metadata["Name"]] = dist.version
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_inference_precision": ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(),
        "memory_read_gbs": round(bandwidth_gbs, 2),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def print_report(report: dict) -> None:
    m, st = report["machine"], report["settings"]
    quantization = st["dynamic_quantization_group_size"]
    print(f"\n{m['cpu']}, {m['cores']} cores, CPU precision {m['cpu_inference_precision']}, "
          f"memory read {m['memory_read_gbs']} GB/s; {st['new_tokens']} new tokens after the prompt (greedy, EOS "
          f"ignored), median of {st['runs']} interleaved rounds; activations' dynamic quantization "
          f"{f'in groups of {quantization}' if quantization else 'off'} in every tool; ×G = ratio to OpenVINO GenAI")
    head = (f"{'model':<14}{'weights':<8}{'prompt':>7} {'tool':<16}{'TTFT ms':>9}{'×G':>6}{'tok/s':>8}{'×G':>6}"
            f"{'ms/tok':>8}{'load s':>8}{'×G':>6}{'RSS MB':>8}{'×G':>6}{'ceiling':>9}{'same ids':>9}")
    print(head)
    print("-" * len(head))
    for case in report["cases"]:
        for tool in TOOLS:  # in this order also when the report is read back from its JSON (sorted keys)
            f = case["speed"][tool]
            r = f["vs_genai"]
            share = case["ceiling"]["share_of_ceiling"][tool]
            label = (f"{case['model']:<14}{case['weights']:<8}{case['prompt_tokens']:>7}" if tool == "nitro"
                     else " " * 29)
            print(f"{label} {LABELS[tool]:<16}{f['ttft_ms']:>9.1f}{r['ttft_ms']:>6.2f}"
                  f"{f['decode_tokens_per_s']:>8.1f}{r['decode_tokens_per_s']:>6.2f}{f['tpot_ms']:>8.2f}"
                  f"{f['load_s']:>8.2f}{r['load_s']:>6.2f}{f['peak_rss_mb']:>8.0f}{r['peak_rss_mb']:>6.2f}"
                  f"{share:>9.0%}{f['same_tokens_as_genai']:>9}")
        c = case["ceiling"]
        print(f"{'':<30}decode ceiling {c['decode_ceiling_tokens_per_s']} tok/s ({c['weight_mb_per_token']} MB of "
              f"weights per token); NITRO also reads {c['nitro_kv_mb_per_token']} MB of KV cache per token "
              f"({c['nitro_kv_cache']})")
    print(f"\nNITRO's ratios to OpenVINO GenAI in this run (targets at the {TARGET_PROMPT}-token prompt: "
          "decode ≥ 1.1×, TTFT ≤ 0.9×, peak RSS ≤ 1×)")
    for case in report["cases"]:
        r = case["speed"]["nitro"]["vs_genai"]
        checks = [("decode", r["decode_tokens_per_s"], r["decode_tokens_per_s"] >= 1.1),
                  ("TTFT", r["ttft_ms"], r["ttft_ms"] <= 0.9), ("peak RSS", r["peak_rss_mb"], r["peak_rss_mb"] <= 1.0)]
        verdict = case["prompt_tokens"] == TARGET_PROMPT
        by_round = case["speed"]["nitro"]["vs_genai_by_round"]
        print(f"  {case['model']:<14}{case['weights']:<6}{case['prompt_tokens']:>5}  " + "   ".join(
            f"{label} {value:.2f}{(' met' if ok else ' MISSED') if verdict else ''}" for label, value, ok in checks)
            + f"   (round by round: decode {spread(by_round['decode_tokens_per_s'])}, "
              f"TTFT {spread(by_round['ttft_ms'])})")
    print("\nBuild at INT8 (NITRO: every Snakemake step's wall time and peak RSS from its log; optimum-cli export of "
          "the same HF folder)")
    for name, build in report["builds"].items():
        print_build(name, build)


def spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"


def print_build(name: str, b: dict) -> None:
    e, rb = b["optimum_export"], b["rebuild"]
    print(f"  {name:<22}{'wall s':>8}{'peak RSS MB':>13}")
    for st in b["steps"]:
        print(f"    {st['step'] + ' ' + (st['chunk'] or ''):<20}{st['wall_s']:>8.1f}{st['peak_rss_mb']:>13.0f}")
    rss_ratio = b["nitro_peak_step_rss_mb"] / e["peak_rss_mb"]
    time_ratio = b["nitro_build_s"] / e["wall_s"]
    print(f"    full build {b['nitro_build_s']:.1f} s (snakemake --cores 2; its steps add up to "
          f"{b['nitro_steps_s']:.1f} s), "
          f"largest step peak {b['nitro_peak_step_rss_mb']:.0f} MB | optimum-cli export {e['wall_s']:.1f} s, "
          f"peak {e['peak_rss_mb']:.0f} MB")
    verdict = f"target ≤ 0.35: {'met' if rss_ratio <= 0.35 else 'MISSED'}" if name == MEMORY_TARGET_MODEL else (
        f"the ≤ 0.35 target is set for {MEMORY_TARGET_MODEL}")
    print(f"    largest step peak ÷ export peak = {rss_ratio:.2f} ({verdict}); build time ÷ export time = "
          f"{time_ratio:.2f} (target ≤ 2: {'met' if time_ratio <= 2 else 'MISSED'})")
    assemble_s = b["steps"][-1]["wall_s"]
    allowed = b["nitro_build_s"] / b["chunks"] + assemble_s
    print(f"    recompress {rb['change']}: rebuild {rb['wall_s']:.1f} s (reran {', '.join(rb['rerun_steps'])}); "
          f"target ≤ full ÷ {b['chunks']} chunks + assemble = {allowed:.1f} s: "
          f"{'met' if rb['wall_s'] <= allowed else 'MISSED'}")


def chart(report: dict, path: Path) -> None:
    """Grouped bars per case (model, weights, prompt): decode speed (with the ceiling), TTFT, runtime peak RSS,
    load time; and per model the INT8 build's peak RSS and time against optimum-cli export."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cases = report["cases"]
    x = np.arange(len(cases))
    width = 0.27
    fig, axes = plt.subplots(2, 3, figsize=(max(15, 1.6 * len(cases)), 8))
    panels = [("decode_tokens_per_s", "decode tokens/s (higher is better)"), ("ttft_ms", "TTFT ms (log scale)"),
              ("peak_rss_mb", "runtime peak RSS MB"), ("load_s", "load s")]
    for ax, (key, title) in zip(axes.flat, panels):
        for i, tool in enumerate(TOOLS):
            ax.bar(x + (i - 1) * width, [c["speed"][tool][key] for c in cases], width, label=LABELS[tool])
        ax.set_title(title)
        ax.set_xticks(x, [f"{c['model']}\n{c['weights']}, {c['prompt_tokens']}" for c in cases], fontsize=7)
    axes[0, 1].set_yscale("log")
    axes[0, 0].scatter(x, [c["ceiling"]["decode_ceiling_tokens_per_s"] for c in cases], marker="_", s=800,
                       color="black", label="bandwidth ceiling")
    names = list(report["builds"])
    builds = [report["builds"][n] for n in names]
    xb = np.arange(len(names))
    for ax, title, nitro, export in [
        (axes[1, 1], "INT8 build peak RSS MB", [b["nitro_peak_step_rss_mb"] for b in builds],
         [b["optimum_export"]["peak_rss_mb"] for b in builds]),
        (axes[1, 2], "INT8 build time s", [b["nitro_build_s"] for b in builds],
         [b["optimum_export"]["wall_s"] for b in builds]),
    ]:
        ax.bar(xb - width / 2, nitro, width, label="NITRO (largest step / full build)")
        ax.bar(xb + width / 2, export, width, label="optimum-cli export", color="tab:green")
        ax.set_title(title)
        ax.set_xticks(xb, names)
    axes[1, 2].scatter(xb - width / 2, [b["rebuild"]["wall_s"] for b in builds], marker="_", s=800, color="black",
                       label="one-chunk recompression rebuild")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(f"NITRO vs OpenVINO GenAI and optimum-intel, {m['cpu']} ({m['cores']} cores), "
                 f"prompt + {report['settings']['new_tokens']} new tokens")
    fig.tight_layout()
    partial = path.with_suffix(".partial.png")
    fig.savefig(partial, dpi=100)
    os.replace(partial, path)


if __name__ == "__main__":
    sys.exit(main())
