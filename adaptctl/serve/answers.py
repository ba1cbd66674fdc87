"""One answer as it is generated: its tokens, its text as the client may see it so far, where it ends.

The text rules are predict's: an answer is its tokens decoded without special tokens and stripped
(evaluation.generation.answer_text), ending before the first end token.  A request's stop strings cut
it before the first of them, and `max_tokens` ends it with finish_reason "length".

Streaming sends only text that cannot change: the decoded text minus an unfinished UTF-8 character
(decoded as U+FFFD), trailing whitespace (the answer is stripped at its end) and a tail that may be
the start of a stop string.  The pieces sent therefore add up to exactly the answer a non-streaming
request gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from adaptctl.serve.jobs import Answer

if TYPE_CHECKING:
    from adaptctl.serve.logprobs import TokenLogprob
    from adaptctl.serve.screening import Screen


class AnswerText:
    def __init__(self, tokenizer, index: int, end_ids: set[int], max_tokens: int, stops: tuple[str, ...],
                 stream: bool, report_text: Callable, report_answer: Callable, screen: Screen | None = None,
                 scored: bool = False):
        """screen: (text, finish reason) -> what the client gets (serve --pii, screening.py); scored: the
        request asked for its tokens' log-probabilities (logprobs.py), which step() is then given."""
        self.tokenizer, self.index, self.end_ids, self.max_tokens = tokenizer, index, end_ids, max_tokens
        self.stops, self.stream, self.screen = stops, stream, screen
        self.held = screen is not None and screen.holds  # streamed whole at its end
        self._report_text, self._report_answer = report_text, report_answer
        self.ids: list[int] = []
        self.scored: list[TokenLogprob] | None = [] if scored else None
        self.done = False
        self.sent = ""               # the text streamed so far
        self._watch = stream or bool(stops)   # decode at every token only where someone looks at the text

    def step(self, token: int, entry: TokenLogprob | None = None):
        """The next generated token, with its log-probability where asked (tokens after the answer ended are
        the batch's padding: ignored)."""
        if self.done:
            return
        if self.scored is not None and entry is not None:
            self.scored.append(entry)   # the end token too: its figure is how likely the answer was to end here
        if token in self.end_ids:
            self.finish("stop")
            return
        self.ids.append(token)
        if self._watch:
            text, stopped = self._visible()
            if stopped:
                self.finish("stop")
                return
            if not self.held:
                self._send(self._safe(text))
        if len(self.ids) >= self.max_tokens:
            self.finish("length")

    def finish(self, reason: str = "length"):
        if self.done:
            return
        self.done = True
        final = self.text()
        if self.screen is not None:
            final, reason = self.screen(final, reason)
        if final.startswith(self.sent):
            self._report_text(self.index, final[len(self.sent):], reason)
        else:  # the tokenizer decoded a longer text differently from its beginning: what was sent stays sent
            self._report_text(self.index, "", reason)
        named = None if self.scored is None else [entry.named(self.tokenizer) for entry in self.scored]
        self._report_answer(Answer(self.index, final, reason, len(self.ids), named, self._leading()))

    def text(self) -> str:
        """The answer's text: predict's (decoded, stripped), cut before the first stop string."""
        from adaptctl.evaluation.generation import answer_text

        return self._visible()[0].rstrip() if self.stops else answer_text(self.tokenizer, self.ids)

    # ---------------------------------------------------------------------------------- inside
    def _leading(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        return text[:len(text) - len(text.lstrip())]

    def _visible(self) -> tuple[str, bool]:
        """The text so far (stripped at its start, as the answer will be) and whether a stop string ended it."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        found = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        return (text[:min(found)], True) if found else (text, False)

    def _safe(self, text: str) -> str:
        text = text.rstrip().rstrip("\ufffd")
        held = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        return text[:len(text) - held].rstrip()

    def _send(self, safe: str):
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            self._report_text(self.index, safe[len(self.sent):], None)
            self.sent = safe
