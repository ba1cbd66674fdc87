"""Personal data in the rows a recipe trains on (data.pii): found by Presidio's pattern recognizers, counted,
and reported, redacted or refused before anything is tokenized.

Presidio's recognizers each pair a pattern with a check where one exists: phone numbers are parsed by
Google's phonenumbers, card numbers must pass the Luhn checksum, IBANs their mod-97 checksum, e-mail
domains a known suffix.  They run without Presidio's NLP engine, so no spaCy model is needed (none can be
installed here); what that leaves out is names, which only a named-entity model finds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

# Presidio's entity for each kind data.pii.detect names, and the placeholder redact writes.
KINDS = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "credit_card": "CREDIT_CARD", "iban": "IBAN_CODE",
         "ip_address": "IP_ADDRESS", "url": "URL"}
PLACEHOLDERS = {kind: f"[{kind.upper()}]" for kind in KINDS}
EXAMPLES = 5  # redacted examples kept for stats.json and the report
URL_TAIL = ".,;:!?)]'\""  # a sentence's punctuation right after a URL is no part of it
ACTIONS = ("report", "redact", "refuse")  # data.pii.action, and predict's and serve's --pii


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


@lru_cache(maxsize=8)
def recognizers(kinds: tuple[str, ...]) -> tuple:
    """Presidio's recognizer of each kind (importing Presidio takes seconds: only when data.pii is set)."""
    # tldextract (the e-mail check) would fetch the public suffix list over the network; its bundled copy serves
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
    )

    made = {"email": EmailRecognizer, "credit_card": CreditCardRecognizer, "iban": IbanRecognizer,
            "ip_address": IpRecognizer, "url": UrlRecognizer,
            # Presidio's regions, and Great Britain's national format (its list has the invalid code UK)
            "phone": lambda: PhoneRecognizer(supported_regions=(*PhoneRecognizer.DEFAULT_SUPPORTED_REGIONS, "GB"))}
    return tuple((kind, made[kind]()) for kind in kinds)


def find(text: str, kinds: tuple[str, ...]) -> list[Span]:
    """The spans of personal data in `text`, without overlaps (the longer span wins: an e-mail address
    holds a domain that the URL recognizer also finds)."""
    found = []
    for kind, recognizer in recognizers(kinds):
        for result in recognizer.analyze(text, entities=[KINDS[kind]], nlp_artifacts=None):
            end = result.end
            while kind == "url" and end < len(text) and not text[end].isspace():
                end += 1  # Presidio's pattern stops at the domain before a query string: "x.com?n=TOKEN" kept the token
            while kind == "url" and end > result.start and text[end - 1] in URL_TAIL:
                end -= 1
            if kind != "url" or is_link(text[result.start:end]):
                found.append(Span(result.start, end, kind))
    kept: list[Span] = []
    for span in sorted(found, key=lambda s: (s.start - s.end, s.start)):  # longest first
        if all(span.end <= other.start or span.start >= other.end for other in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def is_link(found: str) -> bool:
    """Presidio's URL pattern also matches words run together at a full stop ("Stupid.it", "calls..me": .it and
    .me are domains; "4.ro", a list's item).  Kept: a scheme, www. or a path; a bare domain only in lower case,
    without an empty label (".." is no host name) and not starting with a number.  On SMS spam that keeps
    about half of Presidio's matches; what it drops is nearly all such words (bench/RESULTS-privacy.md)."""
    if "://" in found or found.lower().startswith("www.") or "/" in found:
        return True
    return ".." not in found and found == found.lower() and not found.split(".")[0].isdigit()


def redact(text: str, spans: list[Span]) -> str:
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        text = text[:span.start] + PLACEHOLDERS[span.kind] + text[span.end:]
    return text


def strings(value):
    """Every string in a cell: the cell itself, or those inside a list or mapping (a conversation's turns)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def redacted_cell(value, kinds: tuple[str, ...]):
    if isinstance(value, str):
        return redact(value, find(value, kinds))
    if isinstance(value, dict):
        return {key: redacted_cell(item, kinds) for key, item in value.items()}
    if isinstance(value, list):
        return [redacted_cell(item, kinds) for item in value]
    return value


@dataclass
class Tally:
    """What a scan found: counts per kind and per column, the rows holding any, and a few redacted examples."""
    kinds: tuple[str, ...]
    counts: dict = field(default_factory=dict)
    by_column: dict = field(default_factory=dict)
    rows: int = 0
    examples: list = field(default_factory=list)

    def add(self, column: str, text: str, spans: list[Span]):
        for span in spans:
            self.counts[span.kind] = self.counts.get(span.kind, 0) + 1
            column_counts = self.by_column.setdefault(column, {})
            column_counts[span.kind] = column_counts.get(span.kind, 0) + 1
        if spans and len(self.examples) < EXAMPLES:
            self.examples.append(excerpt(text, spans))

    def document(self, action: str) -> dict:
        return {"action": action, "detect": list(self.kinds), "rows": self.rows,
                "counts": {kind: self.counts.get(kind, 0) for kind in self.kinds},
                "by_column": self.by_column, "examples": self.examples,
                "not_detected": "names (no named-entity model offline)"}


def excerpt(text: str, spans: list[Span], width: int = 60) -> str:
    """The text around the first span, every span redacted (the first keeps its offset in the redacted text)."""
    shown, first = redact(text, spans), spans[0]
    start, end = max(0, first.start - width), first.start + len(PLACEHOLDERS[first.kind]) + width
    return ("…" if start else "") + " ".join(shown[start:end].split()) + ("…" if end < len(shown) else "")


def check_action(action: str):
    """--pii's value (predict, serve): one of ACTIONS."""
    if action not in ACTIONS:
        from adaptctl.core.errors import UserError

        raise UserError(f"--pii {action}: not one of {', '.join(ACTIONS)}", hint="e.g. --pii redact")


def count(counts: dict, spans: list[Span]):
    """Add the spans found to `counts` (kind -> how many)."""
    for span in spans:
        counts[span.kind] = counts.get(span.kind, 0) + 1


def counted(counts: dict) -> str:
    """`personal data in the generated text: 2 phone, 1 url`, as predict and serve say it."""
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"
    return f"personal data in the generated text: {found}"
