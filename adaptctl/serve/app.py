"""The HTTP API: OpenAI's chat/completions, completions and models, vLLM's /classify, and /health.

Every request passes the Guard first (the API key, then the body cap), then a route parses its body
strictly (schemas.py), makes a Job and waits for the worker.  Every refusal is OpenAI's error shape
with a 4xx status; a failure of the model itself is a 500 with the details in the server's log, never
a traceback in a response.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from adaptctl.core import console
from adaptctl.retrieval import PASSAGE_IDS
from adaptctl.serve.batching import BatchQueue
from adaptctl.serve.decoding import decoding_of
from adaptctl.serve.jobs import Job
from adaptctl.serve.logprobs import chat_shape, completion_shape
from adaptctl.serve.questions import KIND as QUESTION
from adaptctl.serve.questions import questions

if TYPE_CHECKING:
    from adaptctl.recipe.schema import Generation
from adaptctl.serve.schemas import (
    MAX_INPUTS,
    ChatRequest,
    ClassifyRequest,
    CompletionRequest,
    ServeError,
    error_body,
    parse,
)


@dataclass
class ServeState:
    names: tuple[str, ...]        # the model names requests may give; the first is the served name
    task: str
    kind: str                     # "classify" | "generate" (engine.can_serve)
    defaults: Generation          # the run's recipe.Generation, capped at --max-tokens (generate)
    queue: BatchQueue
    max_tokens: int
    created: int
    retrieves: bool = False       # a question to answer from the knowledge base (questions.py)
    screened: bool = False        # answers may be changed after generation (serve --pii redact/refuse)


def create_app(state: ServeState, api_key: str | None, max_request_bytes: int):
    app = FastAPI(title="adaptctl serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ServeError)
    async def refused(request: Request, exc: ServeError):
        console.info(f"serve: {exc.status} {request.method} {request.url.path}: {exc.message}")
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException):
        message = {404: f"no route {request.method} {request.url.path}: this server has GET /v1/models, /health; "
                        "POST /v1/chat/completions, /v1/completions, /classify",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return JSONResponse(error_body(message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        return JSONResponse(error_body(f"the model failed on this request ({type(exc).__name__}); the server's log "
                                       "has the details", "server_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": state.names[0], "task": state.task, "waiting": state.queue.waiting(),
                **state.queue.stats}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        _check_model(state, name)
        return _model_card(state)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = parse(ChatRequest, await request.body())
        job = _generation_job(state, body, "chat", [body.conversation()])
        return await _answer(state, job, body, _ChatShape(body.model))

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = parse(CompletionRequest, await request.body())
        job = _generation_job(state, body, "complete", body.prompts())
        return await _answer(state, job, body, _CompletionShape(body.model))

    async def classify(request: Request):
        body = parse(ClassifyRequest, await request.body())
        _check_model(state, body.model)
        if state.kind != "classify":
            raise ServeError(400, f"this is a {state.task} model, which generates: POST /v1/chat/completions or "
                                  "/v1/completions", param="model")
        job = Job("classify", body.texts(), asyncio.get_running_loop())
        state.queue.submit(job)
        results, counts = await job.done
        return _classified(body.model, results, counts)

    app.post("/classify")(classify)
    app.post("/v1/classify")(classify)
    return Guard(app, api_key, max_request_bytes)


# -------------------------------------------------------------------------------- requests
def _check_model(state: ServeState, name: str):
    if name not in state.names:
        raise ServeError(404, f"the model '{name}' does not exist: this server serves '{state.names[0]}'",
                         param="model", code="model_not_found")


def _generation_job(state: ServeState, body, kind: str, inputs: list) -> Job:
    _check_model(state, body.model)
    if state.kind != "generate":
        raise ServeError(400, f"this is a {state.task} model: POST /classify with {{\"model\", \"input\"}}",
                         param="model")
    if state.retrieves:  # a model that answers from its knowledge base reads the request's questions
        kind, inputs = QUESTION, questions(body)
    if len(inputs) * body.n > MAX_INPUTS:
        raise ServeError(400, f"n: {len(inputs)} prompts x n={body.n} is over {MAX_INPUTS} answers in one request",
                         param="n")
    decoding = decoding_of(body, state.defaults, state.max_tokens)
    if decoding.logprobs is not None:
        _check_logprobs(state, decoding, body.stream)
    if decoding.echo:
        _check_echo(state, body.stream)
    return Job(kind, inputs, asyncio.get_running_loop(), decoding=decoding, n=body.n, stream=body.stream)


def _check_logprobs(state: ServeState, decoding, stream: bool):
    if stream:
        raise ServeError(400, "logprobs are given with whole answers only: ask without stream", param="logprobs")
    if state.screened:
        raise ServeError(400, "logprobs: this server screens answers for personal data (serve --pii), and the "
                              "tokens would show what it redacted or withheld", param="logprobs")
    if decoding.generation.num_beams > 1:
        raise ServeError(400, f"logprobs: this run decodes with beam search (evaluate.generation.num_beams "
                              f"{decoding.generation.num_beams}), whose tokens are chosen by whole beams, not "
                              "step by step", param="logprobs")


def _check_echo(state: ServeState, stream: bool):
    if stream:
        raise ServeError(400, "echo is given with whole answers only: ask without stream", param="echo")
    if state.retrieves:
        raise ServeError(400, "echo: this model answers from its knowledge base: the prompt it reads is built from "
                              "the passages retrieved, not the question sent", param="echo")


async def _answer(state: ServeState, job: Job, body, shape):
    state.queue.submit(job)
    if not job.stream:
        answers, prompt_tokens = await job.done
        shape.cite(job)
        return JSONResponse(shape.whole(answers, _usage(prompt_tokens, answers)))
    await job.encoded  # a refusal (a conversation the run cannot render) is still a plain 400 here
    shape.cite(job)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(_events(job, shape, include_usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(job: Job, shape, include_usage: bool):
    """Server-sent events as OpenAI streams them: a chunk per piece of text, one with each choice's
    finish_reason, the usage chunk when asked, then `data: [DONE]`."""
    finished = 0
    try:
        for index in range(job.rows):
            if first := shape.opening(index):
                yield _event(first)
        while finished < job.rows:
            event = await job.events.get()
            if isinstance(event, BaseException):
                failure = event if isinstance(event, ServeError) else ServeError(500, "the model failed on this "
                                                                                      "request", kind="server_error")
                yield _event(failure.body())
                return
            index, text, reason = event
            if text:
                yield _event(shape.piece(index, text, None))
            if reason is not None:
                yield _event(shape.piece(index, None, reason))
                finished += 1
        if include_usage:
            answers, prompt_tokens = await job.done
            yield _event({**shape.chunk_head(), "choices": [], "usage": _usage(prompt_tokens, answers)})
        yield "data: [DONE]\n\n"
    finally:
        if finished < job.rows:  # the client went away: its rows stop at the next token
            job.cancelled.set()


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(prompt_tokens: int, answers) -> dict:
    completion = sum(answer.completion_tokens for answer in answers)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


# -------------------------------------------------------------------------------- responses
def _model_card(state: ServeState) -> dict:
    return {"id": state.names[0], "object": "model", "created": state.created, "owned_by": "adaptctl",
            "task": state.task}


class _Shape:
    """One response's id, time and model, and the shape of its chunks (OpenAI's chat or completion objects)."""
    prefix, chunk_object = "", ""

    def __init__(self, model: str):
        self.model, self.id, self.created = model, f"{self.prefix}-{uuid.uuid4().hex}", int(time.time())
        self.cited: list | None = None   # per input, the passage ids it was answered from (a model that retrieves)
        self.n = 1
        self.logprobs_asked: int | None = None   # the request's logprobs (decoding.Decoding.logprobs)
        self.echoes: list | None = None          # per input, its echo (jobs.Echo) where the request asked

    def cite(self, job: Job):
        """What the job's answers were given (passages, echoed prompts), known once it is encoded."""
        self.cited, self.n = job.passage_ids, job.n
        self.logprobs_asked, self.echoes = job.decoding.logprobs, job.echoes

    def citation(self, index: int) -> dict:
        """`passage_ids` beside choice `index` (its input's), where the model retrieved; else nothing."""
        return {PASSAGE_IDS: self.cited[index // self.n]} if self.cited is not None else {}

    def chunk_head(self) -> dict:
        return {"id": self.id, "object": self.chunk_object, "created": self.created, "model": self.model}


class _ChatShape(_Shape):
    prefix, chunk_object = "chatcmpl", "chat.completion.chunk"

    def opening(self, index: int) -> dict:
        return self._chunk(index, {"role": "assistant", "content": ""}, None)

    def piece(self, index: int, text: str | None, reason: str | None) -> dict:
        return self._chunk(index, {"content": text} if text else {}, reason)

    def _chunk(self, index: int, delta: dict, reason: str | None) -> dict:
        cited = self.citation(index) if reason is not None else {}   # on the chunk that ends the choice
        return {**self.chunk_head(), "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                  "finish_reason": reason, **cited}]}

    def whole(self, answers, usage: dict) -> dict:
        return {**self.chunk_head(), "object": "chat.completion",
                "choices": [{"index": a.index, "message": {"role": "assistant", "content": a.text},
                             "logprobs": None if a.logprobs is None else chat_shape(a.logprobs),
                             "finish_reason": a.finish_reason, **self.citation(a.index)}
                            for a in answers],
                "usage": usage}


class _CompletionShape(_Shape):
    prefix, chunk_object = "cmpl", "text_completion"   # OpenAI's completion chunks are text_completion objects too

    def opening(self, index: int) -> None:
        return None

    def piece(self, index: int, text: str | None, reason: str | None) -> dict:
        cited = self.citation(index) if reason is not None else {}   # on the chunk that ends the choice
        return {**self.chunk_head(), "choices": [{"index": index, "text": text or "", "logprobs": None,
                                                  "finish_reason": reason, **cited}]}

    def whole(self, answers, usage: dict) -> dict:
        return {**self.chunk_head(), "choices": [{"index": a.index, "text": self._text(a),
                                                  "logprobs": self._logprobs(a), "finish_reason": a.finish_reason,
                                                  **self.citation(a.index)}
                                                 for a in answers],
                "usage": usage}

    def _echo_of(self, index: int):
        return None if self.echoes is None else self.echoes[index // self.n]

    def _text(self, answer) -> str:
        """The answer, after its prompt where echoed: then with the whitespace it begins with, which an answer
        alone is stripped of (the prompt's continuation as the model wrote it)."""
        echo = self._echo_of(answer.index)
        return answer.text if echo is None else echo.text + answer.leading + answer.text

    def _logprobs(self, answer) -> dict | None:
        if answer.logprobs is None:
            return None
        return completion_shape(answer.logprobs, self.logprobs_asked or 0, self._echo_of(answer.index))


def _classified(model: str, results: list[dict], counts: list[int]) -> dict:
    """vLLM's ClassificationResponse (index, label, probs, num_classes per input), plus `score` (the label's
    probability) and `probabilities` (by label name), the figures `adaptctl predict` prints."""
    data = []
    for index, result in enumerate(results):
        probabilities = result["probabilities"]
        label = result["prediction"]
        data.append({"index": index, "label": label, "score": probabilities[label],
                     "probs": list(probabilities.values()), "num_classes": len(probabilities),
                     "probabilities": probabilities})
    prompt_tokens = sum(counts)
    return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": data, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens,
                                    "completion_tokens": 0, "prompt_tokens_details": None}}


# -------------------------------------------------------------------------------- the guard
class Guard:
    """ASGI middleware in front of every route: the API key (401), then the body cap (413), both before the
    body is parsed.  The key is compared in constant time and never written anywhere."""

    def __init__(self, app, api_key: str | None, max_bytes: int):
        self.app, self.key, self.max_bytes = app, api_key, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and not self._authorized(headers.get(b"authorization", b"")):
            return await _reply(send, 401, error_body("missing or wrong API key: send the header "
                                                      "'Authorization: Bearer <key>'", code="invalid_api_key"), scope)
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(send, 413, self._too_large(), scope)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(send, 413, self._too_large(), scope)
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, given = header.decode("latin-1").partition(" ")
        assert self.key is not None  # asked only when the server has a key
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.key.encode())

    def _too_large(self) -> dict:
        return error_body(f"the request body is over this server's limit of {self.max_bytes} bytes "
                          "(adaptctl serve --max-request-bytes)", code="request_too_large")


def _replay(body: bytes, receive):
    """The body, read once by the guard, handed to the app; then the client's later messages (a disconnect)."""
    given = False

    async def replayed():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reply(send, status: int, payload: dict, scope: dict):
    console.info(f"serve: {status} {scope.get('method')} {scope.get('path')}: {payload['error']['message']}")
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
