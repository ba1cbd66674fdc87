"""Calling an OpenAI-compatible endpoint through the official `openai` client, with every answer cached.

The client does the retrying: exponential backoff with jitter on 408, 409, 429, 5xx, timeouts and broken
connections, waiting as a Retry-After header says (openai's BaseClient), up to `api.max_retries` times.
What is left for adaptctl: the key read from the environment variable the recipe names (and redacted like
every secret), a cache lookup before each call and a cache write after it, `max_concurrency` calls in
flight, a probe before long work, and errors that name the recipe field to change.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from adaptctl.core import console, redact
from adaptctl.api.cache import CallCache, request_key
from adaptctl.core.errors import RunFailed, UserError

NO_KEY = "no-key"   # the openai client insists on a key; local servers ignore it


@dataclass
class CallStats:
    """What the calls of one use (baseline, teacher, judge) cost: for --json, the manifest and the report."""
    made: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies: list = field(default_factory=list)

    def document(self, cost_per_1k: float | None = None) -> dict:
        tokens = self.prompt_tokens + self.completion_tokens
        found = {"calls_made": self.made, "calls_cached": self.cached, "calls_failed": self.failed,
                 "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "tokens": tokens,
                 "mean_latency_seconds": round(sum(self.latencies) / len(self.latencies), 4) if self.latencies else None}
        if cost_per_1k is not None:
            found["cost"] = round(tokens / 1000 * cost_per_1k, 6)
        return found


@dataclass(frozen=True)
class Answer:
    text: str | None            # None: the endpoint refused this request (a 4xx other than 429)
    error: str | None = None


class ApiCaller:
    """One endpoint and model as a recipe's api block names them, for one use (`field`: evaluate.baseline.api ...)."""

    def __init__(self, settings, run_root: Path, field: str, where=None):
        self.settings, self.field = settings, field
        self.where = where or (lambda path: ".".join(path))
        self.cache = CallCache(Path(run_root) / "api_cache")
        self.stats = CallStats()
        self._client = None

    # --------------------------------------------------------------- the client
    def client(self):
        if self._client is None:
            import openai

            self._client = openai.OpenAI(base_url=self.settings.base_url, api_key=self._key(),
                                         timeout=self.settings.timeout, max_retries=self.settings.max_retries)
        return self._client

    def _key(self) -> str:
        name = self.settings.api_key_env
        if name is None:
            return NO_KEY
        redact.watch([name])  # the key never reaches a log line or a file the run writes
        value = os.environ.get(name, "").strip()
        if not value:
            raise UserError(f"{self._at('api_key_env')}: the environment variable {name} is not set",
                            hint=f"export {name}=... before the run (the key is read from it and never written)")
        return value

    def _at(self, name: str) -> str:
        return self.where((*self.field.split("."), name))

    # ------------------------------------------------------------------- calls
    def body(self, messages: list[dict]) -> dict:
        """The request, as cached: the messages with the recipe's system prompt first, and the decoding."""
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        return {"messages": system + list(messages), "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens}

    def missing(self, conversations: list[list[dict]]) -> int:
        """How many of these conversations have no cached answer (the calls a run would make)."""
        return sum(self.cache.get(self._key_of(self.body(m))) is None for m in conversations)

    def _key_of(self, body: dict) -> str:
        return request_key(self.settings.cache_as or self.settings.base_url, self.settings.model, body)

    def ask_all(self, conversations: list[list[dict]], what: str) -> list[Answer]:
        """Each conversation's answer, in order: cached ones read, the rest asked `max_concurrency` at a time
        and cached as each arrives.  A call that still fails after the retries stops the stage (exit 3) with
        the answers so far kept; a request the endpoint refuses (4xx) is a failed answer, counted."""
        bodies = [self.body(m) for m in conversations]
        keys = [self._key_of(b) for b in bodies]
        answers: list[Answer | None] = [None] * len(bodies)
        todo = []
        for i, key in enumerate(keys):
            entry = self.cache.get(key)
            if entry is None:
                todo.append(i)
                continue
            answers[i] = Answer(entry["answer"])
            self._count(entry, cached=True)
        console.info(f"{what}: {len(bodies) - len(todo)} answers cached, {len(todo)} calls to make "
                     f"({self.settings.model} at {self.settings.base_url})")
        if todo:
            self.probe()
            with ThreadPoolExecutor(self.settings.max_concurrency) as pool:
                for i, answer in zip(todo, pool.map(lambda i: self._call(bodies[i], keys[i]), todo)):
                    answers[i] = answer
        return [answer for answer in answers if answer is not None]  # every index was asked or cached: all of them

    def _call(self, body: dict, key: str) -> Answer:
        import openai

        start = time.monotonic()
        try:
            response = self.client().chat.completions.create(model=self.settings.model, **body)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._key_error(exc) from None
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
            self.stats.failed += 1
            raise RunFailed(f"{self._at('base_url')}: {self.settings.base_url} failed after {self.settings.max_retries} "
                            f"retries: {_reason(exc)}", hint=f"the answers so far are kept in {self.cache.folder}; "
                            "run the same command again to resume") from None
        except openai.APIStatusError as exc:  # this request refused (too long, filtered): the others go on
            self.stats.failed += 1
            return Answer(None, _reason(exc))
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        entry = {"answer": text, "latency_seconds": round(time.monotonic() - start, 4),
                 "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
                 "completion_tokens": getattr(usage, "completion_tokens", 0) or 0}
        self.cache.put(key, entry)
        self._count(entry, cached=False)
        return Answer(text)

    def _count(self, entry: dict, cached: bool):
        stats = self.stats
        if cached:
            stats.cached += 1
        else:
            stats.made += 1
        stats.prompt_tokens += int(entry.get("prompt_tokens") or 0)
        stats.completion_tokens += int(entry.get("completion_tokens") or 0)
        if entry.get("latency_seconds") is not None:
            stats.latencies.append(float(entry["latency_seconds"]))

    # ------------------------------------------------------------------- probe
    def probe(self) -> None:
        """One short call, with one retry, before long work: an endpoint that cannot be reached, a wrong key
        or an unknown model is an exit 1 naming the field, not a failure an hour in."""
        import openai

        try:
            self.client().with_options(max_retries=1).chat.completions.create(
                model=self.settings.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise self._key_error(exc) from None
        except openai.NotFoundError as exc:
            raise UserError(f"{self._at('model')}: {self.settings.base_url} has no model {self.settings.model!r} "
                            f"({_reason(exc)})", hint="name a model the endpoint serves (GET /v1/models lists them)") from None
        except openai.APIStatusError as exc:
            if exc.status_code < 500:
                return  # it answered (busy, or disliking this tiny request): the endpoint is there
            raise self._unreachable(exc) from None
        except openai.APIError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc) -> UserError:
        return UserError(f"{self._at('base_url')}: cannot reach {self.settings.base_url} ({_reason(exc)})",
                         hint="start the server, or correct the URL (an OpenAI base URL ends in /v1)")

    def _key_error(self, exc) -> UserError:
        name = self.settings.api_key_env
        return UserError(f"{self._at('api_key_env')}: {self.settings.base_url} refused the key "
                         f"{'from ' + name if name else '(none set)'}: {_reason(exc)}",
                         hint="set api.api_key_env to the variable that holds a valid key")


def _reason(exc) -> str:
    status = getattr(exc, "status_code", None)
    message = redact.redact(str(getattr(exc, "message", None) or exc)).strip()
    return f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"
