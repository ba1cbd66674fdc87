"""A request as the worker thread sees it, and the way its results get back to the request's handler.

The handler runs on the server's event loop, the model on the worker thread: everything the worker
reports (the prompt was encoded, a piece of streamed text, an answer, a failure) is handed to the
loop with call_soon_threadsafe, and the handler awaits it.  A job's inputs are raw (texts, or
conversations) and the worker encodes them: tokenizers are not safe to use from two threads at once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)


@dataclass
class Answer:
    """One choice of a generation request."""
    index: int
    text: str
    finish_reason: str          # "stop" (end token or stop string) | "length" (max_tokens)
    completion_tokens: int
    logprobs: list | None = None    # logprobs.TokenLogprob per token, where the request asked
    leading: str = ""               # the whitespace `text` was stripped of at its start (echo puts it back)


@dataclass
class Echo:
    """A completion's prompt as `echo` gives it back: its text, and its tokens' log-probabilities (logprobs.py,
    the first token's None) where the request asked for them."""
    text: str
    tokens: list | None = None


@dataclass(eq=False)
class Job:
    kind: str                               # "classify" | "complete" (a prompt) | "chat" (a conversation)
                                            # | "question" (to answer from the knowledge base)
    inputs: list                            # texts (classify, complete, question) or conversations (chat)
    loop: asyncio.AbstractEventLoop
    decoding: Any = None                    # decoding.Decoding (generation jobs, which alone read it)
    n: int = 1                              # answers per input
    stream: bool = False
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: threading.Event = field(default_factory=threading.Event)
    passage_ids: list | None = None         # per input, the ids of the passages retrieved for it (questions)
    echoes: list[Echo] | None = None        # per input, its echo (completions with echo)

    def __post_init__(self):
        self.encoded: asyncio.Future = self.loop.create_future()   # prompt token count, or the refusal
        self.done: asyncio.Future = self.loop.create_future()      # the result, or the failure
        self.events: asyncio.Queue = asyncio.Queue()               # streamed (index, text, finish_reason)

    @property
    def rows(self) -> int:
        """How many rows of a batch the job fills."""
        return len(self.inputs) * self.n

    # ---------------------------------------------------------- called from the worker thread
    def report_encoded(self, prompt_tokens: int):
        self._call(_settle, self.encoded, prompt_tokens, None)

    def report_text(self, index: int, text: str, finish_reason: str | None = None):
        if self.stream:
            self._call(self.events.put_nowait, (index, text, finish_reason))

    def report_done(self, result):
        self._call(_settle, self.encoded, None, None)   # a job that needed no encoding step
        self._call(_settle, self.done, result, None)

    def report_failure(self, error: BaseException):
        self._call(_settle, self.encoded, None, error)
        self._call(_settle, self.done, None, error)
        if self.stream:
            self._call(self.events.put_nowait, error)

    def _call(self, function, *args):
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop closed (the server stopped): nobody waits for this job any more
            pass


def _settle(future: asyncio.Future, result, error: BaseException | None):
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
        future.exception()  # marks it retrieved: a handler awaits one of a job's futures, not both
    else:
        future.set_result(result)
