"""One model, many clients: requests take turns on the model, a bounded number wait, the rest are refused."""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Awaitable, Callable

from nitro.runtime.generate import Stream

from .protocol import ApiError

log = logging.getLogger("nitro.serve")


class Worker:
    """The model's only user. One thread runs every model call and the tokenizer calls generation makes (neither
    is thread-safe), another tokenizes the requests with a tokenizer of its own, so the event loop stays free to
    accept, refuse and stream and a long prompt being tokenized does not hold up the tokens of the one
    generating; requests take turns in arrival order, and at most `queue_size` wait behind the one generating."""

    def __init__(self, queue_size: int):
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="nitro-model")
        self.tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="nitro-tokenize")
        self.turn = asyncio.Lock()
        self.queue_size = queue_size
        self.admitted = 0

    def admit(self) -> Callable[[], None]:
        """Take a place, or refuse at once with 429 when the queue is full. Returns the call that frees it."""
        if self.admitted > self.queue_size:
            raise ApiError(429, f"the server is busy: {self.queue_size} requests are already waiting for the model "
                                "(nitro serve --queue-size); retry later", code="queue_full", kind="rate_limit_error")
        self.admitted += 1

        def release():
            self.admitted -= 1
        return release

    async def call(self, fn, *args):
        """`fn(*args)` on the model's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    async def tokenize(self, fn, *args):
        """`fn(*args)` on the request tokenizer's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.tokenizer_thread, fn, *args)

    async def run(self, stream: Stream, client_gone: Callable[[], Awaitable[bool]] | None = None
                  ) -> AsyncIterator[str]:
        """The text deltas of `stream`, generated when this request's turn comes. Generation stops, and the
        model goes to the next request, as soon as the consumer stops (a streaming client went away and the
        response was cancelled) or `client_gone()` says so; `stream.completion` is then left None."""
        async with self.turn:
            tokens = iter(stream)
            chunks = 0
            try:
                while not (client_gone and await client_gone()):
                    delta = await self.call(next, tokens, None)
                    if delta is None:
                        return
                    chunks += 1
                    yield delta
            finally:
                self.thread.submit(tokens.close)  # after the token in flight, on the model's thread
                if stream.completion is None:
                    log.info("client disconnected after %d text chunks: generation stopped", chunks)
