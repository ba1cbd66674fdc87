"""Serving a model that answers from a knowledge base (data.retrieval, docs/kbqa.md).

A request carries a question, not the row of fields that `adaptctl predict` reads: the question becomes the
row {FIELD: question}, FIELD being the one field that data.retrieval.query reads (default `question`), and
goes through predict's own path (Predictor.inputs: the top k passages retrieved with the run's embedder and
index, data.prompt rendered with them), so that the answer is predict's for that row.

The question is a completion's prompt, or the text of a chat request's last user message: the reader was
trained on data.prompt holding one question and its passages, and reads nothing else of a conversation.
"""

from __future__ import annotations

from adaptctl.core.errors import UserError
from adaptctl.serve.schemas import ChatRequest, CompletionRequest, ServeError

KIND = "question"   # the Job kind of a question to answer from the knowledge base


def question_field(predictor) -> str | None:
    """The field a served question fills (None: the model retrieves nothing); a run whose query or prompt
    reads other fields, which a request cannot give, is refused before the server starts."""
    from adaptctl.data.columns import template_columns
    from adaptctl.retrieval import PASSAGES

    retriever = predictor.retriever
    if retriever is None:
        return None
    query = retriever.query
    read = sorted(set(template_columns(query, [query] if query.isidentifier() else [])))   # a bare name is a column
    if len(read) != 1:
        raise UserError(f"serve: data.retrieval.query {query!r} reads {len(read)} fields "
                        f"({', '.join(read) or 'none'}), and a request carries one question",
                        hint="serve a run whose data.retrieval.query reads one field (the default '{question}'), "
                             "or retrieve with adaptctl predict, which reads every field of a row")
    canonical = predictor.spec.input_field(predictor.recipe.data)
    others = sorted(set(template_columns(getattr(predictor.recipe.data, canonical) or "", [])) - {read[0], PASSAGES})
    if others:
        raise UserError(f"serve: data.{canonical} reads {', '.join(others)} besides the question ({read[0]}) and "
                        "the passages, which a request cannot give",
                        hint="retrieve with adaptctl predict, which reads every field of a row")
    return read[0]


def questions(body: ChatRequest | CompletionRequest) -> list[str]:
    """The questions of a request: each prompt of a completion, or a chat's last user message; an empty one
    is a 400 naming where it is."""
    if isinstance(body, CompletionRequest):
        given = body.prompts()
        prompts = [prompt for prompt in given if isinstance(prompt, str)]
        if len(prompts) < len(given):
            raise ServeError(400, "prompt: this model reads each prompt as a question to retrieve passages for: "
                                  "send text, not token ids", param="prompt")
        places = ["prompt"] if isinstance(body.prompt, str) else [f"prompt[{i}]" for i in range(len(prompts))]
        return [_checked(text, place) for text, place in zip(prompts, places)]
    users = [i for i, message in enumerate(body.messages) if message.role == "user"]
    if not users:
        raise ServeError(400, "messages: no user message, and this model answers the last user message's question "
                              "from its knowledge base", param="messages")
    return [_checked(body.messages[users[-1]].text(), f"messages[{users[-1]}].content")]


def _checked(text: str, place: str) -> str:
    if not text.strip():
        raise ServeError(400, f"{place}: the question is empty, and this model retrieves passages for a question",
                         param=place)
    return text
