"""Stage 3: compress one chunk's weights with NNCF (data-free): its IR holds every variant on one copy of them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..artifacts import META, atomic_dir, write_json


def _nncf():
    """NNCF, imported without torch unless torch is loaded already. NNCF loads its torch backend whenever torch
    is installed, even to compress an OpenVINO model; in the compress step's own process that costs ~3 s and
    ~190 MB of peak memory for nothing (the compressed IR is byte-identical without it)."""
    import sys

    if "torch" not in sys.modules:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError, which NNCF takes as "no torch"
    import nncf

    return nncf


def compression_kwargs(settings: dict) -> dict:
    """NNCF arguments for a chunk's compression settings (the recipe gives group size and ratio to 4-bit modes
    only). A 4-bit mode applies to every layer of the chunk (`all_layers`): NNCF would otherwise keep a model's
    last matmul, which it takes for the LM head, at 8 bits, and in a chunk that is the last decoder layer's down
    projection, so the layout of chunks would change the model (and a chunk's graphs would not agree on which
    is last). The head is a chunk of its own, compressed as the recipe says."""
    kwargs = {**settings, "mode": _nncf().CompressWeightsMode[settings["mode"]]}
    if "group_size" in settings:
        kwargs["all_layers"] = True
    return kwargs


def run(args):
    compress_chunk(args.input, args.params, args.out)


def compress_chunk(exported: Path, settings: dict, out: Path) -> dict:
    import openvino as ov

    meta = json.loads((exported / META).read_text())
    with atomic_dir(out) as scratch:
        xml = meta["xml"]
        if settings["mode"] == "none":
            for suffix in (".xml", ".bin"):
                shutil.copy2(exported / xml.replace(".xml", suffix), scratch / xml.replace(".xml", suffix))
        else:
            model = _nncf().compress_weights(ov.Core().read_model(exported / xml), **compression_kwargs(settings))
            ov.save_model(model, scratch / xml, compress_to_fp16=False)
            del model
        meta["compression"] = settings
        write_json(scratch / META, meta)
    return meta
