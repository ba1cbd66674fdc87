"""A request's decoding settings: the run's evaluate.generation as the defaults, the request's fields
over them, validated by the same rules (recipe.Generation) that a recipe and `adaptctl predict
--max-new-tokens/--temperature` are.

OpenAI's fields map onto them as its API defines them: `max_tokens` is max_new_tokens, `temperature: 0`
decodes greedily, any other temperature (or a `top_p` below 1) samples.  A request that names none of
them decodes as the run evaluated and as `adaptctl predict` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adaptctl.serve.schemas import ServeError

if TYPE_CHECKING:
    from adaptctl.recipe.schema import Generation

# recipe.Generation's field names as the request spells them
REQUEST_NAMES = {"max_new_tokens": "max_tokens", "temperature": "temperature", "do_sample": "temperature",
                 "num_beams": "n"}


@dataclass(frozen=True)
class Decoding:
    generation: Generation          # a recipe.Generation: max_new_tokens, num_beams, do_sample, temperature
    top_p: float | None = None      # nucleus sampling, when sampling
    seed: int | None = None         # seeds the sampling of this request's own batch (see engine.py)
    stops: tuple[str, ...] = ()     # the answer ends before the first of these strings
    logprobs: int | None = None     # alternatives per token's log-probability (logprobs.py); None: not asked
    echo: bool = False              # completions: the prompt comes back before the answer (logprobs.py)

    def batch_key(self, job_id: int) -> tuple:
        """Requests with equal keys can share one model.generate call.  A seeded request is alone in its
        call, so that the same seed gives the same answer whatever else was queued beside it."""
        g = self.generation
        return (g.num_beams, g.do_sample, g.temperature if g.do_sample else None,
                self.top_p if g.do_sample else None, job_id if self.seed is not None else None)


def decoding_of(request, defaults, max_tokens_cap: int) -> Decoding:
    """The Decoding of a chat or completion request; defaults: the run's recipe.Generation."""
    from pydantic import ValidationError

    from adaptctl.recipe.schema import Generation

    fields = {}
    max_tokens = getattr(request, "max_completion_tokens", None) or request.max_tokens
    if max_tokens is not None:
        if max_tokens > max_tokens_cap:
            raise ServeError(400, f"max_tokens {max_tokens} is over this server's limit of {max_tokens_cap} "
                                  "(adaptctl serve --max-tokens)", param="max_tokens")
        fields["max_new_tokens"] = max_tokens
    if request.temperature == 0:
        fields["do_sample"] = False
    elif request.temperature is not None:
        fields.update(do_sample=True, temperature=request.temperature)
    elif request.top_p is not None and request.top_p < 1:
        fields["do_sample"] = True
    try:
        generation = Generation.model_validate({**defaults.model_dump(), **fields})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = REQUEST_NAMES.get(error["loc"][0], error["loc"][0])
        raise ServeError(400, f"{name}: {error['msg']}", param=name) from None
    return Decoding(generation=generation, top_p=request.top_p, seed=request.seed, stops=request.stops(),
                    logprobs=request.logprobs_asked(), echo=getattr(request, "echo", False))


def capped_defaults(defaults, max_tokens_cap: int):
    """The run's settings with max_new_tokens at most the server's cap (said at start-up when cut)."""
    if defaults.max_new_tokens <= max_tokens_cap:
        return defaults
    return defaults.model_copy(update={"max_new_tokens": max_tokens_cap})
