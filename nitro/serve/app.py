"""The FastAPI application: one loaded model (`Served`) behind the routes of nitro/serve/routes.py, the API key
check, and the error handlers that turn every refusal into an OpenAI-style error body naming the problem."""
from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from nitro.runtime.generate import Generator

from .protocol import ApiError, describe_validation
from .routes import router
from .worker import Worker

OPEN_PATHS = {"/health"}  # answered without the API key, for load balancers and probes


@dataclass
class Served:
    """The model a server answers with, and the worker its requests take turns on."""

    generator: Generator
    name: str
    worker: Worker
    created: int = field(default_factory=lambda: int(time.time()))

    def card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "nitro"}

    def check_model(self, name: str):
        if name != self.name:
            raise ApiError(404, f"model {name!r} is not served here; this server serves {self.name!r}",
                           param="model", code="model_not_found")


def create_app(generator: Generator, model_name: str, api_key: str | None = None, queue_size: int = 32) -> FastAPI:
    app = FastAPI(title="NITRO", summary=f"OpenAI-compatible API serving {model_name}")
    app.state.served = Served(generator, model_name, Worker(queue_size))
    app.include_router(router)
    add_error_handlers(app)
    if api_key:
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
