"""The HTTP routes over one loaded model: OpenAI's /v1/models, /v1/completions, /v1/chat/completions, plus
/health; every refusal is an OpenAI-style error body naming the problem."""
from __future__ import annotations

import hmac
import json
import time
from contextlib import aclosing
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from starlette.exceptions import HTTPException

from nitro.runtime.generate import Generator, Stream

from .protocol import ApiError, ChatRequest, CompletionRequest, Reply, Sampling, describe_validation
from .worker import Worker

OPEN_PATHS = {"/health"}  # answered without the API key, for load balancers and probes


def error_response(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class RequireKey:
    """401 for every request, except OPEN_PATHS, without `Authorization: Bearer <key>`. Plain ASGI, so it
    answers before the body is read or validated."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                error = ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                                      "with the key given to nitro serve --api-key", code="invalid_api_key")
                return await error_response(error)(scope, receive, send)
        await self.app(scope, receive, send)


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


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(generator: Generator, model_name: str, api_key: str | None = None, queue_size: int = 32) -> FastAPI:
    app = FastAPI(title="NITRO", summary=f"OpenAI-compatible API serving {model_name}")
    worker = Worker(queue_size)
    capacity = generator.model.max_seq_len
    created = int(time.time())
    if api_key:
        app.add_middleware(RequireKey, key=api_key)

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError):
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        message, param = describe_validation(exc.errors())
        return error_response(ApiError(400, message, param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(ApiError(exc.status_code, message, code=str(exc.status_code)))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error"))

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "nitro"}

    def check_model(name: str):
        if name != model_name:
            raise ApiError(404, f"model {name!r} is not served here; this server serves {model_name!r}",
                           param="model", code="model_not_found")

    def limit(body: Sampling, prompt_tokens: int, field: str) -> int:
        """max_tokens, checked against the context left after the prompt (all of it when absent)."""
        room = capacity - prompt_tokens
        if prompt_tokens == 0:
            raise ApiError(400, f"{field} is empty: give at least one token of input", param=field)
        if room < 1:
            raise ApiError(400, f"{field}: {prompt_tokens} tokens, but this model's context holds {capacity} "
                                "(input + answer), leaving no room for an answer; shorten the input",
                           param=field, code="context_length_exceeded")
        if body.max_tokens is not None and body.max_tokens > room:
            raise ApiError(400, f"max_tokens = {body.max_tokens} does not fit: the context holds {capacity} "
                                f"tokens, {prompt_tokens} go to the {field}, so at most {room} can be generated",
                           param="max_tokens", code="context_length_exceeded")
        return body.max_tokens or room

    async def answer(request: Request, body: Sampling, reply: Reply, tokenize: Callable[[], list[int]],
                     field: str) -> Response:
        """Queue the request, generate, and answer whole or as a stream; the queue place is held until the
        last byte is sent or the client has gone."""
        check_model(body.model)
        release = worker.admit()
        try:
            try:
                ids = await worker.call(tokenize)
            except TemplateError as exc:
                raise ApiError(400, f"{field}: the model's chat template rejects them: {exc}", param=field)
            stream = generator.stream(ids, body.sampling_params(limit(body, len(ids), field)))
        except BaseException:
            release()
            raise
        if body.stream:
            return EventStream(events(body, reply, stream), on_close=release)
        try:
            text = "".join([delta async for delta in worker.run(stream, request.is_disconnected)])
        finally:
            release()
        if stream.completion is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        return JSONResponse(reply.whole(text, stream.completion))

    async def events(body: Sampling, reply: Reply, stream: Stream) -> AsyncIterator[str]:
        if reply.chat:
            yield sse(reply.chunk(opening=True))
        async with aclosing(worker.run(stream)) as deltas:
            async for delta in deltas:
                yield sse(reply.chunk(delta))
        yield sse(reply.chunk(finish_reason=stream.completion.finish_reason))
        if body.include_usage:
            yield sse(reply.usage_chunk(stream.completion))
        yield sse("[DONE]")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "requests": worker.admitted}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        check_model(name)
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        reply = Reply(chat=False, model=model_name)
        return await answer(request, body, reply, lambda: generator.encode(body.prompt), "prompt")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        messages = [m.model_dump() for m in body.messages]
        reply = Reply(chat=True, model=model_name)
        return await answer(request, body, reply, lambda: generator.chat_ids(messages), "messages")

    return app
