"""OpenAI's wire format: the request bodies we accept, the answers and stream chunks we send, the error body.

Sampling follows the runtime, not OpenAI's default of temperature 1: without `temperature` (or with 0) decoding
is greedy, so a request always gets the same answer; a positive temperature samples, with `top_p` and `seed`, and
the fields vLLM and llama.cpp's server take beyond OpenAI's: `top_k`, `min_p`, `repetition_penalty`. Every field
a request sends is honoured or refused with 400: none is ignored.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nitro.runtime.generate import Completion, TokenLogprob
from nitro.runtime.sampling import SamplingParams

# Accepted by OpenAI but not implemented here: a request that asks for one gets a 400 instead of a quietly
# different answer. Their neutral values (0, false, empty, null) are taken as not asking.
UNSUPPORTED = ("echo", "suffix", "logit_bias", "presence_penalty", "frequency_penalty", "tools", "functions",
               "response_format")


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
    """The fields both endpoints share. A field not named here is refused (400), not ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)  # 0: every token
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    prompt_lookup: int | None = Field(None, ge=0)  # greedy only: draft tokens a call (see nitro.runtime.generate)
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id OpenAI's clients may send; nothing to do with the answer

    @model_validator(mode="before")
    @classmethod
    def refuse_unsupported(cls, data):
        if isinstance(data, dict):
            asked = [name for name in UNSUPPORTED if data.get(name)]
            if asked:
                raise ValueError(f"{', '.join(asked)}: not supported by this server")
            data = {k: v for k, v in data.items() if k not in UNSUPPORTED}
        return data

    def sampling_params(self, max_new_tokens: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        given = {name: getattr(self, name) for name in ("top_p", "top_k", "min_p", "repetition_penalty", "seed",
                                                        "prompt_lookup") if getattr(self, name) is not None}
        return SamplingParams.from_temperature(self.temperature, max_new_tokens=max_new_tokens, stop=stop, **given)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(Sampling):
    prompt: str
    logprobs: int | None = Field(None, ge=0, le=5)  # each token's log-probability and this many alternatives

    def logprobs_wanted(self) -> int | None:
        return self.logprobs


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
    logprobs: bool = False  # each token's log-probability
    top_logprobs: int | None = Field(None, ge=0, le=20)  # and this many alternatives (needs logprobs)

    @model_validator(mode="after")
    def merge_max_tokens(self):
        self.max_tokens = self.max_completion_tokens or self.max_tokens
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


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
    """Token counts, with the prompt tokens whose K/V came from the cache the previous request left."""
    generated = len(completion.token_ids)
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": generated,
            "total_tokens": completion.prompt_tokens + generated,
            "prompt_tokens_details": {"cached_tokens": completion.prompt_tokens - completion.prefilled_tokens}}


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

    def whole(self, text: str, completion: Completion, logprobs: list[TokenLogprob] | None = None) -> dict:
        content = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        choice = {"index": 0, **content, "logprobs": self.logprobs(logprobs), "finish_reason": completion.finish_reason}
        return {**self._envelope([choice], chunk=False), "usage": usage(completion)}

    def chunk(self, text: str | None = None, finish_reason: str | None = None, opening: bool = False,
              logprobs: list[TokenLogprob] | None = None) -> dict:
        """A stream chunk carrying `text` (and the log-probabilities of the tokens generated since the last
        chunk); chat streams open with the assistant's role and close with an empty delta, completions close
        with empty text."""
        if self.chat:
            delta = {"role": "assistant", "content": ""} if opening else {} if text is None else {"content": text}
            content = {"delta": delta}
        else:
            content = {"text": text or ""}
        return self._envelope([{"index": 0, **content, "logprobs": self.logprobs(logprobs),
                                "finish_reason": finish_reason}], chunk=True)

    def logprobs(self, entries: list[TokenLogprob] | None) -> dict | None:
        """OpenAI's logprobs object: for chat, `content` with each token's entry and its top alternatives; for
        completions, parallel lists of tokens, their log-probabilities, the alternatives and text offsets."""
        if entries is None:
            return None
        if self.chat:
            def entry(text: str, logprob: float) -> dict:
                return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
            return {"content": [{**entry(e.token[1], e.logprob),
                                 "top_logprobs": [entry(t[1], lp) for t, lp in e.top]} for e in entries],
                    "refusal": None}
        offsets = [0]
        for e in entries[:-1]:
            offsets.append(offsets[-1] + len(e.token[1]))
        return {"tokens": [e.token[1] for e in entries], "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{t[1]: lp for t, lp in e.top} for e in entries], "text_offset": offsets}

    def usage_chunk(self, completion: Completion) -> dict:
        return {**self._envelope([], chunk=True), "usage": usage(completion)}
