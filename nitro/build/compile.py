"""Stage 4: compile each graph variant of one chunk for the target device, on its own, and keep the compiled blob.

The blob is the artifact: the final step and the runtime import it instead of compiling again, which is what lets
a model too large to compile at once (an 8B model on an NPU) load chunk by chunk. A static chunk's prefill and
decode graphs are split from its one IR and, on an NPU, compiled onto one copy of its weights (npuw_properties).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..artifacts import META, atomic_dir, device_core, peak_rss_mb, sha256, write_json
from .graphs import graph_of


class DeviceUnavailable(RuntimeError):
    pass


def check_device(device: str, properties: dict) -> None:
    """Fail with the list of devices OpenVINO sees, unless the NPU is emulated through NPUW on the CPU."""
    import openvino as ov

    if properties.get("NPUW_DEVICES") == "CPU":
        return
    available = ov.Core().available_devices
    if not any(d.split(".")[0] == device for d in available):
        raise DeviceUnavailable(
            f"device {device!r} is not available; OpenVINO sees: {', '.join(available) or 'none'}. "
            "Without an NPU, set npuw_on_cpu: true to check an NPU build through the NPU plugin on the CPU."
        )


def run(args):
    compile_chunk(args.input, args.params, args.out)


def npuw_properties(device: dict, kind: str, weights: Path) -> dict:
    """How NPUW compiles a chunk, as OpenVINO GenAI's NPU pipeline does (none of it for the CPU plugin, where
    each compiled graph repacks its own copy of the weights whatever the properties).

    A decoder chunk's graphs, compiled one by one, hold one copy of its weights: NPUW folds the layers into
    functions whose weights are call inputs (NPUW_FOLD, NPUW_FUNCALL_FOR_ALL) and takes them from a weights bank,
    named here after the weights file's content (the bank table is process-wide: chunks and builds with other
    weights must not meet in one). Their blobs are weightless and read the weights file at import.
    The embedding and the head have one graph each (see Recipe.export_params) and compile as one submodel
    (NPUW_ONLINE_PIPELINE NONE, GenAI's setting for its LM head): NPUW's default partitioning cuts the weight's
    decompression from its matmul or lookup and holds the table decompressed (SmolLM2's head through NPUW on the
    CPU: 311 MB resident, 66 MB as one submodel, its 8-bit table kept in the blob)."""
    if device["properties"].get("NPU_USE_NPUW") != "YES":
        return {}
    if kind != "decoder":
        return {"NPUW_ONLINE_PIPELINE": "NONE"}
    return {"NPUW_FOLD": "YES", "NPUW_FUNCALL_FOR_ALL": "YES", "NPUW_WEIGHTS_BANK": f"nitro-{sha256(weights)[:16]}"}


def compile_chunk(compressed: Path, device: dict, out: Path) -> dict:
    check_device(device["device"], device["properties"])
    meta = json.loads((compressed / META).read_text())
    core = device_core(device)
    merged = core.read_model(compressed / meta["xml"])
    npuw = npuw_properties(device, meta["chunk"]["kind"], compressed / meta["xml"].replace(".xml", ".bin"))
    with atomic_dir(out) as scratch:
        for name, variant in meta["variants"].items():
            start = time.perf_counter()
            compiled = core.compile_model(graph_of(merged, name), device["device"],
                                          {**device["properties"], **npuw})
            variant["compile_s"] = round(time.perf_counter() - start, 3)
            blob = f"{name}.blob"
            with open(scratch / blob, "wb") as f:
                f.write(compiled.export_model().getbuffer())
            variant.update(blob=blob, properties=npuw, peak_rss_mb=round(peak_rss_mb(), 1))
            del compiled
        meta["device"] = device
        meta["weightless"] = "NPUW_WEIGHTS_BANK" in npuw
        write_json(scratch / META, meta)
    return meta
