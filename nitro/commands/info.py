"""`nitro info ROOT`: what a build is, from its manifest alone: its chunks and their compression, what the
compression cost on held-out text, and every build step's wall time and peak memory."""
from __future__ import annotations

from . import add_model_argument


def add_arguments(parser):
    add_model_argument(parser, loads=False)


def run(args) -> int:
    from ..artifacts import DECODE, compression_settings, layer_span, read_manifest

    m = read_manifest(args.root)
    graphs = f"{m['shapes']} graphs"
    if m["shapes"] == "dynamic" and any(DECODE in c["variants"] for c in m["chunks"] if c["kind"] == "decoder"):
        graphs += " and a decode graph per decoder chunk"  # the recipe's decode_graph
    print(f"{args.root}: {m['name']} ({m['family']}, {m['spec']['num_layers']} layers), {graphs} for "
          f"{m['device']['device']}, max_seq_len {m['max_seq_len']}, KV cache {m['kv_precision']}")
    for chunk in m["chunks"]:
        layers = f"layers {layer_span(chunk)}" if layer_span(chunk) else ""
        settings = compression_settings(chunk)
        print(f"  {chunk['name']:12} {layers:14} {chunk['compression']['mode']}{f' ({settings})' if settings else ''}")
    c = m.get("calibration")
    if c:
        print(f"calibration: {c['samples']} samples of {c['tokens']} tokens ({c['text']}, from its end) for "
              f"{', '.join(c['chunks'])}")
    e = m.get("evaluation")
    if e:
        print(f"evaluation on {e['tokens']} held-out tokens ({e['text']}), against {e['reference']}:\n"
              f"  perplexity {e['perplexity']} (reference {e['reference_perplexity']}), top-1 agreement "
              f"{e['top1_agreement']:.1%}, KL divergence {e['kl_divergence']} nats a token")
    print(f"{'step':10} {'chunk':12} {'wall s':>8} {'peak MB':>8} {'declared MB':>12}")
    for step in m["steps"]:
        print(f"{step['step']:10} {step['chunk'] or '':12} {step['wall_s']:8.1f} {step['peak_rss_mb']:8.0f} "
              f"{step['mem_mb'] or '':>12}")
    return 0
