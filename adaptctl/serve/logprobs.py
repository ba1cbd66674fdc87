"""Token log-probabilities of generated answers: chat's `logprobs`/`top_logprobs`, completions' `logprobs`
(and `echo`), in OpenAI's shapes.

A log-probability is the model's own: the log-softmax of its logits at that step, before temperature and
top_p reshape them for sampling (vLLM's default, "raw" log-probabilities), so a token's figure does not
depend on how it was drawn.  A logits processor placed ahead of generate's sampling warpers keeps each
step's log-softmax (engine.StepLogprobs); the engine's per-step criterion reads it with the token chosen
and hands each row its entry, so nothing is kept beyond one step and the answer's tokens are the ones it
would have had without.  With echo, a prompt's own tokens are scored by one forward pass over it.

The entries cover the tokens an answer consumed (its `completion_tokens`; where a stop string cut the text,
the tokens that spelled it), then the end token where one ended it (as vLLM's and OpenAI's completions list
it): a score read past the answer (lm-evaluation-harness drops the last entry of an echoed prompt's) would
otherwise lose a prompt token whenever the model chose to end at once.  A token is written as the tokenizer decodes it
alone, so a character split over two tokens shows as U+FFFD in each (as in OpenAI's and vLLM's answers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MAX_TOP_CHAT = 20          # OpenAI's limit on top_logprobs
MAX_TOP_COMPLETION = 5     # and on a completion's logprobs
FLOOR = -9999.0            # what a masked token's -inf is written as (JSON has no infinity; vLLM's choice)


@dataclass
class TokenLogprob:
    """One token: its id, text, log-probability (None for a prompt's first token, which nothing predicts) and
    the `top` most likely at its step."""
    id: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)
    token: str = ""
    alternatives: list[tuple[str, float]] = field(default_factory=list)

    def named(self, tokenizer) -> TokenLogprob:
        """With the texts of the token and its alternatives (on the worker thread, which owns the tokenizer)."""
        self.token = tokenizer.decode([self.id])
        self.alternatives = [(tokenizer.decode([i]), value) for i, value in self.top]
        return self


def entries(latest, tokens: list[int], tops: list[int | None]) -> list[TokenLogprob | None]:
    """Per row, the chosen token's entry with its `tops[row]` alternatives (None: the row asked for none)."""
    import torch

    most = max((k for k in tops if k is not None), default=0)
    chosen = latest.gather(1, torch.tensor(tokens, device=latest.device).unsqueeze(1)).squeeze(1).tolist()
    values, ids = latest.topk(most, dim=-1) if most else (latest[:, :0], latest[:, :0].long())
    return [None if k is None else TokenLogprob(token, chosen[row], list(zip(ids[row, :k].tolist(),
                                                                             values[row, :k].tolist())))
            for row, (token, k) in enumerate(zip(tokens, tops))]


def prompt_entries(latest, ids: list[int], top: int) -> list[TokenLogprob]:
    """A prompt's tokens (echo): latest is the log-softmax after each of them but the last."""
    if len(ids) == 1:
        return [TokenLogprob(ids[0], None)]
    scored = [entry for entry in entries(latest, ids[1:], [top] * (len(ids) - 1)) if entry is not None]
    return [TokenLogprob(ids[0], None), *scored]


def finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else FLOOR


def chat_shape(tokens: list[TokenLogprob]) -> dict:
    """OpenAI's ChoiceLogprobs of a chat completion."""
    def one(text: str, value: float | None) -> dict:
        return {"token": text, "logprob": finite(value), "bytes": list(text.encode("utf-8"))}

    return {"content": [{**one(t.token, t.logprob), "top_logprobs": [one(text, v) for text, v in t.alternatives]}
                        for t in tokens], "refusal": None}


def completion_shape(tokens: list[TokenLogprob], asked: int, echo=None) -> dict:
    """OpenAI's (legacy) Logprobs of a completion, after the prompt's tokens where echoed (echo: jobs.Echo).
    text_offset counts characters of the text returned: the prompt's by its tokens' texts, then the answer's,
    whose leading whitespace an answer alone is stripped of (an offset inside it is 0; echoed, it is kept)."""
    prompt = echo.tokens if echo is not None and echo.tokens is not None else []
    offsets = _offsets([t.token for t in prompt], 0, strip=False)
    offsets += _offsets([t.token for t in tokens], len(echo.text) if echo is not None else 0, strip=echo is None)
    every = [*prompt, *tokens]
    return {"tokens": [t.token for t in every], "token_logprobs": [finite(t.logprob) for t in every],
            "top_logprobs": [_alternatives(t) for t in every] if asked else None, "text_offset": offsets}


def _alternatives(token: TokenLogprob) -> dict | None:
    return None if token.logprob is None else {text: finite(v) for text, v in token.alternatives}


def _offsets(texts: list[str], start: int, strip: bool) -> list[int]:
    joined = "".join(texts)
    lead = len(joined) - len(joined.lstrip()) if strip else 0
    offsets, at = [], 0
    for text in texts:
        offsets.append(start + max(0, at - lead))
        at += len(text)
    return offsets
