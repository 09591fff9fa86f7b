"""Stage 4: compile each graph variant of one chunk for the target device, on its own, and keep the compiled blob.

The blob is the artifact: the final step and the runtime import it instead of compiling again, which is what lets
a model too large to compile at once (an 8B model on an NPU) load chunk by chunk.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..artifacts import META, atomic_dir, peak_rss_mb, write_json


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


def compile_chunk(compressed: Path, device: dict, out: Path) -> dict:
    import openvino as ov

    check_device(device["device"], device["properties"])
    meta = json.loads((compressed / META).read_text())
    core = ov.Core()
    with atomic_dir(out) as scratch:
        for name, variant in meta["variants"].items():
            start = time.perf_counter()
            compiled = core.compile_model(compressed / variant["xml"], device["device"], device["properties"])
            variant["compile_s"] = round(time.perf_counter() - start, 3)
            blob = f"{name}.blob"
            with open(scratch / blob, "wb") as f:
                f.write(compiled.export_model().getbuffer())
            variant["blob"] = blob
            variant["peak_rss_mb"] = round(peak_rss_mb(), 1)
            del compiled
        meta["device"] = device
        write_json(scratch / META, meta)
    return meta
