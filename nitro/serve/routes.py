"""The HTTP routes: the chat page at /, OpenAI's /v1/models, /v1/completions and /v1/chat/completions, and
/health. Each answers from the builds its app serves (`Served`, nitro/serve/app.py)."""
from __future__ import annotations

import json
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError

from nitro.runtime.generate import Stream, chat_ids, encode
from nitro.runtime.model import ContextOverflow

from .protocol import ApiError, ChatRequest, CompletionRequest, Reply, Sampling
from .worker import Worker

if TYPE_CHECKING:
    from .app import Loaded, Served

router = APIRouter()


def served(request: Request) -> "Served":
    return request.app.state.served


CHAT_PAGE = Path(__file__).parent / "static" / "chat.html"


@router.get("/", include_in_schema=False)
async def chat_page():
    """A page to chat in, over this server's own /v1/chat/completions (one static file, nothing from elsewhere)."""
    return FileResponse(CHAT_PAGE, media_type="text/html")


@router.get("/health")
async def health(request: Request):
    s = served(request)
    return {"status": "ok", "requests": s.worker.admitted,
            "models": {name: {"build": slot.loaded.build if slot.loaded else None, "loaded": slot.loaded is not None}
                       for name, slot in s.slots.items()}}


@router.get("/v1/models")
async def models(request: Request):
    return {"object": "list", "data": served(request).cards()}


@router.get("/v1/models/{name}")
async def model(name: str, request: Request):
    s = served(request)
    s.slot(name)
    return next(card for card in s.cards() if card["id"] == name)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    return await answer(request, body, Reply(chat=False, model=body.model), len(body.prompt.encode()),
                        lambda tokenizer: encode(tokenizer, body.prompt), "prompt")


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    messages = [m.model_dump() for m in body.messages]
    return await answer(request, body, Reply(chat=True, model=body.model),
                        sum(len(m["content"].encode()) for m in messages),
                        lambda tokenizer: chat_ids(tokenizer, messages), "messages")


async def answer(request: Request, body: Sampling, reply: Reply, text_bytes: int, tokenize: Callable[..., list[int]],
                 field: str) -> Response:
    """Queue the request, tokenize it, generate, and answer whole or as a stream; the queue place is held until
    the last byte is sent or the client has gone. The request keeps the build it started on, even if the server
    reloads meanwhile."""
    s = served(request)
    loaded = await s.slot(body.model).get()
    loaded.check_fits(text_bytes, field)
    release = s.worker.admit()
    try:
        stream = await start(s.worker, loaded, body, tokenize, field)
    except BaseException:
        release()
        raise
    if body.stream:
        return EventStream(events(s.worker, body, reply, stream), on_close=release)
    try:
        text = "".join([delta async for delta in s.worker.run(stream, request.is_disconnected)])
    finally:
        release()
    if stream.completion is None:  # the client went away; nobody reads this
        return Response(status_code=499)
    return JSONResponse(reply.whole(text, stream.completion, logprobs_of(stream)))


async def start(worker: Worker, loaded: "Loaded", body: Sampling, tokenize: Callable[..., list[int]],
                field: str) -> Stream:
    """Tokenize on the worker's tokenizer thread and check the request fits; without max_tokens, the answer may
    fill the rest of the context."""
    try:
        ids = await worker.tokenize(tokenize, loaded.tokenizer)
    except TemplateError as exc:
        raise ApiError(400, f"{field}: the model's chat template rejects them: {exc}", param=field)
    gen = loaded.generator
    max_new = body.max_tokens or max(gen.room(len(ids)), 1)
    try:
        # The KV cache keeps the previous request's tokens: a prompt that starts with all of them (the next turn
        # of a conversation) prefills only the rest.
        return gen.stream(ids, body.sampling_params(max_new), reuse="context", logprobs=body.logprobs_wanted())
    except ContextOverflow as exc:
        param = "max_tokens" if body.max_tokens else field
        raise ApiError(400, f"{param}: {exc}", param=param, code="context_length_exceeded")
    except ValueError as exc:  # an empty prompt, a sampling value out of bounds
        raise ApiError(400, f"{field}: {exc}" if not ids else str(exc), param=None if ids else field)


async def events(worker: Worker, body: Sampling, reply: Reply, stream: Stream) -> AsyncIterator[str]:
    if reply.chat:
        yield sse(reply.chunk(opening=True))
    sent = 0  # the tokens whose log-probabilities went out with the chunks so far
    async with aclosing(worker.run(stream)) as deltas:
        async for delta in deltas:
            entries = logprobs_of(stream, sent)
            sent += len(entries or [])
            yield sse(reply.chunk(delta, logprobs=entries))
    yield sse(reply.chunk(finish_reason=stream.completion.finish_reason, logprobs=logprobs_of(stream, sent)))
    if body.include_usage:
        yield sse(reply.usage_chunk(stream.completion))
    yield sse("[DONE]")


def logprobs_of(stream: Stream, start: int = 0):
    """The log-probabilities of the stream's tokens from `start` on, when the request asked for them."""
    return None if stream.logprobs is None else stream.logprobs_so_far[start:]


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class EventStream(StreamingResponse):
    """Server-sent events that run `on_close` however the response ends, even when the client left before the
    first event (the event generator then never starts, so its own cleanup would not run)."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            self.on_close()
