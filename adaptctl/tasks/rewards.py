"""The rewards of task reinforcement (the recipe's `rl.rewards`): functions that score sampled completions,
called by TRL's GRPOTrainer while training and by evaluate on the held-out split's greedy answers.

Each built reward is a TRL reward function: `f(prompts, completions, completion_ids, **columns)` returning one
number (or None: not scored) per completion, named for the logs (`rewards/<name>/mean`).  The columns come from
the prepared split: `reference` (data.response rendered) and `row` (the source row as JSON, from which a
reward's `column` template and a python reward's keyword lists are read).

A python reward is the user's own code, imported from the file the recipe names and hashed into the train
stage's key; like a model's code it is never taken from a model folder (or a model cache), which may come from
someone else.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from adaptctl.core.errors import UserError
from adaptctl.evaluation.metrics import extract_answer, normalize_answer, same_answer

PYTHON_SPEC = re.compile(r"(?P<file>.+\.py):(?P<function>[A-Za-z_]\w*)")
# prepared columns that describe the tokenized prompt, not the data: a python reward is not given them
INTERNAL_COLUMNS = ("input_ids", "attention_mask", "num_tokens", "truncated", "row")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


def build(recipe, split, base_dir: Path) -> list[Callable]:
    """One reward function per rl.rewards entry, in order; `split` (prepared rows with reference and row) gives
    label_match its default labels.  Names: the kind, or the python function's; a repeated name gets _2, _3."""
    functions, seen = [], Counter[str]()
    for index, reward in enumerate(recipe.rl.rewards):
        function, name = BUILDERS[reward.kind](reward, recipe, split, base_dir, index)
        seen[name] += 1
        function.__name__ = name if seen[name] == 1 else f"{name}_{seen[name]}"
        functions.append(function)
    return functions


def weights(recipe) -> list[float]:
    return [reward.weight for reward in recipe.rl.rewards]


def description(recipe, functions: list[Callable], base_dir: Path) -> list[dict]:
    """The train manifest's `rewards`: each reward's logged name, kind and weight, a python one's file and hash."""
    from adaptctl.core.rundir import file_hash

    out = []
    for reward, function in zip(recipe.rl.rewards, functions):
        entry = {"name": function.__name__, "kind": reward.kind, "weight": reward.weight}
        if reward.kind == "python":
            path, name = python_file(reward.python, base_dir)
            entry.update(python=str(path), function=name, sha256=file_hash(path))
        out.append(entry)
    return out


# ------------------------------------------------------------------ references
def _references(reward, recipe) -> Callable[[list, list], list[str]]:
    """(the prepared reference column, the row column) -> each completion's reference text."""
    if reward.column is None:
        return lambda reference, row: [str(r) for r in reference]
    from adaptctl.data.columns import render

    template = reward.column
    return lambda reference, row: [render(template, json.loads(r)).strip() for r in row]


def _answer(text: str, pattern) -> str | None:
    return extract_answer(text, pattern) if pattern is not None else text.strip()


# ------------------------------------------------------------------ the kinds
def _answer_match(reward, recipe, split, base_dir, index):
    """1 when the completion's answer equals the reference's (as numbers where both parse as one), else 0; a
    completion without an answer is 0, a reference without one is taken whole (as evaluate compares them)."""
    pattern = reward.pattern or recipe.evaluate.answer_pattern
    compiled = re.compile(pattern) if pattern else None
    references = _references(reward, recipe)

    def answer_match(prompts=None, completions=(), reference=None, row=None, **kwargs):
        scores = []
        for text, gold in zip(completions, references(reference, row)):
            found, expected = _answer(text, compiled), _answer(gold, compiled)
            scores.append(float(found is not None and same_answer(found, gold if expected is None else expected)))
        return scores

    return answer_match, "answer_match"


def _format(reward, recipe, split, base_dir, index):
    compiled = re.compile(reward.pattern)

    def matches(prompts=None, completions=(), **kwargs):
        return [float(compiled.search(text) is not None) for text in completions]

    return matches, "format"


def _length(reward, recipe, split, base_dir, index):
    """1 inside [min, max]; below min the share of min reached, above max falling to 0 at twice max."""
    low, high, unit = reward.min or 0, reward.max, reward.unit

    def measure(text: str, ids) -> int:
        return len(ids) if unit == "tokens" else len(text.split()) if unit == "words" else len(text)

    def length(prompts=None, completions=(), completion_ids=None, **kwargs):
        ids = completion_ids if completion_ids is not None else [None] * len(completions)
        return [length_score(measure(text, token_ids), low, high) for text, token_ids in zip(completions, ids)]

    return length, "length"


def length_score(size: int, low: int, high: int | None) -> float:
    if size < low:
        return size / low
    if high is not None and size > high:
        return max(0.0, 1.0 - (size - high) / high)
    return 1.0


def _label_match(reward, recipe, split, base_dir, index):
    """1 when the completion names the reference label and no other one (a hedge naming two is 0), comparing
    words normalised as SQuAD does; the labels are the reward's, else every distinct reference of `split`."""
    references = _references(reward, recipe)
    labels = reward.labels or sorted(set(references(split["reference"], split["row"])) - {""})
    normalised = {normalize_answer(label) for label in labels} - {""}

    def label_match(prompts=None, completions=(), reference=None, row=None, **kwargs):
        scores = []
        for text, gold in zip(completions, references(reference, row)):
            words = f" {normalize_answer(text)} "
            named = {label for label in normalised if f" {label} " in words}
            scores.append(float(named == {normalize_answer(gold)}))
        return scores

    return label_match, "label_match"


def _python(reward, recipe, split, base_dir, index):
    path, name = python_file(reward.python, base_dir)
    user_function = load_function(path, name)
    where = f"{path}:{name}"

    def call(prompts=None, completions=(), row=None, **kwargs):
        given = {key: value for key, value in kwargs.items() if key not in INTERNAL_COLUMNS}
        columns = {key: value for key, value in data_columns(row).items()
                   if key not in given and key not in ("prompts", "completions")}
        try:
            values = user_function(prompts=prompts, completions=completions, **given, **columns)
        except Exception as exc:  # noqa: BLE001 (the user's code: any error is theirs, said with where it happened)
            raise UserError(f"{where}: the reward function raised {type(exc).__name__}: {exc}",
                            hint="it is called with keyword lists: prompts, completions, completion_ids, reference "
                                 "and each data column (take the rest with **kwargs)") from None
        return checked_values(values, len(completions), where)

    return call, name


def data_columns(rows) -> dict[str, list]:
    """The source rows (JSON strings) as one list per column, the keyword arguments a python reward gets."""
    if not rows:
        return {}
    decoded = [json.loads(r) for r in rows]
    return {key: [row.get(key) for row in decoded] for key in decoded[0]}


def checked_values(values, count: int, where: str) -> list[float | None]:
    """One number or None per completion; NaN means not scored, as None does."""
    if not isinstance(values, (list, tuple)) or len(values) != count:
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
        raise UserError(f"{where}: the reward function returned {got} for {count} completions",
                        hint="return a list with one number (or None) per completion")
    out = []
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{where}: the reward function returned {value!r}, not a number",
                            hint="return a list with one number (or None) per completion")
        out.append(None if value is None or math.isnan(value) else float(value))
    return out


BUILDERS = {"answer_match": _answer_match, "format": _format, "length": _length, "label_match": _label_match,
            "python": _python}


# ------------------------------------------------------------------ the user's code
def python_file(spec: str, base_dir: Path) -> tuple[Path, str]:
    """(the file, the function name) of `FILE.py:FUNCTION`, the file relative to the recipe's folder."""
    found = PYTHON_SPEC.fullmatch(spec)
    file, name = (found["file"], found["function"]) if found else (spec, "")
    path = Path(file).expanduser()
    return (path if path.is_absolute() else Path(base_dir) / path).resolve(), name


def file_problem(path: Path) -> str | None:
    """Why a reward file cannot be imported: missing, or inside a model folder or a model cache (code that may
    have come with a downloaded model, which adaptctl never runs)."""
    if not path.is_file():
        return f"{path} does not exist" if not path.exists() else f"{path} is not a file"
    for folder in path.parents:
        if _is_model_folder(folder):
            return f"{path} is inside the model folder {folder}, whose code adaptctl never runs"
    from adaptctl.core.rundir import cache_dir

    for cache in (_hf_cache(), cache_dir()):
        if cache is not None and path.is_relative_to(cache.resolve()):
            return f"{path} is inside the model cache {cache}, whose code adaptctl never runs"
    return None


def _is_model_folder(folder: Path) -> bool:
    configs = any((folder / name).is_file() for name in ("config.json", "adapter_config.json"))
    return configs and any(next(folder.glob(pattern), None) is not None for pattern in WEIGHT_FILES)


def _hf_cache() -> Path | None:
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    return Path(constants.HF_HUB_CACHE)


def load_function(path: Path, name: str) -> Callable:
    """The function `name` of the user's file, imported under a name of its own (never onto sys.path)."""
    from adaptctl.core.rundir import file_hash

    if problem := file_problem(path):
        raise UserError(f"rl.rewards: {problem}", hint="name a reward file of your own, relative to the recipe")
    module_name = f"adaptctl_reward_{file_hash(path)[:16]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # importlib knows no loader for the name (rewards.txt, a folder's)
        raise UserError(f"rl.rewards: {path} is not a Python file", hint="name a .py file of your own")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 (the user's file: any error importing it is theirs)
        raise UserError(f"{path}: importing the reward file raised {type(exc).__name__}: {exc}",
                        hint="run `python " + str(path) + "` to see the whole error") from None
    function = getattr(module, name, None)
    if not callable(function):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and getattr(v, "__module__", "") == module_name)
        raise UserError(f"{path}: no function {name!r}" + (" (it is not callable)" if function is not None else ""),
                        hint=f"the file defines: {', '.join(defined) or 'no functions'}")
    return function


def training_inputs(recipe, base_dir: Path, where) -> dict:
    """Content hashes of the python reward files (the train stage's inputs); a missing one, or one inside a
    model folder, is refused at its recipe line before anything runs."""
    from adaptctl.core.rundir import file_hash

    found = {}
    for index, reward in enumerate(recipe.rl.rewards if recipe.rl else []):
        if reward.kind != "python" or reward.python is None:
            continue
        field = ("rl", "rewards", index, "python")
        path, _ = python_file(reward.python, base_dir)
        if problem := file_problem(path):
            raise UserError(f"{where(field)}: {problem}",
                            hint="name a python file of your own, relative to the recipe: rewards.py:my_reward")
        found[f"rl.rewards.{index}.python"] = file_hash(path)
    return found
