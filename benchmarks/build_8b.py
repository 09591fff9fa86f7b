"""The case NITRO exists for, on this machine: a random-weight checkpoint at the exact Llama-3.1-8B shape (bf16
safetensors shards, written a tensor at a time), built for an NPU (NPU defaults, compiled through the NPU plugin's
NPUW path onto the CPU) and for the CPU with the same compression, under `snakemake --resources mem_mb=16000`.

    python benchmarks/build_8b.py                  # checkpoint, both builds, optimum-cli beside them, generation
    python benchmarks/build_8b.py --skip-optimum   # without the anchor export

Prints every step's declared mem_mb, measured peak RSS, wall time and disk written (and whether each peak is within
its declaration, and each declaration within the limit); `optimum-cli export openvino --weight-format int4` of the
same checkpoint, its peak RSS and time (stopped at --anchor-limit-mb, with the figure it reached); then 32 greedy
tokens from each build, whether they agree, and decode tok/s against the memory-bandwidth ceiling. Hours on two
cores and about 60 GB of disk; what is built is kept, so a rerun resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from compare import decode_weight_bytes, optimum_environment, read_bandwidth_gbs, watch, worker_environment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from nitro.artifacts import LOGS, atomic_dir  # noqa: E402
from nitro.pipeline import SNAKEFILE, workflow_command  # noqa: E402
from nitro.testing import REAL_SHAPES  # noqa: E402

SHAPE = "llama-3.1-8b"
NEW_TOKENS = 32
PROMPT = "The history of the printing press begins"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/8b", help="where everything is written")
    parser.add_argument("--mem-mb", type=int, default=16000, help="snakemake --resources mem_mb (default 16000)")
    parser.add_argument("--chunk-size", type=int, default=4, help="decoder layers per chunk (default 4)")
    parser.add_argument("--anchor-limit-mb", type=int, default=20000,
                        help="stop optimum-cli when its RSS passes this (default 20000: the machine has 24 GiB)")
    parser.add_argument("--skip-optimum", action="store_true")
    parser.add_argument("--builds", nargs="+", choices=["llama8b_npu", "llama8b_cpu"],
                        default=["llama8b_npu", "llama8b_cpu"], help="which builds (default both)")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # worker: one build's greedy tokens
    return parser.parse_args(argv)


def recipes(checkpoint: Path, chunk_size: int) -> dict:
    """The NPU build with the NPU defaults (INT4_SYM channel-wise decoders at this size, INT8_SYM embedding and
    head), and a CPU build compressed alike, so the two must pick the same greedy tokens."""
    common = {"source": str(checkpoint), "chunk_size": chunk_size, "max_seq_len": 1024, "prefill_len": 128}
    return {
        "llama8b_npu": {**common, "device": "NPU", "npuw_on_cpu": True},
        "llama8b_cpu": {**common, "device": "CPU",
                        "compression": {"chunks": {"decoders": {"mode": "INT4_SYM", "group_size": -1}}}},
    }


def make_checkpoint_measured(dest: Path, log: Path) -> dict:
    """The checkpoint, in a process of its own whose peak RSS is polled."""
    code = ("import sys; from nitro.testing import REAL_SHAPES, make_checkpoint; "
            f"make_checkpoint(sys.argv[1], 'llama', REAL_SHAPES[{SHAPE!r}], dtype='bfloat16', weight_std=0.02)")
    with atomic_dir(dest) as scratch:
        figures = watch([sys.executable, "-c", code, str(scratch)], worker_environment(), log)
        if figures["returncode"]:
            raise RuntimeError(f"making the checkpoint failed ({figures['returncode']}); see {log}")
    return figures


def build(work: Path, models: dict, mem_mb: int) -> float:
    """The builds in one Snakemake run, its progress on the terminal; one that fails does not stop the other
    (the report says which did not finish)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "recipe.yaml").write_text(yaml.safe_dump({"models": models}))
    cmd = workflow_command(work, work / "recipe.yaml", cores=2, snakefile=SNAKEFILE) + [
        "--resources", f"mem_mb={mem_mb}", "--keep-going"]
    start = time.perf_counter()
    subprocess.run(cmd)
    return time.perf_counter() - start


def step_table(root: Path, limit_mb: int) -> list[str]:
    """One line per step of a build, from its logs; a peak above its declaration, or a declaration above the
    limit, is marked."""
    lines, total = [], {"wall_s": 0.0, "written_mb": 0.0}
    for path in sorted((root / LOGS).rglob("*.json"), key=lambda p: (p.parent.name, p.stem)):
        if not path.read_text().strip():  # the step was killed before it wrote its log
            lines.append(f"  {path.relative_to(root / LOGS).with_suffix('')}: did not finish (killed, no log)")
            continue
        log = json.loads(path.read_text())
        flags = [f for f, bad in (("PEAK > DECLARED", log["peak_rss_mb"] > log["mem_mb"]),
                                  ("DECLARED > LIMIT", log["mem_mb"] > limit_mb)) if bad]
        lines.append(f"  {log['step']:9} {str(log['chunk'] or ''):11} {log['mem_mb']:>9} {log['peak_rss_mb']:>10.0f} "
                     f"{log['wall_s']:>9.1f} {log.get('written_mb', 0):>11.0f}  {' '.join(flags) or 'ok'}")
        total["wall_s"] += log["wall_s"]
        total["written_mb"] += log.get("written_mb", 0)
    header = f"  {'step':9} {'chunk':11} {'mem_mb':>9} {'peak MB':>10} {'wall s':>9} {'written MB':>11}"
    return [header, *lines, f"  {'all steps':21} {'':>9} {'':>10} {total['wall_s']:>9.1f} {total['written_mb']:>11.0f}"]


def generate(root: Path) -> dict:
    """Worker: load a build, greedy-decode NEW_TOKENS from PROMPT, time the decode."""
    from nitro.artifacts import peak_rss_mb
    from nitro.runtime import Model
    from nitro.runtime.generate import Generator

    start = time.perf_counter()
    model = Model(root, progress=True)
    load_s = time.perf_counter() - start
    ids = Generator(model).encode(PROMPT)
    logits = model.forward(ids)
    tokens, decode_s = [int(logits.argmax())], 0.0
    for _ in range(NEW_TOKENS - 1):
        start = time.perf_counter()
        logits = model.forward([tokens[-1]])
        decode_s += time.perf_counter() - start
        tokens.append(int(logits.argmax()))
    weights = decode_weight_bytes(root, model.manifest)
    return {"tokens": tokens, "load_s": round(load_s, 1), "decode_tok_s": round((NEW_TOKENS - 1) / decode_s, 3),
            "weight_bytes": weights, "peak_rss_mb": round(peak_rss_mb(), 1)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.generate:
        print(json.dumps(generate(args.generate)))
        return 0
    out = args.out.resolve()
    checkpoint, work = out / "checkpoint", out / "work"
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if not (checkpoint / "config.json").is_file():
        print(f"making a random bf16 checkpoint at the {SHAPE} shape: {REAL_SHAPES[SHAPE]}", flush=True)
        report["checkpoint"] = make_checkpoint_measured(checkpoint, out / "checkpoint.log")
    models = {name: recipe for name, recipe in recipes(checkpoint, args.chunk_size).items() if name in args.builds}
    print(f"building {', '.join(models)} under --resources mem_mb={args.mem_mb} ...", flush=True)
    report["build_s"] = round(build(work, models, args.mem_mb), 1)
    if not args.skip_optimum and "optimum" not in report:
        print("optimum-cli export openvino --weight-format int4 ...", flush=True)
        cmd = [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(checkpoint),
               "--task", "text-generation-with-past", "--weight-format", "int4", "--sym", str(out / "optimum-int4")]
        report["optimum"] = watch(cmd, optimum_environment(out), out / "optimum.log", args.anchor_limit_mb)
    runs = {}
    for name in [m for m in models if (work / "results" / m / "manifest.json").is_file()]:
        proc = subprocess.run([sys.executable, __file__, "--generate", str(work / "results" / name)],
                              capture_output=True, text=True, env=worker_environment())
        if proc.returncode:
            raise RuntimeError(f"generating with {name} failed:\n{proc.stderr[-4000:]}")
        runs[name] = json.loads(proc.stdout.splitlines()[-1])
    report["generate"] = runs
    report["bandwidth_gbs"] = round(read_bandwidth_gbs(), 2)
    report_path.write_text(json.dumps(report, indent=2))
    print_report(report, work, models, args.mem_mb)
    return 0


def print_report(report: dict, work: Path, models: dict, limit_mb: int) -> None:
    if "checkpoint" in report:
        c = report["checkpoint"]
        print(f"\ncheckpoint ({SHAPE}, bf16, written a tensor at a time): {c['wall_s']:.0f} s, peak RSS "
              f"{c['peak_rss_mb']:.0f} MB")
    print(f"builds: {report['build_s']:.0f} s (snakemake --cores 2 --resources mem_mb={limit_mb} --keep-going)")
    for name in models:
        print(f"\n{name}:")
        print("\n".join(step_table(work / "results" / name, limit_mb)))
        if name not in report["generate"]:
            print(f"  not built: a step failed (see snakemake's log in {work / '.snakemake/log'})")
    if "optimum" in report:
        o = report["optimum"]
        ended = f"stopped at {o['peak_rss_mb']:.0f} MB RSS (limit)" if o["killed"] else \
            f"exit {o['returncode']}, peak RSS {o['peak_rss_mb']:.0f} MB"
        print(f"\noptimum-cli export openvino --weight-format int4 --sym: {o['wall_s']:.0f} s, {ended}")
    print(f"\n{NEW_TOKENS} greedy tokens from {PROMPT!r}; memory read bandwidth {report['bandwidth_gbs']} GB/s")
    runs = report["generate"]
    for name, r in runs.items():
        ceiling = report["bandwidth_gbs"] * 1e9 / r["weight_bytes"]
        print(f"  {name}: decode {r['decode_tok_s']:.2f} tok/s = {r['decode_tok_s'] / ceiling:.0%} of the ceiling "
              f"{ceiling:.2f} tok/s ({r['weight_bytes'] / 2**30:.2f} GiB of weights read a token); load "
              f"{r['load_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    tokens = [r["tokens"] for r in runs.values()]
    if len(tokens) > 1:
        print(f"  same tokens: {all(t == tokens[0] for t in tokens)}")
    for name, r in runs.items():
        print(f"  {name}: {r['tokens']}")


if __name__ == "__main__":
    sys.exit(main())
