"""A reader of the part of Go's text/template that Ollama Modelfile templates use (range with $i, $_,
variables, if / else if / else, eq, ne, and, not, len, slice, .Field, $.Field, string and number
literals, {{- and -}} trimming), so that tests can render adaptctl's Modelfile TEMPLATE as Ollama would,
with its messages and the Modelfile's SYSTEM as Ollama adds it.  No Go toolchain is installed here."""

from __future__ import annotations

import json
import re

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\(|\)|:=|[$.\w]+')


def render(template: str, messages: list[dict], system: str | None = None) -> str:
    """What Ollama writes for a chat: the Modelfile's SYSTEM first when the messages have no system one."""
    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}] + messages
    nodes, _ = _parse(_lex(template), 0, ())
    out: list[str] = []
    root = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    _run(nodes, root, {"$root": root}, out)
    return "".join(out)


def _lex(template: str) -> list:
    items, position = [], 0
    for match in ACTION.finditer(template):
        items.append(("text", template[position:match.start()]))
        items.append(("action", match.group(2), bool(match.group(1)), bool(match.group(3))))
        position = match.end()
    items.append(("text", template[position:]))
    for i, item in enumerate(items):  # trim markers eat the whitespace beside them
        if item[0] == "action":
            if item[2] and items[i - 1][0] == "text":
                items[i - 1] = ("text", items[i - 1][1].rstrip())
            if item[3] and items[i + 1][0] == "text":
                items[i + 1] = ("text", items[i + 1][1].lstrip())
    return items


def _parse(items: list, i: int, stops: tuple) -> tuple[list, int]:
    nodes = []
    while i < len(items):
        item = items[i]
        if item[0] == "text":
            nodes.append(("text", item[1]))
            i += 1
            continue
        words = item[1].split(None, 1)
        head = words[0] if words else ""
        if head in stops or item[1].startswith("else"):
            return nodes, i
        if head in ("if", "range"):
            node, i = _block(items, i, head, item[1][len(head):].strip())
            nodes.append(node)
        else:
            nodes.append(("expr", item[1]))
            i += 1
    return nodes, i


def _block(items: list, i: int, kind: str, head: str) -> tuple[tuple, int]:
    branches, i = [], i + 1
    while True:
        body, i = _parse(items, i, ("end",))
        branches.append((head, body))
        action = items[i][1]
        if action == "end":
            return (kind, branches), i + 1
        head = action[len("else"):].strip()
        head = head[len("if"):].strip() if head.startswith("if") else "true"
        i += 1


def _run(nodes: list, dot, variables: dict, out: list):
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            if ":=" in node[1]:
                name, expr = node[1].split(":=", 1)
                variables[name.strip()] = _eval(expr, dot, variables)
            else:
                out.append(str(_eval(node[1], dot, variables)))
        elif node[0] == "if":
            for condition, body in node[1]:
                if _eval(condition, dot, variables):
                    _run(body, dot, variables, out)
                    break
        elif node[0] == "range":
            head, body = node[1][0]
            names, source = head.split(":=")
            index, element = [n.strip() for n in names.split(",")]
            for n, item in enumerate(_eval(source, dot, variables)):
                _run(body, item, {**variables, index: n, element: item}, out)


def _eval(expression: str, dot, variables: dict):
    tokens = TOKEN.findall(expression)
    value, rest = _call(tokens, dot, variables)
    assert not rest, expression
    return value


def _call(tokens: list, dot, variables: dict):
    functions = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "and": lambda a, b: a and b,
                 "not": lambda a: not a, "len": len, "slice": lambda x, i: x[i:]}
    if tokens[0] in functions:
        name, args, tokens = tokens[0], [], tokens[1:]
        while tokens and tokens[0] != ")":
            value, tokens = _operand(tokens, dot, variables)
            args.append(value)
        return functions[name](*args), tokens
    return _operand(tokens, dot, variables)


def _operand(tokens: list, dot, variables: dict):
    token, rest = tokens[0], tokens[1:]
    if token == "(":
        value, rest = _call(rest, dot, variables)
        return value, rest[1:]
    if token.startswith('"'):
        return json.loads(token), rest
    if token.isdigit():
        return int(token), rest
    if token == "true":
        return True, rest
    if token.startswith("$."):
        return variables["$root"][token[2:]], rest
    if token.startswith("$"):
        return variables[token], rest
    if token.startswith("."):
        return dot[token[1:]], rest
    raise ValueError(f"cannot read {token!r}")

