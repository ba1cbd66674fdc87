"""`serve --pii` (default: the run's data.pii.action) on generated text, as `predict --pii` screens its output:
personal data counted (report), replaced by typed placeholders (redact), or the answer withheld (refuse).

A withheld answer is OpenAI's: empty content and finish_reason "content_filter".  A span of personal data
may straddle two streamed pieces, so a screened answer is streamed whole when it ends (the stream's shape
is unchanged; only its pace).  Counts go to the server's log, one line per answer that held any.
"""

from __future__ import annotations

import threading

from adaptctl.core import console

WITHHELD = "content_filter"


class Screen:
    def __init__(self, action: str, kinds: tuple[str, ...] | None = None):
        """action: report, redact or refuse (checked where it was read: --pii, or the recipe's data.pii)."""
        from adaptctl.data import pii

        self.action, self.kinds = action, kinds or tuple(pii.KINDS)
        self.holds = action != "report"   # the text may change at its end: nothing is streamed before
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, text: str, reason: str) -> tuple[str, str]:
        """The answer's text and finish reason as the client gets them."""
        from adaptctl.data import pii

        spans = pii.find(text, self.kinds)
        if not spans:
            return text, reason
        kinds = sorted({span.kind for span in spans})
        with self._lock:
            pii.count(self.counts, spans)
        verb = {"report": "sent as it is", "redact": "redacted", "refuse": "withheld"}[self.action]
        console.warn(f"serve: an answer held personal data ({', '.join(kinds)}): {verb}")
        if self.action == "refuse":
            return "", WITHHELD
        return (pii.redact(text, spans) if self.action == "redact" else text), reason

    def summary(self) -> str:
        from adaptctl.data.pii import counted

        return counted(self.counts)


def screen_for(predictor, asked: str | None) -> Screen | None:
    """--pii, else the run's data.pii.action, for a model that generates text; None where nothing is screened."""
    from adaptctl.tasks import get_task

    settings = getattr(predictor.recipe.data, "pii", None)
    action = asked or (settings.action if settings is not None else None)
    if action is None:
        return None
    if not get_task(predictor.task).generates:  # the run's data.pii screened its training data, nothing to do here
        if asked:
            console.warn(f"serve: --pii screens generated text, and a {predictor.task} model generates none")
        return None
    screen = Screen(action, tuple(settings.detect) if settings is not None else None)
    console.info(f"serve: generated text is screened for personal data ({', '.join(screen.kinds)}): {action}"
                 f"{' (answers are streamed whole, once screened)' if action != 'report' else ''}")
    return screen
