"""A build's report page (results/<name>/report.html), which `snakemake --report` embeds: the chunk layout and
compression, the evaluation, and every step's wall time and peak memory beside what it declared, as tables and a
chart. Everything on it comes from the manifest."""
from __future__ import annotations

import html
import io

from ..artifacts import compression_settings, layer_span, read_manifest, write_text


def run(args):
    """--input is the model's folder."""
    write_text(args.out, report_page(read_manifest(args.input)))


def report_page(m: dict) -> str:
    chunks = [[c["name"], layer_span(c), c["compression"]["mode"], compression_settings(c)] for c in m["chunks"]]
    e = m["evaluation"]
    accuracy = [["perplexity", e["perplexity"], e["reference_perplexity"]],
                ["top-1 agreement", f"{e['top1_agreement']:.1%}", "100%"],
                ["KL divergence (nats a token)", e["kl_divergence"], 0]]
    steps = [[s["step"], s["chunk"] or "", f"{s['wall_s']:.1f}", f"{s['peak_rss_mb']:.0f}", s["mem_mb"] or ""]
             for s in m["steps"]]
    c = m.get("calibration")
    calibration = (f"<p>Data-aware chunks ({', '.join(c['chunks'])}) learned from {c['samples']} samples of "
                   f"{c['tokens']} tokens of {html.escape(c['text'])}, taken from its end.</p>") if c else ""
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(m['name'])}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>",
        f"<h2>{html.escape(m['name'])}: {m['family']}, {m['spec']['num_layers']} layers, {m['shapes']} graphs for "
        f"{m['device']['device']}</h2>",
        "<h3>Chunks and their compression</h3>",
        _table(["chunk", "layers", "mode", "settings"], chunks),
        calibration,
        f"<h3>Evaluation on {e['tokens']} held-out tokens ({html.escape(e['text'])})</h3>",
        f"<p>Against {html.escape(e['reference'])}.</p>",
        _table(["figure", "this build", "reference"], accuracy),
        "<h3>Steps: wall time and peak memory</h3>",
        _steps_chart(m["steps"]),
        _table(["step", "chunk", "wall s", "peak RSS MB", "declared MB"], steps),
        "</body></html>",
    ])


def _table(header: list[str], rows: list[list]) -> str:
    cells = lambda tag, row: "".join(f"<{tag}>{html.escape(str(v))}</{tag}>" for v in row)  # noqa: E731
    return "<table><tr>" + cells("th", header) + "</tr>" + "".join(f"<tr>{cells('td', r)}</tr>" for r in rows) + \
        "</table>"


def _steps_chart(steps: list[dict]) -> str:
    """Each step's peak RSS against its declared memory, and its wall time, as an inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s['step']} {s['chunk'] or ''}".strip() for s in steps]
    y = range(len(steps))
    fig, (memory, time) = plt.subplots(1, 2, figsize=(11, 0.22 * len(steps) + 1.2), sharey=True)
    memory.barh(y, [s["mem_mb"] or 0 for s in steps], color="#dddddd", label="declared (mem_mb)")
    memory.barh(y, [s["peak_rss_mb"] for s in steps], height=0.5, color="tab:blue", label="peak RSS")
    memory.set_xlabel("MB")
    memory.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize="small")
    time.barh(y, [s["wall_s"] for s in steps], color="tab:orange")
    time.set_xlabel("wall time, s")
    memory.set_yticks(list(y), labels, fontsize="small")
    memory.invert_yaxis()
    fig.tight_layout()
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    plt.close(fig)
    return svg.getvalue()[svg.getvalue().index("<svg"):]
