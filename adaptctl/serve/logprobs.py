"""Token log-probabilities of generated answers: chat's `logprobs`/`top_logprobs`, completions' `logprobs`.

A log-probability is the model's own: the log-softmax of its logits at that step, before temperature and
top_p reshape them for sampling (vLLM's default, "raw" log-probabilities), so a token's figure does not
depend on how it was drawn.  A logits processor placed ahead of generate's sampling warpers keeps each
step's log-softmax (engine.StepLogprobs); the engine's per-step criterion reads it with the token chosen and hands each row its
entry, so nothing is kept beyond one step and the answer's tokens are the ones it would have had without.

The entries cover the tokens an answer consumed (its `completion_tokens`): not the end token, and, where a
stop string cut the text, the tokens that spelled it.  A token is written as the tokenizer decodes it
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
    """One generated token: its id, text, log-probability and the `top` most likely at its step."""
    id: int
    logprob: float
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


def finite(value: float) -> float:
    return value if math.isfinite(value) else FLOOR


def chat_shape(tokens: list[TokenLogprob]) -> dict:
    """OpenAI's ChoiceLogprobs of a chat completion."""
    def one(text: str, value: float) -> dict:
        return {"token": text, "logprob": finite(value), "bytes": list(text.encode("utf-8"))}

    return {"content": [{**one(t.token, t.logprob), "top_logprobs": [one(text, v) for text, v in t.alternatives]}
                        for t in tokens], "refusal": None}


def completion_shape(tokens: list[TokenLogprob], asked: int) -> dict:
    """OpenAI's (legacy) Logprobs of a completion: text_offset counts characters of the answer as returned,
    whose leading whitespace was stripped (an offset inside it is 0)."""
    texts = [t.token for t in tokens]
    joined = "".join(texts)
    lead = len(joined) - len(joined.lstrip())
    offsets, at = [], 0
    for text in texts:
        offsets.append(max(0, at - lead))
        at += len(text)
    return {"tokens": texts, "token_logprobs": [finite(t.logprob) for t in tokens],
            "top_logprobs": [{text: finite(v) for text, v in t.alternatives} for t in tokens] if asked else None,
            "text_offset": offsets}
