"""The held-out text every build is evaluated on, as the model's token ids (reference/tokens.npy).

The default is real prose no recipe can mistake for its own: the Python Language Reference's help topics as
CPython ships them (`pydoc_data.topics`, about 465 000 characters), joined in the order of their names. A recipe
may name a UTF-8 file instead (`evaluate.text`).
"""
from __future__ import annotations

from pathlib import Path

from ..artifacts import write_array

PYTHON_DOCS = "python-docs"


def heldout_text(text: str) -> str:
    if text == PYTHON_DOCS:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[name] for name in sorted(topics))
    return Path(text).read_text(encoding="utf-8")


def run(args):
    """--input is the model's tokenizer folder; --out the token ids."""
    import numpy as np
    from transformers import AutoTokenizer

    params = args.params
    tokenizer = AutoTokenizer.from_pretrained(str(args.input))
    ids = tokenizer(heldout_text(params["text"]), add_special_tokens=True)["input_ids"][:params["tokens"]]
    if len(ids) < params["tokens"]:
        raise SystemExit(f"heldout: evaluate.text = {params['text']!r} is {len(ids)} tokens long, and "
                         f"evaluate.tokens asks for {params['tokens']}; give a longer text or fewer tokens")
    write_array(args.out, np.array(ids, np.int64))
