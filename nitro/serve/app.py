"""The FastAPI application: the builds it serves (`Served`, a `Slot` each, loaded now or on first use) behind the
routes of nitro/serve/routes.py, the API key check, the request size limit, and the error handlers that turn
every refusal into an OpenAI-style error body naming the problem."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from nitro.artifacts import MANIFEST, ArtifactError, sha256
from nitro.runtime.generate import Generator, load_tokenizer
from nitro.runtime.model import Model

from .protocol import ApiError, describe_validation
from .routes import router
from .worker import Worker

log = logging.getLogger("nitro.serve")
OPEN_PATHS = {"/", "/health"}  # answered without the API key: the chat page (which asks for it), and probes


@dataclass
class Loaded:
    """One build as the server loaded it: its generator (model and tokenizer, used on the model's thread), a
    second tokenizer for the requests (used on the tokenizer's thread), and the build's identity."""

    generator: Generator
    tokenizer: object
    max_token_bytes: int  # the longest token's text: no token stands for more bytes of a prompt
    build: str  # the first 12 hex digits of the manifest's sha256, shown by /health

    @classmethod
    def of(cls, generator: Generator) -> "Loaded":
        model = generator.model
        tokenizer = load_tokenizer(model.root / model.manifest["tokenizer"])
        return cls(generator, tokenizer, max(len(token.encode()) for token in tokenizer.get_vocab()),
                   sha256(model.root / MANIFEST)[:12])

    def check_fits(self, text_bytes: int, field: str):
        """Refuse a text too long for the context before tokenizing it: longer than the longest token times the
        context's slots, it cannot fit, whatever it says (a margin of 2 allows for a normalizer that shortens
        the text before it is split into tokens)."""
        capacity = self.generator.model.max_seq_len
        if text_bytes > 2 * self.max_token_bytes * capacity:
            raise ApiError(400, f"{field}: {text_bytes} bytes of text cannot fit this model's context of {capacity} "
                                f"tokens (no token here holds more than {self.max_token_bytes} bytes); shorten it",
                           param=field, code="context_length_exceeded")


def load(root: Path, check_hashes: bool) -> Loaded:
    return Loaded.of(Generator(Model(root, check_hashes=check_hashes)))


@dataclass
class Slot:
    """One build the server serves under its name: loaded at start, or on the first request that asks for it;
    `reload` loads its folder again, as a rebuild has left it, while the loaded one keeps answering."""

    root: Path
    manifest: dict
    check_hashes: bool = True
    loaded: Loaded | None = None
    loading: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    async def get(self) -> Loaded:
        if self.loaded is None:
            async with self.loading:
                if self.loaded is None:
                    log.info("loading %s, asked for the first time", self.root)
                    try:
                        self.loaded = await asyncio.to_thread(load, self.root, self.check_hashes)
                    except (ArtifactError, ValueError, OSError) as exc:
                        raise ApiError(503, f"model {self.name!r} cannot be loaded: {exc}", kind="server_error")
        return self.loaded

    async def reload(self, worker: Worker):
        """Load the build again on a thread of its own, then swap it in between two requests: the requests
        already waiting finish on the build they were tokenized for. A build that does not load (a rebuild
        still running, a damaged file) leaves the loaded one in place."""
        if self.loaded is None or self.loading.locked():
            return
        async with self.loading:
            try:
                log.info("reloading %s", self.root)
                loaded = await asyncio.to_thread(load, self.root, self.check_hashes)
                async with worker.turn:
                    self.loaded = loaded
                log.info("reloaded %s: serving build %s", self.root, loaded.build)
            except (ArtifactError, ValueError, OSError) as exc:
                log.error("reload of %s failed, still serving build %s: %s", self.root, self.loaded.build, exc)


@dataclass
class Served:
    """The builds a server answers with, by name, and the worker their requests take turns on."""

    slots: dict[str, Slot]
    worker: Worker
    created: int = field(default_factory=lambda: int(time.time()))

    def slot(self, name: str) -> Slot:
        if name not in self.slots:
            raise ApiError(404, f"model {name!r} is not served here; this server serves "
                                f"{', '.join(map(repr, self.slots))}", param="model", code="model_not_found")
        return self.slots[name]

    def cards(self) -> list[dict]:
        return [{"id": name, "object": "model", "created": self.created, "owned_by": "nitro",
                 "context_length": slot.manifest["max_seq_len"]} for name, slot in self.slots.items()]

    async def reload(self):
        for slot in self.slots.values():
            await slot.reload(self.worker)


def create_app(slots: list[Slot], api_key: str | None, queue_size: int, max_request_bytes: int) -> FastAPI:
    """The application over `slots`, the builds to serve (those loaded already, and those to load when first
    asked for)."""
    served = Served({slot.name: slot for slot in slots}, Worker(queue_size))
    names = ", ".join(served.slots)

    @contextlib.asynccontextmanager
    async def reload_on_hangup(app: FastAPI):
        """SIGHUP reloads the loaded builds (where the platform has it)."""
        loop = asyncio.get_running_loop()
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(served.reload()))
        yield

    app = FastAPI(title="NITRO", summary=f"OpenAI-compatible API serving {names}", lifespan=reload_on_hangup)
    app.state.served = served
    app.include_router(router)
    add_error_handlers(app)
    app.add_middleware(LimitBody, max_bytes=max_request_bytes)
    if api_key:  # outermost: a request without the key is refused before its body is read
        app.add_middleware(RequireKey, key=api_key)
    return app


def error_response(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def add_error_handlers(app: FastAPI):
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


class LimitBody:
    """413 for a request whose body is over `max_bytes`, before any of it is parsed: by its Content-Length at
    once, or as soon as a body sent without one grows past the limit. Plain ASGI; the body is read here and
    handed on whole, so no more than `max_bytes` of it is ever held."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(int(declared), scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending the body
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self.refuse(size, scope, receive, send, at_least=True)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, size: int, scope, receive, send, at_least: bool = False):
        error = ApiError(413, f"the request body is {'over ' if at_least else ''}{size} bytes, more than this "
                              f"server takes ({self.max_bytes}; nitro serve --max-request-bytes)",
                         code="request_too_large")
        await error_response(error)(scope, receive, send)
