"""A conversation with a built model, independent of any user interface (terminal, Python, HTTP).

The history is kept as chat messages rendered with the model's own template; the Generator keeps the KV cache
of everything already run, so each turn prefills only the tokens that the cache does not hold yet.
"""
from __future__ import annotations

from typing import Iterator

from .generate import Completion, Generator
from .model import ContextOverflow
from .sampling import SamplingParams


class HistoryFull(ContextOverflow):
    """The conversation plus the answer's token budget no longer fits the KV cache: reset to go on."""

    hint = "reset the conversation to go on (or rebuild with a larger max_seq_len)"


class ChatSession:
    def __init__(self, generator: Generator, system_prompt: str | None = None):
        if not generator.tokenizer.chat_template:
            raise ValueError(
                f"{generator.model.root} has no chat template in its tokenizer: it is not a chat model; "
                "use `nitro generate` for plain completion"
            )
        self.gen = generator
        self.system_prompt = system_prompt
        self.history: list[dict] = []  # user and assistant messages, oldest first
        self.last: Completion | None = None  # the latest answer's completion (tokens, prefill count, speed)

    @property
    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + self.history

    @property
    def context_tokens(self) -> int:
        """Tokens of the conversation held in the KV cache."""
        return len(self.gen.context)

    def reset(self):
        """Forget the conversation (the system prompt stays)."""
        self.history = []
        self.last = None
        self.gen.reset()

    def send(self, text: str, params: SamplingParams) -> Iterator[str]:
        """Stream the answer to a user message. The exchange joins the history once the answer is complete.

        Raises HistoryFull before anything runs when the conversation, this message and `max_new_tokens` do not
        fit the model's max_seq_len."""
        turn = [{"role": "user", "content": text}]
        stream = self.gen.stream(self.gen.chat_ids(self.messages + turn), params, reuse="prefix",
                                 overflow=HistoryFull)
        return self._record(turn, stream)

    def _record(self, turn: list[dict], stream) -> Iterator[str]:
        yield from stream
        self.last = stream.completion
        self.history += [*turn, {"role": "assistant", "content": stream.completion.text}]
