"""Conversations for causal-lm: rows of chat messages, trained on every assistant turn.

Two shapes of row: `data.messages` names a column in the OpenAI chat format
(`[{"role": "system"|"user"|"assistant", "content": ...}]`), `data.conversations`
one in ShareGPT's (`[{"from": ..., "value": ...}]`, the `from` values mapped to
roles by `data.roles`).  A conversation is rendered with the tokenizer's chat
template (or `data.chat_template` when that is a template string).

Which tokens are trained is found on the rendered text, not guessed from token
counts: for each assistant turn the template is rendered up to the turn (with
the generation prompt) and through it; what the turn adds is the reply and the
template's end-of-turn text.  The trained characters run from the reply's first
character to the end of the first end-of-turn token after it (the tokenizer's
eos token, `<|im_end|>` in ChatML), so the role header before a reply and the
newline after its end token are context, not targets.  The text is tokenized in
pieces cut at those spans' edges, so the trained tokens are exactly those spans.

Evaluation and prediction continue the conversation before its last assistant
turn; the reply is what the model generates.
"""

from __future__ import annotations

import json

from adaptctl.data.columns import RowError
from adaptctl.data.tokens import fit
from adaptctl.core.errors import UserError

ROLES = ("system", "user", "assistant")
COLUMNS = ("messages", "conversations")   # the data fields that name a conversation column


def column_field(data) -> str | None:
    """The data field that names the conversation column (messages or conversations), if any."""
    return next((name for name in COLUMNS if getattr(data, name, None)), None)


# ----------------------------------------------------------------- reading rows
def normalize(value, field: str, roles: dict) -> list[dict]:
    """One row's conversation as [{role, content}]; a problem raises ValueError(message, hint)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("is text, not a JSON list of messages", "give a list of {role, content} objects") from None
    if not isinstance(value, list) or not value:
        raise ValueError("holds no messages", "give a non-empty list of messages")
    key_role, key_text = ("role", "content") if field == "messages" else ("from", "value")
    messages = []
    for n, message in enumerate(value, 1):
        if not isinstance(message, dict) or key_role not in message:
            raise ValueError(f"message {n} has no '{key_role}'", f"each message is {{{key_role}, {key_text}}}")
        said = message[key_role]
        role = said if field == "messages" else roles.get(said)
        if role not in ROLES:
            known = ", ".join(ROLES) if field == "messages" else ", ".join(f"{k} ({v})" for k, v in roles.items())
            how = "" if field == "messages" else "; map it in data.roles"
            raise ValueError(f"message {n} has an unknown role {said!r}", f"the roles are: {known}{how}")
        messages.append({"role": role, "content": "" if message.get(key_text) is None else str(message[key_text])})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("has no assistant turn", "a conversation trains its assistant replies: give at least one")
    return messages


def canonicalize(ds, recipe, source: str):
    """Rows with messages, and for evaluate the conversation before its last reply (prompt, readable)
    and that reply (response, references).  A bad row raises RowError, which prepare locates."""
    field = column_field(recipe.data)
    assert field is not None  # conversation data names its column (recipe rules)
    column = getattr(recipe.data, field)
    if column not in ds.column_names:
        raise UserError(f"{source}: data.{field} names the column {column!r}, which the file lacks",
                        hint=f"the columns are: {', '.join(ds.column_names)}")

    def to_canonical(batch, indices):
        out = {"messages": [], "prompt": [], "response": [], "references": []}
        for value, index in zip(batch[column], indices):
            try:
                messages = normalize(value, field, recipe.data.roles)
            except ValueError as exc:
                message, hint = exc.args
                raise RowError(index, f"data.{field} ({column!r}) {message}", hint) from None
            last = last_reply(messages)
            out["messages"].append(messages)
            out["prompt"].append(readable(messages[:last]))
            out["response"].append(messages[last]["content"])
            out["references"].append([messages[last]["content"]])
        return out

    from adaptctl.data.columns import without_slices

    ds = ds.map(to_canonical, batched=True, with_indices=True, remove_columns=without_slices(ds.column_names),
                desc="read conversations")
    return ds, {}


def last_reply(messages: list[dict]) -> int:
    return max(i for i, m in enumerate(messages) if m["role"] == "assistant")


def readable(messages: list[dict]) -> str:
    """A conversation as the report and predictions show it: one `role: content` line per turn."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


# ------------------------------------------------------------------- the template
def use_template(tokenizer, data, base: str = "the base model"):
    """Give the tokenizer data.chat_template when it is a template string; refuse a tokenizer without one."""
    if isinstance(data.chat_template, str):
        tokenizer.chat_template = data.chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model.base: {base} has no chat template, which conversations are rendered with",
                        hint="set data.chat_template to a Jinja chat template string, or use a chat/instruct model")
    return tokenizer


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    """The chat template applied, the one way adaptctl applies it.  The template is code (data.chat_template,
    or the model's): whatever it raises (an undefined name, its own raise_exception, the sandbox's
    SecurityError) is exit 1 naming the field, and its time and output are bounded (data/limits.py)."""
    from adaptctl.data.limits import check_rendered, time_limit

    try:
        with time_limit():
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return check_rendered(text)
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise UserError(f"data.chat_template: the chat template cannot render a conversation: "
                        f"{type(exc).__name__}: {message}",
                        hint="fix the template (data.chat_template), or the conversation it cannot take (the roles "
                             "it allows, their order)") from None


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]], int]:
    """The rendered conversation, the character spans of every assistant reply with its end-of-turn
    token, and where the last reply's turn begins (its generation prompt's end)."""
    full = render(tokenizer, messages)
    spans, prompt_end = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(tokenizer, messages[:i], True), render(tokenizer, messages[:i + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise UserError("the chat template renders a conversation's beginning differently from the whole "
                            "conversation, so its assistant turns cannot be found",
                            hint="use a chat template that renders turns one after another (data.chat_template)")
        part = through[len(before):]
        start = part.find(message["content"]) if message["content"] else len(part) - len(part.lstrip())
        if start < 0:
            raise UserError("the chat template changes an assistant reply's text, so its tokens cannot be found",
                            hint="use a chat template that writes replies as they are (data.chat_template)")
        reply_end = start + len(message["content"])
        eos = tokenizer.eos_token or ""
        found = part.find(eos, reply_end) if eos else -1
        end = found + len(eos) if found >= 0 else len(part.rstrip())
        spans.append((len(before) + start, len(before) + max(end, reply_end)))
        prompt_end = len(before)
    return full, spans, prompt_end


# ------------------------------------------------------------------- encoding
def encode(conversations: list[list[dict]], tokenizer, max_length: int, head: int = 0) -> dict:
    """input_ids, attention_mask, labels (-100 outside assistant replies), prompt_length (tokens before the
    last reply), num_tokens, truncated, turns, trained_tokens.  Over max_length, data.tokens.fit cuts
    the part before the last reply from the left (keeping its header) and the rest at its end."""
    out: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "labels", "prompt_length", "num_tokens", "truncated",
                           "turns", "trained_tokens")}
    for messages in conversations:
        ids, labels, prompt_length = _labelled(tokenizer, messages)
        p, r, cut = fit(ids[:prompt_length], ids[prompt_length:], max_length, head)
        lp, lr, _ = fit(labels[:prompt_length], labels[prompt_length:], max_length, head)
        out["input_ids"].append(p + r)
        out["attention_mask"].append([1] * (len(p) + len(r)))
        out["labels"].append(lp + lr)
        out["prompt_length"].append(len(p))
        out["num_tokens"].append(len(p) + len(r))
        out["truncated"].append(cut)
        out["turns"].append(len(messages))
        out["trained_tokens"].append(sum(label != -100 for label in lp + lr))
    return out


def _labelled(tokenizer, messages: list[dict]) -> tuple[list[int], list[int], int]:
    """Each piece of the rendered text tokenized on its own, cut at the trained spans and at the last
    reply's generation prompt: a reply's tokens then start where a generated reply starts (after the
    prompt's own tokens), and no token straddles a trained span's edge, as one merged across it would
    (" Blue" after "ASSISTANT:")."""
    full, spans, prompt_end = assistant_spans(tokenizer, messages)
    cuts = sorted({0, len(full), prompt_end, *(edge for span in spans for edge in span)})
    ids, labels, prompt_length = [], list[int](), 0
    for start, end in zip(cuts, cuts[1:]):
        piece = tokenizer(full[start:end], add_special_tokens=False)["input_ids"]
        trained = any(a <= start < b for a, b in spans)
        ids += piece
        labels += piece if trained else [-100] * len(piece)
        if end <= prompt_end:
            prompt_length = len(ids)
    return ids, labels, prompt_length


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """A conversation to continue (predict): rendered with the assistant's generation prompt."""
    return tokenizer(render(tokenizer, messages, True), add_special_tokens=False)["input_ids"]


def parse_input(text: str, field: str, roles: dict) -> list[dict]:
    """predict's input: a JSON list of messages (in the recipe's format) to reply to, or plain text,
    which is one user message."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return [{"role": "user", "content": text}]
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise UserError(f"predict: the conversation is not valid JSON ({exc.msg})",
                        hint='give a JSON list such as [{"role": "user", "content": "..."}]') from None
    key_role, key_text = ("role", "content") if field == "messages" else ("from", "value")
    messages = []
    for message in value if isinstance(value, list) else []:
        said = message.get(key_role) if isinstance(message, dict) else None
        role = said if field == "messages" else roles.get(said)
        if role not in ROLES:
            raise UserError(f"predict: a message has an unknown role {said!r}", hint=f"the roles are: {', '.join(ROLES)}")
        messages.append({"role": role, "content": str(message.get(key_text) or "")})
    if not messages:
        raise UserError("predict: the conversation holds no messages", hint='give [{"role": "user", "content": "..."}]')
    return messages


# ------------------------------------------------------------- the shipped template
def trained_template(tokenizer, data) -> tuple[str | None, str]:
    """The chat template an export ships, one that renders a conversation as this run rendered its prompts,
    and what it is (the model card says).  `tokenizer`: the run's, with the base model's template."""
    if isinstance(data.chat_template, str):
        return data.chat_template, "the recipe's own (data.chat_template)"
    if data.chat_template or column_field(data):
        return tokenizer.chat_template, "the base model's, which training rendered its prompts with"
    if data.response is None:  # continued pretraining: no prompt format was trained, the base's still holds
        return tokenizer.chat_template, "the base model's, unchanged (training read plain text, no prompts)"
    return plain_template(tokenizer), ("a plain one: training read each prompt as it is (data.chat_template: "
                                       "false), so a user message is sent as that prompt and a reply ends with eos")


def plain_template(tokenizer) -> str:
    """Messages written one after another as training joined prompt and response: the tokens the tokenizer
    adds around a text (BOS) first, each reply followed by the eos token.  One user message with the
    generation prompt is then exactly the prompt predict encodes."""
    probe = "x"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), 0)
    before = tokenizer.decode(full[:start])
    after = tokenizer.decode(full[start + len(bare):])
    eos = "{{ eos_token }}" if tokenizer.eos_token else ""
    return (_jinja_text(before) + "{% for message in messages %}{{ message['content'] }}"
            f"{{% if message['role'] == 'assistant' %}}{eos}{{% endif %}}{{% endfor %}}" + _jinja_text(after))


def _jinja_text(text: str) -> str:
    return "{{ " + json.dumps(text) + " }}" if text else ""
