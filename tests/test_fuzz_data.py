"""Random data files through `adaptctl prepare` and random inputs through `adaptctl predict`: the
answer is exit 0 or exit 1 with a message, never a traceback (issue 22).  Bounded: a few dozen
examples each, on a tiny random model, in-process."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tiny_classifier import tiny_classifier_recipe

FUZZ = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# A file that is read through costs a whole prepare (about 3 s here, most of it datasets hashing the
# tokenizer to fingerprint the map), so prepare gets fewer examples than predict.
FUZZ_PREPARE = settings(FUZZ, max_examples=20)

# Cells that have broken readers before: quotes, delimiters, newlines, braces, missing-value spellings.
TRICKY = st.sampled_from(['"', '""', ",", "\t", "\n", "\r\n", "{", "}", "{text}", "NaN", "null", "None", "NA", "",
                          " ", "1", "0", "1.0", "-3", "pos", "neg", "caf\u00e9", "\u00a0", "\\", "'"])
CELL = st.lists(st.one_of(TRICKY, st.text(max_size=8)), max_size=4).map("".join)
# mostly good labels, so that a fair share of files is read through (exit 0), not all refused
LABEL = st.sampled_from(["pos", "neg"] * 20 + ["1", "0", "", "NaN", "null", '"pos', "pos\n"])
JSON_VALUE = st.one_of(CELL, st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=False), st.none(),
                       st.lists(CELL, max_size=2), st.dictionaries(st.sampled_from(["a", "b"]), CELL, max_size=2))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return tiny_classifier_recipe(root)


@pytest.fixture(autouse=True)
def _datasets_cache(monkeypatch, tmp_path_factory):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf-datasets")


def _delimited(rows, sep: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return out.getvalue()


@st.composite
def data_files(draw):
    fmt = draw(st.sampled_from(["csv", "tsv", "jsonl"]))
    rows = draw(st.lists(st.tuples(st.one_of(CELL, st.just("good words")), LABEL), min_size=1, max_size=12))
    rows += [("good words", "pos"), ("bad words", "neg")] * 10  # both classes, in every split
    if fmt == "jsonl":
        records = [{"text": draw(JSON_VALUE) if draw(st.integers(0, 4)) == 0 else text, "label": label}
                   for text, label in rows]
        content = "".join(json.dumps(r) + "\n" for r in records).encode()
    elif draw(st.booleans()):  # written by the csv module: quoting as the format means it
        content = _delimited(rows, "," if fmt == "csv" else "\t").encode()
    else:  # written by hand: quotes and delimiters left as they come
        sep = "," if fmt == "csv" else "\t"
        content = ("text" + sep + "label\n" + "".join(f"{t}{sep}{lab}\n" for t, lab in rows)).encode()
    if draw(st.integers(0, 9)) == 0:
        content += b"\xff\xfe bad bytes\n"
    options = draw(st.fixed_dictionaries({}, optional={"quoting": st.sampled_from([0, 3])}))
    return fmt, content, options


@FUZZ_PREPARE
@given(case=data_files())
def test_random_data_files_prepare_with_exit_0_or_1(tiny, run_cli, case):
    fmt, content, options = case
    folder = Path(tempfile.mkdtemp(dir=tiny.parent))
    (folder / f"data.{fmt}").write_bytes(content)
    document = yaml.safe_load(tiny.read_text())
    document["data"]["source"] = {"path": str(folder / f"data.{fmt}"), **({} if fmt == "jsonl" else options)}
    document["data"]["splits"] = {"validation": 0.1, "test": 0.1, "stratify": False}  # a class of one is fine
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(document))
    code, out, err = run_cli(["prepare", recipe, "--run-dir", folder / "run"])
    event(f"exit {code}")  # --hypothesis-show-statistics: how many were read, how many refused
    assert code in (0, 1), err
    assert "Traceback" not in err, err
    if code == 1:
        assert "error:" in err and "hint:" in err, err


INPUT = st.one_of(st.binary(max_size=64),
                  st.lists(st.one_of(CELL, JSON_VALUE.map(json.dumps), st.just('{"text": "fine"}')), max_size=5)
                  .map(lambda lines: "\n".join(lines).encode()))


@FUZZ
@given(content=INPUT, suffix=st.sampled_from([".txt", ".jsonl", ".csv"]), batch_size=st.integers(-1, 3),
       column=st.sampled_from([None, "text", "label"]))
def test_random_predict_inputs_exit_0_or_1(tiny, run_cli, content, suffix, batch_size, column):
    folder = Path(tempfile.mkdtemp(dir=tiny.parent))
    (folder / f"in{suffix}").write_bytes(content)
    args = ["predict", tiny.parent / "base", "--input", folder / f"in{suffix}", "--batch-size", batch_size]
    code, out, err = run_cli(args + (["--text-column", column] if column else []))
    event(f"exit {code}")
    assert code in (0, 1), err
    assert "Traceback" not in err, err
