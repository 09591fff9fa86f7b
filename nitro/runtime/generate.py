"""Text generation over a loaded Model: tokenize, prefill, decode, stop, stream.

The Generator mirrors the KV cache in `context` (the token ids whose K/V are cached), so a chat turn whose
prompt extends the cached tokens prefills only the new ones; any other call starts from a clean state.

With `prompt_lookup`, each decode call also runs a draft of the next tokens, copied from where the text's last
tokens occur earlier in it; the greedy choices after each drafted token then come from that one call, as far as
the draft agrees with them, and the cache is rewound past the rest. The text is the plain greedy text. Every such
call runs the same number of tokens (a short draft is padded): a dynamic graph called with another token count
than the last is reshaped by the CPU plugin, which cost more than the padding (benchmarks/README.md, "Prompt
lookup"). The head runs only on the rows whose logits are needed: up to the draft's first miss.

With `draft_tokens` and a draft model (a smaller build with the same tokenizer, e.g. Llama 3.2 1B beside Llama 3.1
8B), the draft is instead the draft model's own greedy continuation, verified the same way; the draft model keeps
its own cache of the text, rewound to what it shares with the next call's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .model import ContextOverflow, Model, check_fits
from .sampling import Sampler, SamplingParams


@dataclass
class Completion:
    """One generation: the new text only (no prompt), its token ids, why it stopped and how fast it ran."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    prefilled_tokens: int  # prompt tokens actually run (fewer than prompt_tokens when the cache is reused)
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    ttft_s: float
    decode_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.token_ids) - 1
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else 0.0

    def summary(self, context: str = "") -> str:
        """One line: prompt tokens (and how many were actually prefilled), new tokens (and whether the answer was
        cut at the token limit), TTFT, decode speed, then `context`."""
        cached = self.prompt_tokens - self.prefilled_tokens
        reused = f" ({self.prefilled_tokens} prefilled, {cached} from cache)" if cached else ""
        cut = ", cut at max_new_tokens" if self.finish_reason == "length" else ""
        return (f"[prompt {self.prompt_tokens} tokens{reused}, {len(self.token_ids)} new tokens, "
                f"TTFT {self.ttft_s:.2f} s, decode {self.decode_tokens_per_s:.1f} tok/s{cut}{context}]")


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The model's own chat template, with the assistant's turn opened."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


REUSE = ("none", "context", "prefix")  # how a prompt may use the KV cache the previous one left (_prefill)
LOOKUP_NGRAM = 3  # the longest run of last tokens a draft is looked up by


def draft(history: list[int], size: int) -> list[int]:
    """Up to `size` tokens that followed the latest earlier occurrence of the text's last LOOKUP_NGRAM tokens
    (or, failing that, of fewer), as prompt-lookup decoding guesses; [] when none recurs."""
    for n in range(min(LOOKUP_NGRAM, len(history) - 1), 0, -1):
        tail = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):
            if history[start:start + n] == tail:
                return history[start + n:start + n + size]
    return []


def looked_up(history: list[int], size: int) -> list[int]:
    """A prompt-lookup draft of exactly `size` tokens after `history` (which ends with the chosen token): copied
    text, looked up again where the copy reaches the end of the history, padded with its last token."""
    guess = draft(history, size)
    while guess and len(guess) < size and (more := draft(history + guess, size - len(guess))):
        guess += more
    return guess + [guess[-1] if guess else history[-1]] * (size - len(guess))


class Generator:
    def __init__(self, model: Model, tokenizer=None, draft_model: Model | None = None):
        """`draft_model`: a smaller build with the same tokenizer, which drafts tokens for greedy streams that ask
        for `draft_tokens`."""
        self.model = model
        self.tokenizer = tokenizer or load_tokenizer(model.root / model.manifest["tokenizer"])
        self.eos_ids = set(model.manifest["eos_token_ids"])
        self.context: list[int] = []
        self.drafter = None if draft_model is None else Generator(draft_model)
        if self.drafter and self.drafter.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(f"the draft model {draft_model.root} has another tokenizer than {model.root} "
                             f"({len(self.drafter.tokenizer)} and {len(self.tokenizer)} tokens): a draft model "
                             "must share the model's tokenizer (as Llama 3.2 1B does Llama 3.1 8B's)")

    def encode(self, text: str) -> list[int]:
        return encode(self.tokenizer, text)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return chat_ids(self.tokenizer, messages)

    def reset(self):
        self.context = []
        self.model.reset()
        if self.drafter:
            self.drafter.reset()

    def guess(self, history: list[int], size: int, vocab_size: int) -> list[int]:
        """This model's greedy continuation of `history`, `size` tokens (of ids below `vocab_size`, the verifying
        model's table); its cache keeps the history, for the next call to rewind to what it shares. The tokens the
        cache lacks run in one call when they are many (a prompt), else one at a time (after a draft taken whole,
        its last token and the next): a dynamic graph called with another token count than the last is reshaped,
        which costs more (SmolLM2 drafting for itself: 40.8 -> 44.2 tok/s)."""
        shared = self._rewind_to_shared(history, "prefix")
        missing = history[shared:]
        for ids in [missing] if len(missing) > 2 else [[token] for token in missing]:
            logits = self.model.forward(ids)
        self.context = list(history)
        tokens = [int(np.argmax(logits[:vocab_size]))]
        while len(tokens) < size:
            self.context.append(tokens[-1])
            tokens.append(int(np.argmax(self.model.forward(tokens[-1:])[:vocab_size])))
        return tokens

    def _rewind_to_shared(self, prompt_ids: list[int], reuse: str) -> int:
        """Rewind the cache to what a prompt may keep of it, and return that many tokens. `reuse`: "none" keeps
        nothing; "context" keeps the cached tokens when all of them begin the prompt (the next turn of the same
        conversation), so a prompt's answer does not depend on an unrelated previous one; "prefix" keeps the
        longest prefix the prompt shares with the cache, which also keeps the cache when a chat template
        re-tokenizes the last answer differently or an answer was interrupted (slots past the position are
        masked, so nothing needs clearing). At least the prompt's last token is left to run, for its logits."""
        if reuse not in REUSE:
            raise ValueError(f"reuse = {reuse!r}: one of {', '.join(REUSE)}")
        shared = 0
        limit = min(len(self.context), len(prompt_ids) - 1)
        if reuse == "prefix":
            while shared < limit and self.context[shared] == prompt_ids[shared]:
                shared += 1
        elif reuse == "context" and len(self.context) <= limit and prompt_ids[:len(self.context)] == self.context:
            shared = len(self.context)
        self.context = list(prompt_ids[:shared])
        self.model.rewind(shared)
        return shared

    def _prefill(self, prompt_ids: list[int], reuse: str) -> tuple[np.ndarray, int]:
        """Run the prompt, or only its part past what the cache keeps of it (see _rewind_to_shared); returns the
        last logits and the tokens run."""
        shared = self._rewind_to_shared(prompt_ids, reuse)
        logits = self.model.forward(prompt_ids[shared:])
        self.context = list(prompt_ids)
        return logits, len(prompt_ids) - shared

    def room(self, prompt_tokens: int) -> int:
        """How many tokens can be generated after a prompt of this length (may be 0 or less)."""
        return self.model.max_seq_len - prompt_tokens

    def stream(self, prompt_ids: list[int], params: SamplingParams, reuse: str = "none",
               overflow: type[ContextOverflow] = ContextOverflow, logprobs: int | None = None) -> "Stream":
        """Check the prompt and its token budget fit, before anything runs (raising ContextOverflow, or the
        `overflow` subclass the caller names), then return the stream that generates when iterated."""
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        if params.draft_tokens and not self.drafter:
            raise ValueError(f"draft_tokens = {params.draft_tokens} needs a draft model, loaded with this one "
                             "(nitro generate --draft-model ROOT; Generator(model, draft_model=...))")
        params.check_vocabulary(self.model.vocab_size)
        check_fits(len(prompt_ids), params.max_new_tokens, self.model.max_seq_len, overflow)
        return Stream(self, prompt_ids, params, reuse, logprobs)

    def generate(self, prompt_ids: list[int], params: SamplingParams, reuse: str = "none") -> Completion:
        s = self.stream(prompt_ids, params, reuse)
        for _ in s:
            pass
        return s.completion


@dataclass
class TokenLogprob:
    """A generated token's log-probability under the model (log-softmax of its logits, before any sampling
    setting), and the `top` likeliest tokens' at that position, likeliest first; tokens as (id, text)."""

    token: tuple[int, str]
    logprob: float
    top: list[tuple[tuple[int, str], float]]


def token_logprob(logits: np.ndarray, token: int, top: int, decode) -> TokenLogprob:
    logits = logits.astype(np.float64)
    logp = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    best = np.argpartition(-logp, top)[:top] if top else np.array([], dtype=np.int64)
    best = best[np.argsort(-logp[best])]
    return TokenLogprob((token, decode([token])), float(logp[token]),
                        [((int(i), decode([int(i)])), float(logp[i])) for i in best])


class Stream:
    """Iterate for text deltas as they are generated; `completion` is set once iteration ends.
    Closing the iterator early (a client went away) stops generation. With `logprobs` (the number of likeliest
    alternatives wanted, 0 for none), `logprobs_so_far` grows by each generated token's TokenLogprob."""

    def __init__(self, gen: Generator, prompt_ids, params: SamplingParams, reuse: str, logprobs: int | None = None):
        self.gen, self.prompt_ids, self.params, self.reuse = gen, list(prompt_ids), params, reuse
        self.logprobs, self.logprobs_so_far = logprobs, []
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        gen, p = self.gen, self.params
        sampler = Sampler(p)
        start = time.perf_counter()
        logits, prefilled = gen._prefill(self.prompt_ids, self.reuse)
        history = list(self.prompt_ids)
        new: list[int] = []
        drafted: list[int] = []  # tokens run after the last chosen one, each with its final hidden state
        rows: list[np.ndarray] = []
        emitted, finish, first_at = "", "length", None
        try:
            while True:
                token = sampler(logits, history)
                if first_at is None:
                    first_at = time.perf_counter()
                if token in gen.eos_ids and not p.ignore_eos:
                    finish = "stop"
                    break
                new.append(token)
                history.append(token)
                if self.logprobs is not None:
                    self.logprobs_so_far.append(token_logprob(logits, token, self.logprobs, gen.tokenizer.decode))
                text, stopped = self._text(new)
                ready = text if stopped else self._settled(text)
                if len(ready) > len(emitted):
                    yield ready[len(emitted):]
                    emitted = ready
                if stopped:
                    finish = "stop"
                    break
                if len(new) >= p.max_new_tokens:
                    break
                gen.context.append(token)
                if drafted and drafted[0] == token:  # the last call ran it already
                    drafted.pop(0)
                    logits = gen.model.logits(rows.pop(0))
                    continue
                if drafted:  # the draft went another way from here: forget what the cache holds past it
                    gen.model.rewind(len(gen.context) - 1)
                logits, drafted, rows = self._run(token, history)
        finally:
            gen.model.rewind(len(gen.context))  # drafted tokens not taken, or a stream closed early
        final, _ = self._text(new)
        if len(final) > len(emitted):
            yield final[len(emitted):]
        end = time.perf_counter()
        self.completion = Completion(
            text=final, token_ids=new, prompt_tokens=len(self.prompt_ids), prefilled_tokens=prefilled,
            finish_reason=finish, ttft_s=first_at - start, decode_s=end - first_at,
        )

    def _run(self, token: int, history: list[int]) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
        """Run the chosen token, and after it a draft from the text (prompt lookup) or from the draft model, as
        long as the caches and the token budget leave room for; returns the logits after the token, the draft and
        the final hidden state after each of its tokens. Every prompt-lookup call drafts the same number of
        tokens (see looked_up), which costs less than the reshape a shorter call would bring."""
        gen, p = self.gen, self.params
        size = min(p.prompt_lookup or p.draft_tokens, p.max_new_tokens - (len(history) - len(self.prompt_ids)),
                   gen.model.max_seq_len - gen.model.position - 1)
        if p.draft_tokens:
            size = min(size, gen.drafter.model.max_seq_len - len(history) + 1)
        if size <= 0:
            return gen.model.forward([token]), [], []
        guess = gen.drafter.guess(history, size, gen.model.vocab_size) if p.draft_tokens else looked_up(history, size)
        rows = gen.model.hidden([token, *guess])
        return gen.model.logits(rows[0]), guess, list(rows[1:])

    def _text(self, ids: list[int]) -> tuple[str, bool]:
        """The decoded new text, cut before the first stop string; and whether one was found."""
        text = self.gen.tokenizer.decode(ids, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in self.params.stop if s) if i >= 0]
        return (text[: min(hits)], True) if hits else (text, False)

    def _settled(self, text: str) -> str:
        """The part of `text` that can be shown already: not a half-decoded character, not the start of a
        stop string that the next tokens might complete."""
        if text.endswith("\ufffd"):
            text = text[:-1]
        longest = max((len(s) for s in self.params.stop), default=0)
        return text[: len(text) - longest + 1] if longest > 1 else text
