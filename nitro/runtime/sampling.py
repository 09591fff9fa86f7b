"""Next-token choice from logits: greedy, or sampling with temperature, top-k, top-p, min-p and repetition
penalty, applied in transformers' order."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SamplingParams:
    """How tokens are chosen and when generation stops. `do_sample=False` is greedy."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0
    min_p: float = 0.0  # keep tokens at least this share of the likeliest one's probability (0: off)
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    prompt_lookup: int = 0  # draft this many tokens a call from the text so far (see generate.draft); 0: off
    draft_tokens: int = 0  # draft this many tokens a call with the Generator's draft model; 0: off

    def __post_init__(self):
        """The one check of every sampling value, for the commands, the Python API and the server alike (the
        vocabulary's size, which top_k must not exceed, is checked by `check_vocabulary`)."""
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"{name} = {value}: must be a finite number")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens = {self.max_new_tokens}: must be at least 1")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature = {self.temperature}: must be > 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p = {self.top_p}: must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p = {self.min_p}: must be in [0, 1] (0 is off)")
        if self.top_k < 0:
            raise ValueError(f"top_k = {self.top_k}: must be >= 0 (0 keeps every token)")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty = {self.repetition_penalty}: must be > 0 (1 is off)")
        for name in ("prompt_lookup", "draft_tokens"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} = {value}: must be >= 0 (0 is off)")
            if value and self.do_sample:
                raise ValueError(f"{name} = {value}: it verifies drafts against greedy choices; use it with "
                                 "temperature 0, or set it to 0 to sample")
        if self.prompt_lookup and self.draft_tokens:
            raise ValueError(f"prompt_lookup = {self.prompt_lookup} and draft_tokens = {self.draft_tokens}: a call's "
                             "draft comes from the text or from the draft model; set one of them to 0")

    @classmethod
    def from_temperature(cls, temperature: float | None, **settings) -> "SamplingParams":
        """Greedy for no temperature or 0, else sampling at that temperature: how the commands and the server
        read a temperature (OpenAI's default of 1 would make the same request give another answer each time)."""
        if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"temperature = {temperature}: must be a finite number >= 0 (0 is greedy)")
        return cls(do_sample=bool(temperature), temperature=temperature or 1.0, **settings)

    def check_vocabulary(self, vocab_size: int):
        if self.top_k > vocab_size:
            raise ValueError(f"top_k = {self.top_k}: the vocabulary has {vocab_size} tokens; give at most "
                             f"{vocab_size} (0 keeps every token)")


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list[int]) -> int:
        p = self.params
        logits = logits.astype(np.float64)
        if p.repetition_penalty != 1.0 and history:
            seen = np.unique(np.asarray(history))
            scores = logits[seen]
            logits[seen] = np.where(scores > 0, scores / p.repetition_penalty, scores * p.repetition_penalty)
        if not p.do_sample or p.top_k == 1:
            return int(np.argmax(logits))
        logits = logits / p.temperature
        if p.top_k:
            kth = np.partition(logits, -p.top_k)[-p.top_k]
            logits[logits < kth] = -np.inf
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if p.top_p < 1.0:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, p.top_p)) + 1]  # smallest set reaching top_p
            kept = np.zeros_like(probs)
            kept[keep] = probs[keep]
            probs = kept / kept.sum()
        if p.min_p:
            probs = np.where(probs >= p.min_p * probs.max(), probs, 0.0)
            probs /= probs.sum()
        return int(self.rng.choice(len(probs), p=probs))
