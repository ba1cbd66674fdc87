"""Load a recipe file: YAML with positions, `extends`, `--set` overrides, and
pydantic validation whose every problem is reported at once as
`FILE:LINE:COL: field.path: message` with a hint.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError, RoundTripConstructor
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from adaptctl.core.errors import UserError
from adaptctl.recipe.schema import API_UNION_FIELDS, API_UNION_TAGS, METHOD_CLASSES, TASKS, Recipe, cross_field_problems, data_field_problems

# Keys whose values are file paths: relative values are taken relative to the
# recipe file that wrote them, so an `extends`ed base may live elsewhere.
PATH_KEYS = {
    ("data", "source", "path"), ("data", "validation", "path"), ("data", "test", "path"),
    ("model", "base"), ("model", "decoder"), ("distill", "teacher"), ("distill", "student", "base"),
    ("train", "distributed", "deepspeed_config"), ("evaluate", "general", "source", "path"),
    ("data", "retrieval", "corpus", "path"), ("data", "retrieval", "embedder"),
}
SOURCE_KEYS = {("data", "source"), ("data", "validation"), ("data", "test"), ("evaluate", "general", "source"),
               ("data", "retrieval", "corpus")}


@dataclass(frozen=True)
class Where:
    origin: str        # file name, or "--set key"
    line: int = 1
    col: int = 1

    def __str__(self):
        return f"{self.origin}:{self.line}:{self.col}" if not self.origin.startswith("--set") else self.origin


@dataclass
class LoadedRecipe:
    recipe: Recipe
    path: Path
    document: dict                     # the merged raw document, as validated
    positions: dict = field(default_factory=dict)


class _Problems:
    def __init__(self):
        self.items: list[str] = []

    def add(self, where: Where, path: tuple, message: str, hint: str | None = None):
        dotted = ".".join(str(p) for p in path) or "(recipe)"
        text = f"{where}: {dotted}: {message}"
        self.items.append(text + (f"\n    hint: {hint}" if hint else ""))

    def raise_if_any(self, path: Path):
        if self.items:
            count = len(self.items)
            raise UserError(f"{path}: {count} problem{'s' * (count > 1)} in the recipe", details=self.items)


# ------------------------------------------------------------------ YAML
# Recipes are read as YAML 1.2, ruamel.yaml's default (PyYAML, which read them before, speaks 1.1):
# yes/no/on/off are strings, which pydantic still takes for true/false fields and a text field keeps
# as written; 1e-4 is a float (PyYAML kept the string "1e-4", which pydantic turned into that float);
# 010 is ten and 1:20 is a string. A recipe that starts with `%YAML 1.1` is read as 1.1.

# A recipe nests four or five levels; ruamel's composer recurses per level and a few hundred levels
# would end in a RecursionError (a traceback), so deeper documents are refused before composing.
MAX_DEPTH = 50
_TOO_DEEP = f"the recipe nests more than {MAX_DEPTH} levels deep"
_TOO_DEEP_HINT = "a recipe is a few levels of sections; check the brackets, indentation and aliases (*name)"

# A recipe is a few hundred values; aliases that expand into millions ("billion laughs") would hang
# the loader, since every alias is copied with its positions.
MAX_NODES = 100_000

_YAML_TAG = "tag:yaml.org,2002:"
# The tags that plain YAML gives without a '!' (and `!!str 5` and the like). `value` is a lone `=`.
_SCALAR_TAGS = {_YAML_TAG + name for name in ("str", "int", "float", "bool", "null", "timestamp", "binary", "value")}
_ALLOWED_TAGS = ((ScalarNode, _SCALAR_TAGS), (SequenceNode, {_YAML_TAG + "seq"}), (MappingNode, {_YAML_TAG + "map"}))
_TAG_HINT = "recipes are plain YAML: remove the '!' tag"


def _read_yaml(path: Path) -> tuple[dict, dict]:
    """The document and a map from key path to its Where."""
    text = _read_text(path)
    yaml = _recipe_yaml()
    with _yaml_errors_located(str(path)):
        root = _compose(yaml, text)
        _require_mapping(root, path)
        document = yaml.constructor.construct_document(root)
    positions: dict = {}
    document = _plain(document, (), _at(str(path), root.start_mark.line, root.start_mark.column), positions)
    return document, positions


def _read_text(path: Path) -> str:
    from adaptctl.data.limits import MAX_RECIPE_BYTES, read_at_most

    try:
        data = read_at_most(path, MAX_RECIPE_BYTES)  # /dev/zero or a huge file: refused, not read for ever
        if data is None:
            raise UserError(f"{path}: more than {MAX_RECIPE_BYTES // 2**20} MiB, which is no recipe",
                            hint="a recipe is a small YAML file; check the path")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"recipe file not found: {path}", hint="check the path; it is relative to the current directory") from None
    except (UnicodeDecodeError, OSError) as exc:  # not UTF-8, a folder, no permission
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UserError(f"{path}: cannot read the recipe ({reason})",
                        hint="a recipe is a UTF-8 YAML file that you may read (check ls -l)") from exc


def _require_mapping(root, path: Path):
    if root is None or root.tag == _YAML_TAG + "null":
        raise UserError(f"{path}: the recipe is empty", hint="run `adaptctl init --task classification` for a starter recipe")
    if not isinstance(root, MappingNode):
        raise UserError(f"{path}:{root.start_mark.line + 1}:1: the recipe must be a mapping of sections, not a {root.tag.rsplit(':', 1)[-1]}",
                        hint="start with `name:`, `task:`, `model:`, `data:`")


def _recipe_yaml() -> YAML:
    yaml = YAML(typ="rt")  # round trip: every mapping and sequence keeps the line and column of its keys and items
    yaml.Constructor = _RecipeConstructor
    yaml.allow_duplicate_keys = False  # DuplicateKeyError instead of the last value winning
    yaml.composer.warn_double_anchors = False  # YAML lets `&x` be defined again (an alias takes the latest); ruamel would warn on stderr
    return yaml


def _compose(yaml: YAML, text: str):
    """The document's root node (None when there is none), once its depth is known to be safe."""
    _refuse_deep_nesting(yaml, text)
    return yaml.compose(text)


def _refuse_deep_nesting(yaml: YAML, text: str):
    """yaml.parse is an event stream, not recursive: it finds the depth without composing. (ruamel's
    YAML().max_depth counts scalars as a level too: no setting of it refuses exactly the documents
    that nest more than MAX_DEPTH mappings and lists.)"""
    depth = 0
    for event in yaml.parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(event.start_mark, _TOO_DEEP, _TOO_DEEP_HINT)
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


class _Refused(Exception):
    """What a recipe may not hold, at the node where the constructor met it."""

    def __init__(self, mark, message: str, hint: str):
        super().__init__(message)
        self.mark, self.hint = mark, hint


class _RecipeConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor, refusing what a recipe must not hold as it meets it."""

    def construct_document(self, node):
        # Build every collection before leaving it (ruamel does so below the root already), so that
        # an alias to the root from inside it is met while the root is still being built.
        self.deep_construct = True
        return super().construct_document(node)

    def construct_object(self, node, deep=False):
        if node in self.recursive_objects:  # ruamel would quietly put None where the alias was
            raise _Refused(node.start_mark, "a YAML alias refers to itself", "a recipe cannot contain itself; remove the alias")
        if not any(isinstance(node, kind) and node.tag in tags for kind, tags in _ALLOWED_TAGS):  # !!python/..., !!set, !custom
            raise _Refused(node.start_mark, f"YAML: tag '{node.tag}' is not allowed", _TAG_HINT)
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError):  # `!!int abc`, `!!bool maybe`, `2024-13-01`: ruamel raises these bare
            if not isinstance(node, ScalarNode):
                raise
            kind = node.tag.rsplit(":", 1)[-1]
            raise _Refused(node.start_mark, f"YAML: '{node.value}' is not a valid {kind}",
                           f"write a valid {kind}, or quote the value to keep it as text") from None

    def flatten_mapping(self, node):
        for key_node, _ in node.value:
            if key_node.tag == _YAML_TAG + "merge":  # merged keys would have no line of their own
                raise _Refused(key_node.start_mark, "YAML: merge keys (<<) are not allowed",
                               "write the keys out; `extends: base.yaml` shares sections between recipes")
        return super().flatten_mapping(node)


@contextmanager
def _yaml_errors_located(origin: str):
    """ruamel's errors, and what the recipe constructor refuses, as `FILE:LINE:COL: ...` user errors."""
    try:
        yield
    except _Refused as refused:
        raise UserError(f"{_at(origin, refused.mark.line, refused.mark.column)}: {refused}", hint=refused.hint) from None
    except DuplicateKeyError as exc:
        mark = exc.problem_mark  # the second occurrence
        raise UserError(f"{_at(origin, mark.line, mark.column)}: duplicate key '{_duplicated_key(exc)}'",
                        hint="each key may appear once per section") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = _at(origin, mark.line, mark.column) if mark else origin
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"{where}: YAML syntax error: {problem}", hint="check indentation, colons and quotes near that line") from None


def _duplicated_key(exc: DuplicateKeyError) -> str:
    # ruamel names the key only in its message: `found duplicate key "r" with value "16" (original value: "8")`
    found = re.match(r'found duplicate key "(.*?)" with value "', exc.problem or "", flags=re.S)
    return found.group(1) if found else str(exc.problem)


def _at(origin: str, line: int, column: int) -> Where:
    """ruamel counts lines and columns from 0; messages from 1."""
    return Where(origin, line + 1, column + 1)


def _plain(value, path: tuple, where: Where, positions: dict):
    """ruamel's round-trip value as the plain dicts, lists and scalars that the rest of the loader and
    pydantic expect, noting each key's (and list item's) Where. An alias is copied wherever it is used."""
    positions[path] = where
    if len(positions) > MAX_NODES:
        raise UserError(f"{where}: the recipe expands to more than {MAX_NODES:,} values", hint="check the YAML aliases (*name)")
    if len(path) > MAX_DEPTH:  # aliases inside aliases nest deeper than the text does
        raise UserError(f"{where}: {_TOO_DEEP}", hint=_TOO_DEEP_HINT)
    if isinstance(value, CommentedMap):
        return {key: _plain(item, path + (key,), key_where, positions) for key, item, key_where in _entries(value, where.origin)}
    if isinstance(value, CommentedSeq):
        return [_plain(item, path + (index,), _at(where.origin, *value.lc.item(index)), positions)
                for index, item in enumerate(value)]
    return _plain_scalar(value)


def _entries(mapping: CommentedMap, origin: str):
    """(plain key, value, the key's Where) for each key of a mapping."""
    for key, value in mapping.items():
        key_where = _at(origin, *mapping.lc.key(key))
        if isinstance(key, (tuple, Mapping)):  # ruamel's CommentedKeySeq and CommentedKeyMap: `? [a, b]`
            raise UserError(f"{key_where}: a key must be a plain name, not a list or mapping",
                            hint="write `key: value`; a '?' or '[' starts a complex key")
        yield _plain_scalar(key), value, key_where


def _plain_scalar(value):
    """ScalarFloat, ScalarBoolean (an int), LiteralScalarString, TimeStamp and the like as the
    Python types they stand for; None, dates and bytes (`!!binary`) are plain already."""
    if isinstance(value, TaggedScalar):  # `!!str 5`, a lone `=`: the other tags were refused
        return value.value
    if isinstance(value, ScalarBoolean):
        return bool(value)
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, datetime.datetime):
        return datetime.datetime.combine(value.date(), value.timetz())
    return value


# --------------------------------------------------------------- extends
def _load_with_extends(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in chain + (path,))
        raise UserError(f"{chain[-1]}: `extends` forms a cycle: {cycle}", hint="remove one of the `extends` lines")
    document, positions = _read_yaml(path)
    _absolutise_paths(document, path.parent)
    parent = document.pop("extends", None)
    if parent is None:
        return document, positions
    if not isinstance(parent, str):
        raise UserError(f"{positions[('extends',)]}: extends: must be a file path", hint="extends: base.yaml")
    parent_path = path.parent / parent
    if not parent_path.exists():  # a folder or an unreadable file is _read_yaml's to explain
        raise UserError(f"{positions[('extends',)]}: extends: {parent_path} does not exist",
                        hint="the path is relative to the recipe that extends it")
    base_doc, base_positions = _load_with_extends(parent_path, chain + (path,))
    return _deep_merge(base_doc, document), {**base_positions, **positions}


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not _replaces_method(key, value, merged[key]):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _replaces_method(key, value: dict, base: dict) -> bool:
    # A child that names another method must not inherit the old method's knobs.
    return key == "method" and "name" in value and value.get("name") != base.get("name")


def _absolutise_paths(document: dict, base_dir: Path):
    for source in SOURCE_KEYS:
        section = _get(document, source)
        if isinstance(section, str):
            _set(document, source, {"path": section})
    for key in PATH_KEYS:
        value = _get(document, key)
        if isinstance(value, str) and not os.path.isabs(value) and _local_path(document, key, base_dir / value):
            _set(document, key, str((base_dir / value).resolve()))
    _absolutise_reward_files(document, base_dir, existing_only=True)


def _absolutise_reward_files(document: dict, base_dir: Path, *, existing_only: bool):
    """rl.rewards[*].python (FILE.py:FUNCTION) with FILE relative to the recipe that wrote it: a file an
    `extends`ed recipe names is resolved against that recipe's folder (existing_only, file by file), what
    remains relative (the recipe's own, --set) against the recipe's folder."""
    from adaptctl.tasks.rewards import PYTHON_SPEC

    entries = _get(document, ("rl", "rewards"))
    for reward in entries if isinstance(entries, list) else []:
        spec = reward.get("python") if isinstance(reward, dict) else None
        found = PYTHON_SPEC.fullmatch(spec) if isinstance(spec, str) else None
        if found is None or os.path.isabs(found["file"]):
            continue
        candidate = base_dir / found["file"]
        if candidate.exists() or not existing_only:
            reward["python"] = f"{candidate.resolve()}:{found['function']}"


def _local_path(document: dict, key: tuple, candidate: Path) -> bool:
    """Whether a relative value names a file beside the recipe (else: a hub id, left as written)."""
    if candidate.exists():
        return True
    # A data file that is missing or a glob: the reader treats it as local when its folder
    # exists, so it must be made absolute here or a parent recipe's paths would resolve
    # against the child's folder.
    return key[-1] == "path" and _get(document, key[:-1] + ("format",)) != "hub" and candidate.parent.is_dir()


def _get(document, path: tuple):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


def _set(document: dict, path: tuple, value, where: Where | None = None):
    for key in path[:-1]:
        document = document.setdefault(key, {})
        if not isinstance(document, dict):
            dotted = ".".join(map(str, path))
            raise UserError(f"{where or '--set ' + dotted}: {key} is not a section",
                            hint="override a leaf value, or the whole list: key=[a, b]")
    document[path[-1]] = value


# -------------------------------------------------------------- overrides
OVERRIDE_KEY = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_0-9][\w-]*)*")


def apply_overrides(document: dict, positions: dict, overrides: list[str], origins: dict[str, Where] | None = None):
    """`--set key.path=value` for each override. `origins` locates a key's problems elsewhere than at
    `--set key` (a sweep's values: at the sweep parameter's line)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key or not OVERRIDE_KEY.fullmatch(key):
            raise UserError(f"--set {override!r}: expected key.path=value", hint="for example --set train.epochs=2")
        where = (origins or {}).get(key) or Where(f"--set {key}")
        value = _override_value(raw, f"--set {key}")
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        _set(document, path, value, where if origins else None)
        positions[path] = where
        for end in range(1, len(path)):  # a section the override created (`--set dataa.text=x`) is its doing too
            positions.setdefault(path[:end], where)


def load_variant(loaded: LoadedRecipe, values: dict, origins: dict[str, Where], drop: tuple[str, ...] = ()) -> LoadedRecipe:
    """`loaded` with `values` ({dotted path: value}) set as `--set path=value` sets them and validated as a
    recipe file is, each problem located at `origins[path]`; the sections in `drop` removed.  A sweep's
    trials are built here.  A new method.name replaces the method section, as `extends` does: a full
    fine-tune must not inherit a LoRA rank."""
    document, positions = copy.deepcopy(loaded.document), dict(loaded.positions)
    for section in drop:
        document.pop(section, None)
    method = document.get("method")
    if "method.name" in values and isinstance(method, dict) and _replaces_method("method", {"name": values["method.name"]}, method):
        document["method"] = {"name": values["method.name"]}
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]  # JSON: YAML reads it back as the same value
    apply_overrides(document, positions, overrides, origins)
    return validate_document(document, positions, loaded.path)


def _override_value(raw: str, origin: str):
    """A --set value read as YAML, as recipes are (`[a, b]` is a list, `3` a number); text that is not
    plain YAML (`a: [b`, a '!' tag) is taken as the text itself."""
    if not raw:
        return ""
    yaml = _recipe_yaml()
    try:
        with _yaml_errors_located(origin):
            node = _compose(yaml, raw)
            value = None if node is None else yaml.constructor.construct_document(node)
        return _plain(value, (), Where(origin), {})
    except UserError:
        return raw


# ------------------------------------------------------------- validation
def _watch_secrets(document: dict):
    """The variables under `secrets:` are redacted from every output from now on (adaptctl/core/redact.py)."""
    from adaptctl.core import redact

    names = document.get("secrets") if isinstance(document, dict) else None
    if isinstance(names, list):
        redact.watch(name for name in names if isinstance(name, str))
    redact.watch(_api_key_names(document))  # api.api_key_env: the API keys, from the start (prepare masks data)


def _api_key_names(document: dict) -> list[str]:
    """Every api block's api_key_env (evaluate.baseline, evaluate.judge, distill.teacher)."""
    found = []
    for section, key in (*API_UNION_FIELDS, ("evaluate", "judge")):
        block = document.get(section) if isinstance(document, dict) else None
        block = block.get(key) if isinstance(block, dict) else None
        api = block.get("api") if isinstance(block, dict) else None
        if isinstance(api, dict) and isinstance(api.get("api_key_env"), str):
            found.append(api["api_key_env"])
    return found


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> LoadedRecipe:
    path = Path(path)
    document, positions = _load_with_extends(path)
    apply_overrides(document, positions, overrides or [])
    return validate_document(document, positions, path)


def validate_document(document: dict, positions: dict, path: Path) -> LoadedRecipe:
    """The recipe in `document`, or a UserError listing every problem at its position."""
    _watch_secrets(document)  # before any message could quote a recipe value
    _absolutise_reward_files(document, path.parent.resolve(), existing_only=False)
    problems = _Problems()
    try:
        recipe = Recipe.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors():
            _report(error, document, positions, problems, path)
        data = document.get("data")
        if document.get("task") in TASKS and isinstance(data, dict):
            for field_path, message, hint in data_field_problems(document["task"], data):
                problems.add(_where(positions, field_path, path), field_path, message, hint)
        problems.raise_if_any(path)
    for field_path, message, hint in (cross_field_problems(recipe) + _template_problems(recipe) + _peft_problems(recipe)
                                      + _tracker_problems(recipe)):
        problems.add(_where(positions, field_path, path), field_path, message, hint)
    problems.raise_if_any(path)
    return LoadedRecipe(recipe=recipe, path=path.resolve(), document=document, positions=positions)


def check_data(loaded: LoadedRecipe, more: Sequence[tuple[tuple, str, str]] = ()):
    """`adaptctl validate`'s look at the data (adaptctl/data/preflight.py), and `more` problems found in
    other files (the base model's config): each problem at its recipe line.  Not part of load_recipe: a
    stage re-reads the data anyway, and later stages need no data at all."""
    from adaptctl.data.preflight import data_problems
    from adaptctl.tasks import get_task

    problems = _Problems()
    found = data_problems(loaded.recipe, loaded.path.parent, get_task(loaded.recipe.task)) + list(more)
    for field_path, message, hint in found:
        problems.add(_where(loaded.positions, field_path, loaded.path), field_path, message, hint)
    problems.raise_if_any(loaded.path)


def _peft_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    # peft's own checks, through the very builder that train uses, so that validate and train never
    # disagree about them: the loader's one import from the methods layer, lazy (and peft itself is
    # imported only for a peft method whose verdict is not cached).
    from adaptctl.methods import get_method
    from adaptctl.methods.peft_methods import config_problems

    method = get_method(recipe.method.name)
    return config_problems(recipe, method.peft_config) if method.is_peft else []


# train.report_to's trackers and the packages the Trainer needs for each (any one of them)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}


def _tracker_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """A tracker that is not installed would stop train after prepare has run, in the Trainer's words:
    said now, at the recipe's line."""
    import importlib.util

    return [(("train", "report_to", i), f"tracker {name} is not installed",
             f"pip install {TRACKER_PACKAGES[name][0]}, or remove {name} from train.report_to")
            for i, name in enumerate(recipe.train.report_to)
            if not any(importlib.util.find_spec(package) for package in TRACKER_PACKAGES.get(name, (name,)))]


def _template_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """Templates that cannot format any row (an unbalanced brace): found here, not at prepare."""
    from adaptctl.data.columns import TEMPLATE_HINT, template_problem

    templates = {key: getattr(recipe.data, key, None) for key in ("text", "label", "prompt", "response")}
    return [(("data", key), f"template {template!r}: {problem}", TEMPLATE_HINT)
            for key, template in templates.items() if isinstance(template, str) and (problem := template_problem(template))]


def _report(error: dict, document: dict, positions: dict, problems: _Problems, path: Path):
    loc = _strip_union_tags(tuple(error["loc"]), document)
    kind = error["type"]
    message, hint = error["msg"], _field_help(loc, document)
    if kind == "extra_forbidden":
        allowed = sorted(_fields_at(loc[:-1], document))
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        message = f"unknown key '{loc[-1]}'"
        hint = f"did you mean '{guess[0]}'?" if guess else f"allowed keys: {', '.join(allowed)}"
    elif kind in ("literal_error", "union_tag_invalid"):
        ctx = error.get("ctx", {})
        choices = re.findall(r"'([^']*)'", ctx.get("expected", "") or ctx.get("expected_tags", ""))
        given = ctx.get("tag", error.get("input"))
        guess = difflib.get_close_matches(str(given), choices, n=1, cutoff=0.5)
        message = f"'{given}' is not one of: {', '.join(choices)}"
        loc = loc + ("name",) if kind == "union_tag_invalid" else loc
        hint = f"did you mean '{guess[0]}'?" if guess else hint
    elif kind == "union_tag_not_found":  # a `method` mapping without `name`
        loc, message = loc + ("name",), "required field is missing"
        hint = f"choose one of: {', '.join(METHOD_CLASSES)}"
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("value_error", "assertion_error"):
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    problems.add(_where(positions, loc, path), loc, message, hint)


def _strip_union_tags(loc: tuple, document: dict) -> tuple:
    # pydantic puts the discriminator value in the location of a tagged union
    # (`method.lora.r`); users wrote `method.r`.
    if len(loc) >= 2 and loc[0] == "method" and loc[1] in METHOD_CLASSES:
        return (loc[0],) + loc[2:]
    if loc[:2] in API_UNION_FIELDS and len(loc) >= 3 and loc[2] in API_UNION_TAGS:  # a name, or an {api: ...} block
        return loc[:2] + loc[3:]
    return loc


def field_location(loaded: LoadedRecipe, loc: tuple) -> Where:
    """Where a field of a loaded recipe is written (or its nearest written section, or the file)."""
    return _where(loaded.positions, loc, loaded.path)


def _where(positions: dict, loc: tuple, path: Path) -> Where:
    for end in range(len(loc), -1, -1):
        if loc[:end] in positions:
            return positions[loc[:end]]
    return Where(str(path))


def _model_at(loc: tuple, document: dict) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Recipe
    for key in loc:
        if isinstance(key, int):
            continue
        if key == "method" and model is Recipe:
            model = METHOD_CLASSES.get(str(_get(document, ("method", "name"))), METHOD_CLASSES["full"])
            continue
        info = model.model_fields.get(key) if model else None
        model = _section_class(info.annotation) if info else None
    return model


def _section_class(annotation):
    import typing

    candidates = [annotation, *getattr(annotation, "__args__", ())]
    candidates += [typing.get_args(c)[0] for c in list(candidates) if typing.get_origin(c) is typing.Annotated]
    candidates += [a for c in list(candidates) for a in getattr(c, "__args__", ()) if typing.get_origin(c) is typing.Union]
    candidates += [typing.get_args(c)[0] for c in list(candidates) if typing.get_origin(c) is typing.Annotated]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _fields_at(loc: tuple, document: dict) -> list[str]:
    model = _model_at(loc, document)
    return list(model.model_fields) if model else []


def _field_help(loc: tuple, document: dict) -> str | None:
    if not loc or isinstance(loc[-1], int):
        return None
    model = _model_at(loc[:-1], document)
    info = model.model_fields.get(loc[-1]) if model else None
    return info.description if info else None
