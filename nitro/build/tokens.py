"""Token sets read from text, as the model's token ids [samples, tokens] (`tokens.npy`): the held-out text every
build is evaluated on (reference/, one sample from the text's start) and the calibration text data-aware
compression learns from (calibration/, samples of equal length from the text's end).

The default text is real prose no recipe can mistake for its own: the Python Language Reference's help topics as
CPython ships them (`pydoc_data.topics`, about 465 000 characters, 100 000 tokens), joined in the order of their
names. A recipe may name a UTF-8 file instead. When both sets read the same text they are disjoint: held-out
tokens from its start, calibration from its end, and a step whose two sets would overlap fails saying so.
"""
from __future__ import annotations

from pathlib import Path

from ..artifacts import write_array

PYTHON_DOCS = "python-docs"


def read_text(text: str) -> str:
    if text == PYTHON_DOCS:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[name] for name in sorted(topics))
    return Path(text).read_text(encoding="utf-8")


def run(args):
    """--input is the model's tokenizer folder; --out the token ids. params: text, samples, tokens (a sample's
    length), from ("start" or "end" of the text), and `reserved_at_end`: tokens at the text's end that the
    calibration samples take, which held-out tokens from the same text must not reach."""
    import numpy as np
    from transformers import AutoTokenizer

    p = args.params
    tokenizer = AutoTokenizer.from_pretrained(str(args.input))
    ids = tokenizer(read_text(p["text"]), add_special_tokens=True)["input_ids"]
    wanted = p["samples"] * p["tokens"]
    if len(ids) < wanted + p["reserved_at_end"]:
        reserved = f", and the calibration samples take {p['reserved_at_end']} at its end" \
            if p["reserved_at_end"] else ""
        raise SystemExit(f"{args.step}: text {p['text']!r} is {len(ids)} tokens long; {p['samples']} sample(s) of "
                         f"{p['tokens']} tokens need {wanted}{reserved}; give a longer text or fewer tokens")
    taken = ids[:wanted] if p["from"] == "start" else ids[len(ids) - wanted:]
    write_array(args.out, np.array(taken, np.int64).reshape(p["samples"], p["tokens"]))
