"""How much a build's compression cost, measured when it is assembled: the built model on the held-out tokens
against the uncompressed reference (nitro/build/reference.py) on the same tokens."""
from __future__ import annotations

import numpy as np

REFERENCE_MODEL = "NITRO's uncompressed export, float32 on the CPU (equal to transformers' float32 to ~1e-6)"
ROWS_AT_ONCE = 64  # positions compared at a time in float64: [64,V] arrays, not [T,V] (1024 x 152k: 1.2 GB each)


class BelowFloor(RuntimeError):
    """The build's accuracy misses a floor the recipe set."""


def log_probs(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))


def evaluate(logits: np.ndarray, ids: np.ndarray, reference: np.ndarray, settings: dict) -> dict:
    """The figures of a build whose logits [T,V] on the held-out ids [T] are compared with the reference's
    log-probabilities [T,V]: perplexity of both (exp of the mean negative log-likelihood of each next token), the
    share of positions where both pick the same top token, the mean KL divergence KL(reference || build) in nats.
    Raises BelowFloor where the recipe's floor is missed."""
    nll, reference_nll, agree, kl = 0.0, 0.0, 0, 0.0
    for start in range(0, len(ids), ROWS_AT_ONCE):
        built = log_probs(logits[start:start + ROWS_AT_ONCE])
        expected = reference[start:start + ROWS_AT_ONCE].astype(np.float64)
        following = ids[start + 1:start + 1 + len(built)]  # the next token of each row that has one
        rows = np.arange(len(following))
        nll -= built[rows, following].sum()
        reference_nll -= expected[rows, following].sum()
        agree += int((built.argmax(-1) == expected.argmax(-1)).sum())
        kl += float((np.exp(expected) * (expected - built)).sum())
    figures = {
        "text": settings["text"],
        "tokens": len(ids),
        "reference": REFERENCE_MODEL,
        "perplexity": round(float(np.exp(nll / (len(ids) - 1))), 4),
        "reference_perplexity": round(float(np.exp(reference_nll / (len(ids) - 1))), 4),
        "top1_agreement": round(agree / len(ids), 4),
        "kl_divergence": float(f"{kl / len(ids):.3g}"),
    }
    missed = []
    if settings.get("min_top1") is not None and figures["top1_agreement"] < settings["min_top1"]:
        missed.append(f"top-1 agreement {figures['top1_agreement']} is below evaluate.min_top1 = "
                      f"{settings['min_top1']}")
    if settings.get("max_kl") is not None and figures["kl_divergence"] > settings["max_kl"]:
        missed.append(f"KL divergence {figures['kl_divergence']} is above evaluate.max_kl = {settings['max_kl']}")
    if missed:
        raise BelowFloor(f"{'; '.join(missed)} (on {len(ids)} held-out tokens against the uncompressed model); "
                         "compress less where it costs most (e.g. compression.chunks.decoders.mode: INT8_SYM), or "
                         "lower the floor in the recipe")
    return figures
