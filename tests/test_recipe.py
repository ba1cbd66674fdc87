"""Recipes: validation with located errors, --set overrides, extends, starter recipes, schema.

Each error test asserts the field path, the FILE:LINE:COL and the hint, since
those are what a user acts on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adaptctl.core.errors import UserError
from adaptctl.recipe.schema import TASKS, FullMethod, LoraMethod, Recipe
from adaptctl.recipe.loader import load_recipe
from adaptctl.recipe.starter import starter_document, starter_recipe

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*PROJECT.glob("recipes/**/*.yaml"), *PROJECT.glob("bench/recipes/**/*.yaml")])

# Line numbers below refer to this text: keep it in step with the tests.
VALID = """\
name: t
task: classification
model:
  base: sentence-transformers/all-MiniLM-L6-v2
data:
  source: data.csv
  text: text
  label: label
method:
  name: lora
  r: 8
train:
  epochs: 1
  learning_rate: 1.0e-4
  precision: auto
evaluate:
  metrics: [accuracy, f1]
"""


def write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def mutate(old: str, new: str, text: str = VALID) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems(path: Path, overrides=()) -> dict[str, dict]:
    """field path -> {where, message, hint} for every problem reported."""
    with pytest.raises(UserError) as info:
        load_recipe(path, list(overrides))
    found = {}
    for detail in info.value.details:
        head, _, hint = detail.partition("\n    hint: ")
        match = re.fullmatch(r"(.+?): ([\w.-]+|\(recipe\)): (.*)", head, flags=re.S)
        assert match, f"not FILE:LINE:COL: field: message: {detail!r}"
        where, field, message = match.groups()
        found[field] = {"where": where, "message": message, "hint": hint}
    return found


def error_text(path: Path, overrides=()) -> str:
    with pytest.raises(UserError) as info:
        load_recipe(path, list(overrides))
    return info.value.render()


# ----------------------------------------------------------- shipped recipes
def test_there_are_shipped_recipes():
    assert PROJECT / "recipes" / "quickstart.yaml" in SHIPPED


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: str(p.relative_to(PROJECT)))
def test_shipped_recipe_validates(recipe):
    loaded = load_recipe(recipe)
    assert loaded.recipe.name
    # a recipe's own data files must exist: not ../shared ones (absent on a user's machine), nor
    # bench/out ones (written by `make bench` before it runs them)
    source = Path(loaded.recipe.data.source.path)
    generated = "shared" in source.parts or "out" in source.parts
    if not generated and not re.search(r"[*?[]", str(source)):
        assert source.exists(), f"{recipe}: data.source {source} is missing"
    # what `adaptctl validate` checks in the data: all of it, but a bench/out file before `make bench`
    # has written it, or ../shared where it is absent
    from adaptctl.data.preflight import data_problems
    from adaptctl.tasks import get_task

    absent = ("out" in source.parts and not source.exists()) or ("shared" in source.parts and not source.exists())
    problems = [p for p in data_problems(loaded.recipe, recipe.parent, get_task(loaded.recipe.task)) if not (absent and "data not found" in p[1])]
    assert problems == [], f"{recipe}: {problems}"


def test_valid_recipe_loads(tmp_path):
    loaded = load_recipe(write(tmp_path, VALID))
    assert isinstance(loaded.recipe.method, LoraMethod) and loaded.recipe.method.r == 8
    # relative to the recipe file, even before the file exists (prepare reports it missing)
    assert loaded.recipe.data.source.path == str((tmp_path / "data.csv").resolve())
    assert loaded.positions[("train", "learning_rate")].line == 14


# ------------------------------------------------------------ unknown keys
@pytest.mark.parametrize("old, new, field, where, guess", [
    ("train:\n", "trian:\n", "trian", ":12:1", "train"),                              # top level
    ("  learning_rate:", "  learning_rat:", "train.learning_rat", ":14:3", "learning_rate"),  # nested
    ("  r: 8", "  rr: 8", "method.rr", ":11:3", "r"),                                # method-specific
    ("  base: sentence", "  bsae: sentence", "model.bsae", ":4:3", "base"),
    ("  text: text", "  txt: text", "data.txt", ":7:3", "text"),
])
def test_unknown_key_suggests_the_closest_and_points_at_it(tmp_path, old, new, field, where, guess):
    found = problems(write(tmp_path, mutate(old, new)))
    assert field in found, found
    assert found[field]["where"].endswith(where), found[field]
    assert found[field]["message"] == f"unknown key '{field.rsplit('.', 1)[-1]}'"
    assert found[field]["hint"] == f"did you mean '{guess}'?"
    assert found[field]["where"].startswith(str(tmp_path / "recipe.yaml"))


def test_method_keys_follow_the_method_name(tmp_path):
    # `train_last_layers` belongs to freeze, not lora: the allowed keys are lora's
    found = problems(write(tmp_path, mutate("  r: 8", "  train_last_layers: 2")))
    assert "method.train_last_layers" in found
    assert "method.lora" not in str(found)  # pydantic's union tag never leaks into the path
    valid = load_recipe(write(tmp_path, mutate("  name: lora\n  r: 8", "  name: freeze\n  train_last_layers: 2")))
    assert valid.recipe.method.train_last_layers == 2


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path):
    found = problems(write(tmp_path, VALID + "zzzzzz: 1\n"))
    assert "allowed keys:" in found["zzzzzz"]["hint"] and "train" in found["zzzzzz"]["hint"]


# ------------------------------------------------------------- enum values
@pytest.mark.parametrize("old, new, field, where, guess", [
    ("task: classification", "task: clasification", "task", ":2:1", "classification"),
    ("  name: lora", "  name: lroa", "method.name", ":10:3", "lora"),
    ("  precision: auto", "  precision: bf61", "train.precision", ":15:3", "bf16"),
    ("[accuracy, f1]", "[acuracy, f1]", "evaluate.metrics.0", ":17:13", "accuracy"),
    ("[accuracy, f1]", "[accuracy, rougel]", "evaluate.metrics.1", ":17:23", "rougeL"),
])
def test_wrong_enum_value_suggests_the_closest(tmp_path, old, new, field, where, guess):
    found = problems(write(tmp_path, mutate(old, new)))
    assert field in found, found
    assert found[field]["where"].endswith(where), found[field]
    assert "is not one of" in found[field]["message"] and guess in found[field]["message"]
    assert found[field]["hint"] == f"did you mean '{guess}'?"


def test_scheduler_and_distill_loss_enums(tmp_path):
    text = VALID + "distill:\n  teacher: runs/x\n  loss: kll\n"
    text = mutate("  precision: auto", "  scheduler: cosin", text)
    found = problems(write(tmp_path, text))
    assert found["train.scheduler"]["hint"] == "did you mean 'cosine'?"
    assert found["distill.loss"]["hint"] == "did you mean 'kl'?"


def test_every_problem_is_reported_at_once(tmp_path):
    text = mutate("train:\n", "trian:\n")
    text = mutate("task: classification", "task: clasification", text)
    text = mutate("  r: 8", "  r: -1", text)
    text = mutate("  base: sentence", "  bsae: sentence", text)
    path = write(tmp_path, text)
    found = problems(path)
    assert {"trian", "task", "method.r", "model.bsae", "model.base"} <= set(found), found
    assert found["model.base"]["message"] == "required field is missing"
    assert error_text(path).startswith(f"{path}: {len(found)} problems in the recipe")


# ------------------------------------------------------ types and ranges
@pytest.mark.parametrize("old, new, field, words", [
    ("  epochs: 1", "  epochs: two", "train.epochs", "valid number"),
    ("  epochs: 1", "  epochs: [1]", "train.epochs", "valid number"),
    ("  r: 8", "  r: 8.5", "method.r", "integer"),
    ("  source: data.csv", "  source: 5", "data.source", "dictionary"),
    ("name: t", "name: [t]", "name", "string"),
    ("name: t", "name: ../etc", "name", "pattern"),
    ("evaluate:\n  metrics: [accuracy, f1]", "evaluate:\n  metrics: accuracy", "evaluate.metrics", "list"),
    ("method:\n  name: lora\n  r: 8", "method: lora", "method", "dictionary"),
])
def test_wrong_types(tmp_path, old, new, field, words):
    found = problems(write(tmp_path, mutate(old, new)))
    assert field in found, found
    assert words in found[field]["message"], found[field]
    assert re.search(r":\d+:\d+$", found[field]["where"])


@pytest.mark.parametrize("old, new, field, words", [
    ("  learning_rate: 1.0e-4", "  learning_rate: -1.0e-4", "train.learning_rate", "greater than 0"),
    ("  learning_rate: 1.0e-4", "  learning_rate: 0", "train.learning_rate", "greater than 0"),
    ("  learning_rate: 1.0e-4", "  learning_rate: .inf", "train.learning_rate", "finite"),
    ("  epochs: 1", "  epochs: .nan", "train.epochs", "finite"),
    ("  label: label", "  label: label\n  max_length: 0", "data.max_length", "greater than 0"),
    ("  r: 8", "  r: 0", "method.r", "greater than 0"),
    ("  r: 8", "  dropout: 1.5", "method.dropout", "less than 1"),
    ("task: classification", "task: classification\nseed: -1", "seed", "greater than or equal to 0"),
    ("task: classification", "task: classification\nseed: 4294967296", "seed", "less than 4294967296"),
])
def test_out_of_range_values(tmp_path, old, new, field, words):
    found = problems(write(tmp_path, mutate(old, new)))
    assert field in found, found
    assert words in found[field]["message"], found[field]
    assert found[field]["hint"], "the field's help text is the hint"


def test_splits_must_leave_training_rows(tmp_path):
    path = write(tmp_path, mutate("  label: label", "  label: label\n  splits: {validation: 0.5, test: 0.5}"))
    found = problems(path)
    assert found["data.splits"]["where"].endswith(":9:3")
    assert found["data.splits"]["message"] == "validation + test must leave rows for training (sum below 1)"


# ------------------------------------------------------------ cross-field
def test_classification_needs_a_label(tmp_path):
    found = problems(write(tmp_path, mutate("  label: label\n", "")))
    assert list(found) == ["data.label"]
    assert "task classification needs data.label" in found["data.label"]["message"]
    assert found["data.label"]["where"].endswith(":5:1")  # the data section, where the key belongs


def test_cross_field_problems_come_with_the_others(tmp_path):
    text = mutate("  label: label\n", "")
    text = mutate("train:\n", "trian:\n", text)
    found = problems(write(tmp_path, text))
    assert {"trian", "data.label"} <= set(found), found


def test_causal_lm_needs_a_response(tmp_path):
    text = mutate("task: classification", "task: causal-lm")
    text = mutate("  text: text\n  label: label\n", "  prompt: '{q}'\n", text)
    text = mutate("[accuracy, f1]", "[perplexity]", text)
    found = problems(write(tmp_path, text))
    assert "data.response" in found and "causal-lm" in found["data.response"]["message"]


def test_seq2seq_needs_prompt_and_response(tmp_path):
    text = mutate("task: classification", "task: seq2seq")
    found = problems(write(tmp_path, text))
    assert {"data.prompt", "data.response"} <= set(found)


def test_prompting_is_not_for_extractive_qa(tmp_path):
    text = mutate("task: classification", "task: extractive-qa")
    text = mutate("  name: lora\n  r: 8\n", "  name: prompting\n", text)
    found = problems(write(tmp_path, text))
    assert "method.name" in found and "prompting" in found["method.name"]["message"]


# ----------------------------------------------------------- YAML itself
def test_yaml_syntax_error_is_located(tmp_path):
    path = write(tmp_path, mutate("  r: 8", "  r: [8"))
    text = error_text(path)
    assert re.match(rf"{re.escape(str(path))}:1[1-3]:\d+: YAML syntax error", text), text
    assert "hint:" in text


def test_bad_indentation_is_located(tmp_path):
    path = write(tmp_path, mutate("  r: 8", "   r: 8"))
    assert re.match(rf"{re.escape(str(path))}:11:\d+: YAML syntax error", error_text(path))


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_recipe(tmp_path, text):
    message = error_text(write(tmp_path, text))
    assert "the recipe is empty" in message and "adaptctl init" in message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "seq"), ("just text\n", "str"), ("42\n", "int")])
def test_document_must_be_a_mapping(tmp_path, text, kind):
    message = error_text(write(tmp_path, text))
    assert f"must be a mapping of sections, not a {kind}" in message
    assert ":1:1:" in message


@pytest.mark.parametrize("old, new, where", [
    ("task: classification\n", "task: classification\ntask: seq2seq\n", ":3:1"),
    ("  r: 8\n", "  r: 8\n  r: 16\n", ":12:3"),
])
def test_duplicate_keys_are_errors(tmp_path, old, new, where):
    message = error_text(write(tmp_path, mutate(old, new)))
    assert f"{where}: duplicate key" in message


def test_missing_file_is_a_user_error(tmp_path):
    message = error_text(tmp_path / "nope.yaml")
    assert "recipe file not found" in message and "nope.yaml" in message


def test_directory_and_binary_files_are_user_errors(tmp_path):
    assert "cannot read the recipe" in error_text(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00name: x")
    assert "UTF-8" in error_text(tmp_path / "bin.yaml")


@pytest.mark.parametrize("text, words", [
    ("? [a, b]\n: 1\n", "a key must be a plain name"),
    ("name: !!python/object/apply:os.system [echo hi]\n", "python/object"),
    ("name: !custom x\n", "!custom"),
    ("a: &x [*x]\n", "refers to itself"),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
     "more than"),
])
def test_hostile_yaml_is_refused_not_crashed_on(tmp_path, text, words):
    message = error_text(write(tmp_path, text))
    assert words in message
    assert re.search(r"recipe\.yaml:\d+:\d+:", message)


def test_non_string_keys_are_reported(tmp_path):
    found = problems(write(tmp_path, VALID + "1: x\n"))
    assert "1" in found


def test_aliases_are_expanded(tmp_path):
    text = mutate("data:\n  source: data.csv", "data: &d\n  source: data.csv")
    loaded = load_recipe(write(tmp_path, text + "description: &x shared\n"))
    assert loaded.recipe.description == "shared"


# -------------------------------------------------------------- overrides
def test_set_changes_the_value(tmp_path):
    loaded = load_recipe(write(tmp_path, VALID), ["train.epochs=3", "seed=7", "data.max_length=64"])
    assert loaded.recipe.train.epochs == 3 and loaded.recipe.seed == 7 and loaded.recipe.data.max_length == 64


def test_set_parses_lists_as_yaml(tmp_path):
    loaded = load_recipe(write(tmp_path, VALID), ["method.target_modules=[query,value]"])
    assert loaded.recipe.method.target_modules == ["query", "value"]


def test_set_can_switch_method(tmp_path):
    loaded = load_recipe(write(tmp_path, mutate("  r: 8\n", "")), ["method.name=full"])
    assert isinstance(loaded.recipe.method, FullMethod)


def test_set_type_error_names_the_override(tmp_path):
    found = problems(write(tmp_path, VALID), ["train.epochs=abc"])
    assert found["train.epochs"]["where"] == "--set train.epochs"
    assert "valid number" in found["train.epochs"]["message"]


def test_set_unknown_key_suggests(tmp_path):
    found = problems(write(tmp_path, VALID), ["train.epoch=3", "method.rr=4"])
    assert found["train.epoch"]["where"] == "--set train.epoch"
    assert found["train.epoch"]["hint"] == "did you mean 'epochs'?"
    assert found["method.rr"]["hint"] == "did you mean 'r'?"


def test_set_into_a_recipe_without_the_section(tmp_path):
    # method omitted in the file: --set creates it, and a missing name says which names exist
    text = mutate("method:\n  name: lora\n  r: 8\n", "")
    found = problems(write(tmp_path, text), ["method.target_modules=[query,value]"])
    assert found["method.name"]["message"] == "required field is missing"
    assert "lora" in found["method.name"]["hint"]


@pytest.mark.parametrize("override, words", [
    ("train.epochs", "expected key.path=value"),
    ("=3", "expected key.path=value"),
    ("train..epochs=3", "expected key.path=value"),
    ("name.x=1", "is not a section"),
    ("evaluate.metrics.0=f1", "metrics is not a section"),
])
def test_malformed_set(tmp_path, override, words):
    assert words in error_text(write(tmp_path, VALID), [override])


def test_set_value_that_is_not_yaml_is_a_string(tmp_path):
    loaded = load_recipe(write(tmp_path, VALID), ["description=a: [b"])
    assert loaded.recipe.description == "a: [b"


# ---------------------------------------------------------------- extends
def test_child_overrides_parent(tmp_path):
    write(tmp_path, VALID, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nname: child\ntrain: {epochs: 3}\n")
    recipe = load_recipe(child).recipe
    assert recipe.name == "child" and recipe.train.epochs == 3
    assert recipe.train.learning_rate == 1.0e-4 and recipe.method.r == 8  # inherited


def test_chain_of_three(tmp_path):
    write(tmp_path, VALID, "a.yaml")
    write(tmp_path, "extends: a.yaml\nseed: 1\ntrain: {epochs: 2}\n", "b.yaml")
    c = write(tmp_path, "extends: b.yaml\nseed: 2\nmethod: {r: 4}\n", "c.yaml")
    recipe = load_recipe(c).recipe
    assert (recipe.seed, recipe.train.epochs, recipe.method.r, recipe.name) == (2, 2, 4, "t")


def test_extends_cycle_names_the_cycle(tmp_path):
    write(tmp_path, "extends: b.yaml\nname: a\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\nname: b\n", "b.yaml")
    message = error_text(tmp_path / "a.yaml")
    assert "cycle" in message
    assert re.search(r"a\.yaml -> .*b\.yaml -> .*a\.yaml", message), message


def test_extends_itself_is_a_cycle(tmp_path):
    assert "cycle" in error_text(write(tmp_path, "extends: recipe.yaml\n"))


def test_extends_missing_parent(tmp_path):
    message = error_text(write(tmp_path, "extends: nowhere/base.yaml\nname: x\n"))
    assert "nowhere/base.yaml does not exist" in message and "recipe.yaml:1:1" in message


def test_extends_must_be_a_path(tmp_path):
    assert "must be a file path" in error_text(write(tmp_path, "extends: [a, b]\n"))


def test_parent_paths_resolve_relative_to_the_parent(tmp_path):
    parent_dir = tmp_path / "base"
    (parent_dir / "data").mkdir(parents=True)
    (parent_dir / "data" / "train.csv").write_text("text,label\na,b\n")
    write(parent_dir, mutate("  source: data.csv", "  source: data/train.csv\n  test: data/missing.csv"), "base.yaml")
    child = write(tmp_path / "child", "extends: ../base/base.yaml\nname: child\n")
    recipe = load_recipe(child).recipe
    assert recipe.data.source.path == str((parent_dir / "data" / "train.csv").resolve())
    # a missing file still resolves against the parent, so its error names the right place
    assert recipe.data.test.path == str((parent_dir / "data" / "missing.csv").resolve())
    assert recipe.model.base == "sentence-transformers/all-MiniLM-L6-v2"  # a hub id is not a path


def test_child_switching_method_does_not_inherit_parent_fields(tmp_path):
    write(tmp_path, mutate("  r: 8", "  r: 8\n  target_modules: [query]"), "base.yaml")
    full = load_recipe(write(tmp_path, "extends: base.yaml\nmethod: {name: full}\n", "full.yaml")).recipe
    assert isinstance(full.method, FullMethod)
    dora = load_recipe(write(tmp_path, "extends: base.yaml\nmethod: {name: dora}\n", "dora.yaml")).recipe
    assert dora.method.name == "dora" and dora.method.r == 8 and dora.method.target_modules is None
    same = load_recipe(write(tmp_path, "extends: base.yaml\nmethod: {name: lora, r: 2}\n", "same.yaml")).recipe
    assert same.method.r == 2 and same.method.target_modules == ["query"]


def test_problem_in_the_parent_points_at_the_parent(tmp_path):
    write(tmp_path, mutate("  r: 8", "  rr: 8"), "base.yaml")
    found = problems(write(tmp_path, "extends: base.yaml\nname: child\n"))
    assert found["method.rr"]["where"] == f"{(tmp_path / 'base.yaml').resolve()}:11:3"


def test_overrides_apply_after_extends(tmp_path):
    write(tmp_path, VALID, "base.yaml")
    child = write(tmp_path, "extends: base.yaml\ntrain: {epochs: 3}\n")
    assert load_recipe(child, ["train.epochs=5"]).recipe.train.epochs == 5


# ---------------------------------------------------- schema and starters
def test_schema_has_every_field_with_a_description():
    schema = Recipe.model_json_schema()
    json.dumps(schema)
    sections = {"Recipe": schema, **schema["$defs"]}
    assert {"Data", "Source", "Train", "Evaluate", "Distill", "Export", "LoraMethod"} <= set(sections)
    for name, section in sections.items():
        for field, spec in section.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"
    assert set(schema["required"]) >= {"name", "task", "model", "data"}
    assert schema["properties"]["task"]["enum"] == list(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_starter_recipe_validates_and_is_commented(tmp_path, task):
    text = starter_recipe(task)
    path = write(tmp_path, text)
    document = starter_document(task)
    source = tmp_path / document["data"]["source"]
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("placeholder\n")
    recipe = load_recipe(path).recipe
    assert recipe.task == task and recipe.data.source.path == str(source)
    for key in ("prompt", "response", "text", "label"):
        if key in document["data"]:
            assert getattr(recipe.data, key) == document["data"][key]  # templates survive the YAML round trip
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert all("  # " in line for line in lines), [line for line in lines if "  # " not in line]


def test_starter_unknown_task_suggests():
    with pytest.raises(UserError) as info:
        starter_recipe("clasification")
    assert "did you mean 'classification'?" in info.value.render()
