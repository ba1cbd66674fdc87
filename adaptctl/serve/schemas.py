"""The request bodies the server accepts, validated strictly (pydantic, extra="forbid", strict types),
and the error shape every refusal takes: OpenAI's {"error": {"message", "type", "param", "code"}}.

Fields are OpenAI's (chat/completions, completions) and vLLM's (/classify).  A field of OpenAI's API
that this server does not implement (tools, response_format, ...) is refused by name when it
asks for something, not ignored: an answer that silently lacks what was asked for is worse than a 400.
Sent with the value that asks for nothing (presence_penalty: 0, echo: false), as some clients
send them on every request, it is accepted.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaptctl.serve.logprobs import MAX_TOP_CHAT, MAX_TOP_COMPLETION

# At most this many answers (prompts x n) or texts to classify in one request: the body cap bounds the
# text, this bounds the work one request can queue ahead of everyone else's.
MAX_INPUTS = 256
# OpenAI allows 4 stop strings; vLLM any number, and lm-evaluation-harness sends a task's `until` list and the end
# token (5 or more for some tasks): a bound on the per-token check, not a wall a real client hits.
MAX_STOPS = 16


class ServeError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


# Fields of OpenAI's API that ask for something this server does not do, with the values that ask for
# nothing (what some clients send on every request): those are accepted, any other value is refused.
NEUTRAL = {"presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},), "echo": (False,),
           "best_of": (1,), "response_format": ({"type": "text"},), "tools": ([],), "tool_choice": ("none",),
           "suffix": ("",)}


class _Generation(_Strict):
    """The decoding fields chat/completions and completions share."""
    model_config = ConfigDict(extra="allow", strict=True)   # extra fields are checked by unsupported()
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=MAX_INPUTS)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None   # accepted and not used (OpenAI clients send it for abuse tracking)

    def unsupported(self):
        """Refuse a field this server does not know, or an OpenAI field set to ask for what it does not do."""
        for name, value in (self.model_extra or {}).items():
            if name not in NEUTRAL:
                known = ", ".join(type(self).model_fields)
                raise ServeError(400, f"unknown or unsupported field '{name}' (this server takes: {known})",
                                 param=name)
            if value is not None and value not in NEUTRAL[name]:
                raise ServeError(400, f"{name} is not supported by adaptctl serve: leave it out (or send "
                                      f"{json.dumps(NEUTRAL[name][0])}, which asks for nothing)", param=name)

    def logprobs_asked(self) -> int | None:
        """How many alternatives each token's log-probability comes with, or None where none was asked."""
        raise NotImplementedError

    def stops(self) -> tuple[str, ...]:
        found = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(found) > MAX_STOPS:
            raise ServeError(400, f"stop: at most {MAX_STOPS} sequences, not {len(found)}", param="stop")
        if any(s == "" for s in found):
            raise ServeError(400, "stop: an empty string would stop before the first character", param="stop")
        return tuple(found)


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)   # OpenAI's newer name for max_tokens
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_CHAT)

    def logprobs_asked(self) -> int | None:
        if not self.logprobs:
            if self.top_logprobs:
                raise ServeError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            return None
        return self.top_logprobs or 0

    def conversation(self) -> list[dict]:
        """The messages as the tasks read them: {role, content}; OpenAI's developer role is the system's."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(_Generation):
    # text, or token ids read as they are (no template, no cut): what lm-evaluation-harness sends
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False   # the prompt before the answer, and with logprobs the prompt's tokens' own
    # alternatives per token (0: the token's own figure alone); false, as some clients send, asks for nothing
    logprobs: bool | int | None = Field(None, ge=0, le=MAX_TOP_COMPLETION)

    def logprobs_asked(self) -> int | None:
        if self.logprobs is True:
            raise ServeError(400, f"logprobs: a completion's logprobs is how many alternatives each token comes "
                                  f"with (0 to {MAX_TOP_COMPLETION}), not true", param="logprobs")
        return None if self.logprobs is False else self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or a list of token ids (one text, or one prompt's ids, is a list of one)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if not self.prompt:
            raise ServeError(400, "prompt: an empty list has nothing to complete", param="prompt")
        if isinstance(self.prompt[0], int):
            return [self.prompt]  # type: ignore[list-item]
        for i, prompt in enumerate(self.prompt):
            if not prompt:
                raise ServeError(400, f"prompt[{i}]: an empty list of token ids has nothing to complete",
                                 param=f"prompt[{i}]")
        return list(self.prompt)


class ClassifyRequest(_Strict):
    """vLLM's /classify body: `input` is one text or a list of texts."""
    model: str
    input: str | list[str]
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        if not texts:
            raise ServeError(400, "input: an empty list has nothing to classify", param="input")
        if len(texts) > MAX_INPUTS:
            raise ServeError(400, f"input: at most {MAX_INPUTS} texts in one request, not {len(texts)}",
                             param="input")
        return texts


def parse(model: type[BaseModel], body: bytes):
    """The body as `model`, or a 400 naming the first problem and the field it is in."""
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise _refusal(exc, model) from None
    if isinstance(parsed, _Generation):
        parsed.unsupported()
    return parsed


# pydantic puts the name of a union member in an error's location ('stop', 'list[str]', 1): not a field
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple) -> str | None:
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif "[" not in part and "-" not in part and part not in _UNION_TAGS and not part[:1].isupper():
            param += f".{part}" if param else part
    return param or None


def _refusal(exc: ValidationError, model: type[BaseModel]) -> ServeError:
    error = exc.errors()[0]
    param = _param(error["loc"])
    kind = error["type"]
    if kind == "json_invalid":
        return ServeError(400, f"the request body is not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})")
    if kind == "model_type" and not error["loc"]:
        return ServeError(400, "the request body must be a JSON object")
    if kind == "extra_forbidden":
        known = f" (this server takes: {', '.join(model.model_fields)})" if len(error["loc"]) == 1 else ""
        return ServeError(400, f"unknown or unsupported field '{param}'{known}", param=param)
    if kind == "missing":
        return ServeError(400, f"'{param}' is required", param=param)
    return ServeError(400, f"{param}: {error['msg']}" if param else error["msg"], param=param)
