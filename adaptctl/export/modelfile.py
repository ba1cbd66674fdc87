"""The Ollama Modelfile written beside a GGUF export: FROM the file, a TEMPLATE in Go template syntax that
renders a conversation as the shipped chat template does, the default system prompt, stop tokens and
PARAMETER lines from the run's evaluate.generation (`ollama create NAME -f Modelfile`).

A Jinja chat template cannot be translated into Go in general; a chat template renders each message as
role prefix + content + role suffix, which is what this reads off it: the template is rendered on
conversations of marker texts, and the text around each marker is that role's prefix and suffix.  A
template that does not render that way (one that changes the content, or puts a message anywhere but
after the one before it) gets no Modelfile and a warning, never a wrong one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SYSTEM, USER1, REPLY1, USER2 = "xqzSYSTEMzqx", "xqzUSER1zqx", "xqzREPLY1zqx", "xqzUSER2zqx"


@dataclass(frozen=True)
class ChatParts:
    start: str                   # once, before the first message (a BOS text the template writes)
    affixes: dict                # role -> (prefix, suffix)
    generation: str              # after the last message when it is not the assistant's
    default_system: str | None   # the system message the template adds when a conversation has none


def chat_parts(tokenizer) -> ChatParts | None:
    """The role prefixes and suffixes of the tokenizer's chat template, or None where it is not built so."""
    def render(messages, generation=True):
        return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False,
                                             add_generation_prompt=generation)
    try:
        full = render([("system", SYSTEM), ("user", USER1), ("assistant", REPLY1), ("user", USER2)])
        bare = render([("user", USER1), ("assistant", REPLY1), ("user", USER2)])
        ended = render([("user", USER1), ("assistant", REPLY1), ("user", USER2)], generation=False)
        replied = render([("user", USER1), ("assistant", REPLY1)], generation=False)
    except Exception:  # a template that refuses a system turn, or these turns: no Modelfile  # noqa: BLE001
        return None
    pieces = _split(full, (SYSTEM, USER1, REPLY1, USER2))
    if pieces is None or not bare.endswith(pieces[4]) or not replied.startswith(bare[:bare.find(REPLY1)]):
        return None
    user_suffix = ended[ended.rfind(USER2) + len(USER2):]
    reply_suffix = replied[replied.find(REPLY1) + len(REPLY1):]
    if not (pieces[4].startswith(user_suffix) and pieces[3].startswith(reply_suffix) and pieces[2].startswith(user_suffix)):
        return None
    user_prefix = pieces[3][len(reply_suffix):]
    reply_prefix = pieces[2][len(user_suffix):]
    if not pieces[1].endswith(user_prefix):
        return None
    system_suffix = pieces[1][:len(pieces[1]) - len(user_prefix)]
    start, system_prefix = _start(pieces[0], user_prefix)
    default = _default_system(bare[:bare.find(USER1)], start, system_prefix, system_suffix, user_prefix)
    if default is False:
        return None
    return ChatParts(start, {"system": (system_prefix, system_suffix), "user": (user_prefix, user_suffix),
                             "assistant": (reply_prefix, reply_suffix)}, pieces[4][len(user_suffix):], default)


def _split(text: str, markers: tuple) -> list[str] | None:
    """The texts before, between and after the markers, which must appear once each and in order."""
    pieces, rest = [], text
    for marker in markers:
        if rest.count(marker) != 1:
            return None
        before, rest = rest.split(marker)
        pieces.append(before)
    return pieces + [rest]


def _start(before_system: str, user_prefix: str) -> tuple[str, str]:
    """What the template writes once at the start (a BOS text) and the system turn's prefix, told apart by
    the role name: a system prefix is the user prefix with 'user' written as 'system' (ChatML, Llama 3)."""
    guess = user_prefix.replace("user", "system")
    if guess != user_prefix and before_system.endswith(guess):
        return before_system[:len(before_system) - len(guess)], guess
    return "", before_system


def _default_system(before_user: str, start: str, prefix: str, suffix: str, user_prefix: str):
    """The system message the template writes into a conversation without one (None: it writes none;
    False: it writes something that is not a system turn)."""
    if not before_user.startswith(start) or not before_user.endswith(user_prefix):
        return False
    block = before_user[len(start):len(before_user) - len(user_prefix)]
    if not block:
        return None
    if block.startswith(prefix) and block.endswith(suffix) and len(block) >= len(prefix) + len(suffix):
        return block[len(prefix):len(block) - len(suffix)]
    return False


def go_template(parts: ChatParts) -> str:
    """The Go template (Ollama's .Messages) that writes what the chat template writes: each message with
    its role's prefix and suffix, then the generation prompt when the last message is not a reply."""
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_literal(prefix)}{{{{ .Content }}}}{_literal(suffix)}'
        for i, (role, (prefix, suffix)) in enumerate(parts.affixes.items()))
    return (f"{_literal(parts.start)}{{{{ range $i, $_ := .Messages }}}}"
            f"{{{{ $last := eq (len (slice $.Messages $i)) 1 }}}}{branches}{{{{ end }}}}"
            + (f'{{{{ if and $last (ne .Role "assistant") }}}}{_literal(parts.generation)}{{{{ end }}}}' if parts.generation else "")
            + "{{ end }}")


def _literal(text: str) -> str:
    """Text for the template: as it is, unless Go or the Modelfile's triple quotes would read it as syntax."""
    if "{{" in text or '"""' in text or "\\" in text:
        return "{{ " + json.dumps(text) + " }}"  # a JSON string is a valid Go string literal
    return text


def modelfile(gguf_name: str, parts: ChatParts, stops: list[str], generation, sampling_defaults: dict) -> str:
    """The Modelfile text; `generation`: the recipe's evaluate.generation; `sampling_defaults`: the model's
    generation_config top_k and top_p, which transformers samples with."""
    lines = ["# Written by adaptctl export: `ollama create NAME -f Modelfile` in this folder.",
             f"FROM ./{gguf_name}", f'TEMPLATE """{go_template(parts)}"""']
    if parts.default_system is not None:
        lines.append(f'SYSTEM """{parts.default_system}"""')
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    lines += [f"PARAMETER num_predict {generation.max_new_tokens}", "PARAMETER repeat_penalty 1.0"]
    if generation.do_sample:
        lines += [f"PARAMETER temperature {generation.temperature}",
                  *(f"PARAMETER {k} {v}" for k, v in sampling_defaults.items() if v is not None)]
    else:
        lines.append("PARAMETER temperature 0")
    if generation.num_beams > 1:
        lines.append(f"# evaluate.generation.num_beams is {generation.num_beams}: Ollama has no beam search; "
                     "it decodes greedily")
    return "\n".join(lines) + "\n"
