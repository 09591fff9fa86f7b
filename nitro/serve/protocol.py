"""OpenAI's wire format: the request bodies we accept, the answers and stream chunks we send, the error body.

Sampling follows the runtime, not OpenAI's default of temperature 1: without `temperature` (or with 0) decoding
is greedy, so a request always gets the same answer; a positive temperature samples, with `top_p` and `seed`.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from nitro.runtime.generate import Completion
from nitro.runtime.sampling import SamplingParams

# Accepted by OpenAI but not implemented here: a request that asks for one gets a 400 instead of a quietly
# different answer. Their neutral values (0, false, empty) are fine.
UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "suffix", "logit_bias", "presence_penalty",
               "frequency_penalty", "tools", "functions", "response_format")


class ApiError(Exception):
    """A request the server refuses, answered with `status` and OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """The fields both endpoints share."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def refuse_unsupported(cls, data):
        if isinstance(data, dict):
            asked = [name for name in UNSUPPORTED if data.get(name)]
            if asked:
                raise ValueError(f"{', '.join(asked)}: not supported by this server")
        return data

    def sampling_params(self, max_new_tokens: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return SamplingParams.from_temperature(
            self.temperature, max_new_tokens=max_new_tokens, top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed, stop=stop,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(Sampling):
    prompt: str


class Message(BaseModel):
    role: str
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def join_text_parts(cls, content):
        """OpenAI also takes a list of parts; a text model can use only text parts."""
        if not isinstance(content, list):
            return content
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise ValueError("this model reads text only: give a string or parts {'type': 'text', 'text': ...}")
        return "".join(p["text"] for p in content)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens

    @model_validator(mode="after")
    def merge_max_tokens(self):
        self.max_tokens = self.max_completion_tokens or self.max_tokens
        return self


def describe_validation(errors) -> tuple[str, str | None]:
    """FastAPI's validation errors as one readable message naming each bad field, and the first field."""
    parts, params = [], []
    for error in errors:
        if error["type"] == "json_invalid":
            parts.append(f"the request body is not valid JSON: {error['ctx']['error']} at character "
                         f"{error['loc'][-1]}")
            continue
        where = ".".join(str(p) for p in error["loc"] if p != "body")
        message = error["msg"].removeprefix("Value error, ")
        if not where:
            parts.append(message if error["type"] == "value_error" else
                         "the request body must be a JSON object (send Content-Type: application/json)")
            continue
        params.append(where)
        got = "" if error["type"] == "missing" else f" (got {_short(error.get('input'))})"
        parts.append(f"{where}: {message}{got}")
    return "; ".join(parts), (params[0] if params else None)


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def usage(completion: Completion) -> dict:
    generated = len(completion.token_ids)
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": generated,
            "total_tokens": completion.prompt_tokens + generated}


@dataclass
class Reply:
    """One answer in OpenAI's shape, whole or as stream chunks: a text completion, or a chat message."""

    chat: bool
    model: str
    id: str = field(init=False)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"

    def _envelope(self, choices: list[dict], chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def whole(self, text: str, completion: Completion) -> dict:
        content = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        choice = {"index": 0, **content, "logprobs": None, "finish_reason": completion.finish_reason}
        return {**self._envelope([choice], chunk=False), "usage": usage(completion)}

    def chunk(self, text: str | None = None, finish_reason: str | None = None, opening: bool = False) -> dict:
        """A stream chunk carrying `text`; chat streams open with the assistant's role and close with an
        empty delta, completions close with empty text."""
        if self.chat:
            delta = {"role": "assistant", "content": ""} if opening else {} if text is None else {"content": text}
            content = {"delta": delta}
        else:
            content = {"text": text or ""}
        return self._envelope([{"index": 0, **content, "logprobs": None, "finish_reason": finish_reason}],
                              chunk=True)

    def usage_chunk(self, completion: Completion) -> dict:
        return {**self._envelope([], chunk=True), "usage": usage(completion)}
