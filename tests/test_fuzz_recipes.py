"""Property test: whatever recipe document or --set override a user writes,
`adaptctl validate` answers 0 or 1 and never shows a traceback (issue 10)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptctl.recipe.schema import METHOD_NAMES, TASKS

VALID = {
    "name": "fuzz",
    "task": "classification",
    "seed": 1,
    "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
    "data": {"source": {"path": "data.csv", "format": "csv"}, "text": "{text}", "label": "label",
             "splits": {"validation": 0.1, "test": 0.1, "stratify": True}, "max_length": 64},
    "method": {"name": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]},
    "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "precision": "auto"},
    "evaluate": {"split": "test", "metrics": ["accuracy", "f1"]},
    "distill": {"teacher": "runs/x", "student": {"layers": 2}, "temperature": 2.0, "alpha": 0.5},
    "export": {"merge_adapter": True},
}
KEYS = sorted({"name", "task", "model", "data", "method", "train", "evaluate", "distill", "export", "extends",
               "base", "source", "path", "format", "text", "label", "splits", "r", "alpha", "epochs",
               "learning_rate", "metrics", "teacher", "student", "layers", "split"})

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([*TASKS, *METHOD_NAMES, "accuracy", "auto", "bf16", "", "~", "[", "{a: 1}", "data.csv"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
random_documents = st.one_of(st.dictionaries(keys, values, max_size=8), values)


def paths_of(document, prefix=()):
    """Every key path in a nested document (lists indexed)."""
    if isinstance(document, dict):
        for key, value in document.items():
            yield prefix + (key,)
            yield from paths_of(value, prefix + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield prefix + (index,)
            yield from paths_of(value, prefix + (index,))


@st.composite
def mutated_recipes(draw):
    document = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = list(paths_of(document))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        action = draw(st.sampled_from(["drop", "rename", "retype"]))
        if action == "drop":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            new_key = draw(keys)
            parent[new_key] = parent.pop(last)
        else:
            parent[last] = draw(values)
    return document


override_keys = st.lists(st.sampled_from([".".join(map(str, p)) for p in paths_of(VALID)] + ["train.epoch", "method.rr",
                                                                                                "extends", "x.y.z", "name.x"]),
                         min_size=1, max_size=3)
override_values = st.one_of(st.text(max_size=12), st.sampled_from(["[query,value]", "{a: 1}", "-1", "0", ".inf", "null",
                                                                   "lora", "full", "&a [*a]", "!!python/object:x y", "[",
                                                                   "2021-01-01", "1e400", "''"]))


@st.composite
def overrides(draw):
    sets = []
    for key in draw(override_keys):
        # mostly well-formed (a malformed one stops before validation), sometimes any text
        malformed = draw(st.integers(min_value=0, max_value=4)) == 0
        raw = draw(st.text(max_size=16)) if malformed else f"{key}={draw(override_values)}"
        sets += ["--set", raw]
    return sets


def _write(tmp: Path, document) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _check(run_cli, path: Path, sets: list[str]):
    code, out, err = run_cli(["validate", str(path), *sets])
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err, err
    assert "failed unexpectedly" not in err, err


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(document=random_documents, sets=st.one_of(st.just([]), overrides()))
def test_random_documents_never_crash(run_cli, tmp_path, document, sets):
    _check(run_cli, _write(tmp_path, document), sets)


@FUZZ
@given(document=mutated_recipes(), sets=st.one_of(st.just([]), overrides()))
def test_mutated_recipes_never_crash(run_cli, tmp_path, document, sets):
    _check(run_cli, _write(tmp_path, document), sets)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("ab: -[]{}&*!#'\"\n\t?|>%@,.0")), max_size=60))
def test_random_yaml_text_never_crashes(run_cli, tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    _check(run_cli, path, [])


def test_the_unmutated_recipe_is_valid(run_cli, tmp_path):
    # the mutations start from a valid recipe, so a failure above is the mutation's doing
    (tmp_path / "data.csv").write_text("text,label\nhello,a\n")  # validate reads its columns
    code, _, err = run_cli(["validate", str(_write(tmp_path, VALID))])
    assert code == 0, err
