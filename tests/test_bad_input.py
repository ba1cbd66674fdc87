"""Bad input, table-driven: every user error of the prepare stage (issue 3) and the recipe errors
that only show when a stage runs (a missing teacher, an unresolvable model, unknown --set keys
on a stage command) give exit 1, a message that names the file and field (and line), a hint, and
no traceback, through the real command line.

Recipe-only errors (YAML syntax, non-mapping documents, wrong types, out-of-range values, unknown
task or method with a suggestion, extends cycles, malformed --set) are in test_recipe.py and
test_cli.py; reader-level errors per format in test_readers.py; random recipes in test_fuzz_recipes.py.
"""

from __future__ import annotations

import copy
import io
import os
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BASE = {
    "name": "bad-input", "task": "classification", "seed": 1,
    "model": {"base": MINILM},
    "data": {"source": "data.csv", "text": "text", "label": "label", "max_length": 32},
    "method": {"name": "full"},
}
GOOD_ROWS = "".join(f"{word} number {i},{label}\n" for i in range(10) for word, label in (("good", "pos"), ("bad", "neg")))
GOOD = "text,label\n" + GOOD_ROWS
INT_ROWS = "".join(f"{word} number {i},{label}\n" for i in range(10) for word, label in (("good", 1), ("bad", 0)))
JSONL = "".join(json.dumps({"text": f"{word} number {i}", "label": label}) + "\n"
                for i in range(10) for word, label in (("good", "pos"), ("bad", "neg")))
QA_ROWS = [
    {"id": "q1", "question": "Who wrote it?", "context": "Ada wrote the program.",
     "answers": {"text": ["Ada"], "answer_start": [0]}},
    {"id": "q2", "question": "What was written?", "context": "Ada wrote the program.",
     "answers": {"text": ["a poem"], "answer_start": [4]}},
]


def merged(base: dict, change: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in change.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# id: (files, recipe change, command and extra arguments, words the message must hold)
# "{dir}" is the recipe's folder: messages name files by their absolute path.
CASES = {
    "missing file": ({}, {}, ["prepare"], ["data not found: {dir}/data.csv", "relative to {dir}"]),
    "empty file": ({"data.csv": ""}, {}, ["prepare"], ["{dir}/data.csv", "empty"]),
    "header only": ({"data.csv": "text,label\n"}, {}, ["prepare"], ["{dir}/data.csv", "no rows"]),
    "malformed line": ({"data.csv": GOOD + "stray,comma,here\n" + GOOD_ROWS}, {}, ["prepare"],
                       ["{dir}/data.csv:22:", "3 fields where 2"]),
    "template column absent": ({"data.csv": GOOD}, {"data": {"text": "{title}: {body}"}}, ["prepare"],
                               ["data.text", "'title'", "data.csv", "the columns there are: text, label"]),
    "label column absent": ({"data.csv": GOOD}, {"data": {"label": "category"}}, ["prepare"],
                            ["data.label", "'category'", "data.csv", "the columns there are: text, label"]),
    "single class": ({"data.csv": "text,label\n" + "".join(f"fine {i},pos\n" for i in range(20))}, {}, ["prepare"],
                     ["data.label", "single class (pos)"]),
    "label only in validation": ({"data.csv": GOOD, "val.csv": "text,label\nmeh,neutral\ngood,pos\n"},
                                 {"data": {"validation": "val.csv"}}, ["prepare"],
                                 ["data.label", "validation has labels that train never has: neutral"]),
    "every text empty": ({"data.csv": "text,label\n" + "".join(f",{lab}\n" for lab in ("pos", "neg") * 5)}, {},
                         ["prepare"], ["data.csv", "every row has an empty text"]),
    "non-UTF-8 byte": ({"data.csv": (GOOD + "caf\xe9 au lait,pos\n").encode("latin-1")}, {}, ["prepare"],
                       ["{dir}/data.csv:22:", "not valid UTF-8"]),
    "QA answer not in its context": ({"qa.jsonl": "".join(json.dumps(r) + "\n" for r in QA_ROWS)},
                                     {"task": "extractive-qa", "data": {"source": "qa.jsonl", "text": None, "label": None, "stride": 8}},
                                     ["prepare"], ["qa.jsonl", "question q2", "'a poem'", "does not occur in the context"]),
    "unresolvable model": ({"data.csv": GOOD}, {"model": {"base": "nobody/no-such-model"}}, ["prepare"],
                           ["model.base", "cannot find model 'nobody/no-such-model'", "hint:"]),
    "missing teacher": ({"data.csv": GOOD}, {"distill": {"teacher": "runs/no-such-teacher"}}, ["distill"],
                        ["distill.teacher", "cannot find the teacher 'runs/no-such-teacher'", "hint:"]),
    "unknown --set key": ({"data.csv": GOOD}, {}, ["run", "--set", "train.epoch=2"],
                          ["--set train.epoch", "did you mean 'epochs'?"]),
    "unknown --set section": ({"data.csv": GOOD}, {}, ["prepare", "--set", "dataa.text=body"],
                              ["--set dataa.text", "did you mean 'data'?"]),
    "--set naming an absent column": ({"data.csv": GOOD}, {}, ["prepare", "--set", 'data.text="{body}"'],
                                      ["data.text", "'body'", "the columns there are: text, label"]),
    # issue 22, item 6: data that was read wrong in silence
    "empty cell in an integer label column": ({"data.csv": "text,label\n" + INT_ROWS + "one more,\n" + INT_ROWS}, {}, ["prepare"],
                                              ["{dir}/data.csv:22:", "data.label ('label') is missing (no value)",
                                               "drop those rows, or fill in their label"]),
    "NaN label (JSON)": ({"data.jsonl": JSONL + '{"text": "what", "label": NaN}\n'}, {"data": {"source": "data.jsonl"}},
                         ["prepare"], ["{dir}/data.jsonl:21:", "data.label ('label') is missing"]),
    "null label (JSON)": ({"data.jsonl": '{"text": "what", "label": null}\n' + JSONL}, {"data": {"source": "data.jsonl"}},
                          ["prepare"], ["{dir}/data.jsonl:1:", "is missing (no value)"]),
    "'null' written as a label": ({"data.csv": GOOD + "what,null\n"}, {}, ["prepare"], ["{dir}/data.csv:22:", "('null')"]),
    "numbers mixed with label names": ({"data.csv": GOOD + "what,1\n"}, {}, ["prepare"],
                                       ["{dir}/data.csv:22:", "is '1', while other rows have names",
                                        "every label a class name, or every label a number"]),
    "nested JSON in the text column": ({"data.jsonl": JSONL.replace('"good number 3"', '{"title": "t", "body": "b"}')},
                                       {"data": {"source": "data.jsonl"}}, ["prepare"],
                                       ["{dir}/data.jsonl:7:", "data.text: column 'text' holds an object, not text",
                                        "a column of plain text"]),
    "duplicate column names": ({"data.csv": "text,label,text\n" + GOOD_ROWS.replace("\n", ",x\n")}, {}, ["prepare"],
                               ["{dir}/data.csv:1:", "columns 1 and 3 are both named 'text'"]),
    # item 8: exit 3 with a traceback before
    "data file is a folder": ({"data.csv": None}, {}, ["prepare"], ["data not found: {dir}/data.csv"]),
    "unbalanced brace in a template": ({"data.csv": GOOD}, {"data": {"text": "{text"}}, ["prepare"],
                                       ["recipe.yaml:", "data.text: template '{{text'", "expected '}}'", "'{{{{'"]),
    "extends a folder": ({"data.csv": GOOD, "base.yaml": None}, {"extends": "base.yaml"}, ["prepare"],
                         ["{dir}/base.yaml: cannot read the recipe", "UTF-8 YAML"]),
    "extends a file that is not UTF-8": ({"data.csv": GOOD, "base.yaml": b"seed: 1 # caf\xe9\n"}, {"extends": "base.yaml"},
                                         ["prepare"], ["{dir}/base.yaml: cannot read the recipe", "utf-8"]),
}


def write_case(folder: Path, files: dict, change: dict) -> Path:
    for name, content in files.items():
        path = folder / name
        if content is None:  # a folder where a file is expected
            path.mkdir()
        else:
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    document = {k: v for k, v in merged(BASE, change).items()}
    document["data"] = {k: v for k, v in document["data"].items() if v is not None}
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(document, sort_keys=False))
    return recipe


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_exit_1_with_a_located_message_and_no_traceback(case, run_cli, tmp_path):
    files, change, command, words = CASES[case]
    if change.get("task") == "extractive-qa" and importlib.util.find_spec("adaptctl.tasks.extractive_qa") is None:
        pytest.skip("the extractive-qa task is not built yet")
    recipe = write_case(tmp_path, files, change)
    run_dir = tmp_path / "run"
    code, out, err = run_cli([command[0], recipe, "--run-dir", run_dir, *command[1:]])
    assert code == 1, err
    assert "Traceback" not in err, err
    for word in words:
        assert word.format(dir=tmp_path) in err, f"{word!r} not in:\n{err}"
    assert out == ""  # stdout stays free for --json
    # nothing was produced: a stage that fails on its input leaves no outputs behind
    produced = [p for p in run_dir.rglob("*") if p.is_file() and p.name not in (".lock", ".adaptctl-run", "manifest.json", "recipe.yaml")]
    assert produced == []


def test_a_real_process_shows_no_traceback(run_cli_subprocess, tmp_path):
    """The table runs in-process for speed; the same error in a fresh `python -m adaptctl` process."""
    files, change, _, _ = CASES["non-UTF-8 byte"]
    recipe = write_case(tmp_path, files, change)
    done = run_cli_subprocess(["prepare", recipe, "--run-dir", tmp_path / "run"], cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{tmp_path}/data.csv:22:" in done.stderr and "not valid UTF-8" in done.stderr and "hint:" in done.stderr


def test_empty_texts_are_dropped_counted_and_reported(run_cli, tmp_path):
    rows = GOOD + "".join(f",{label}\n" for label in ("pos", "neg", "pos"))  # three rows without text
    recipe = write_case(tmp_path, {"data.csv": rows}, {})
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())
    assert stats["dropped"]["train"] == {"empty": 3}
    assert sum(split["rows"] for split in stats["splits"].values()) == 20
    assert "3 rows" in err and "empty" in err  # said, not only counted


# --- issue 22: items 6, 8 and 9 beyond the table ---

def test_real_sms_spam_with_default_quoting_is_refused_through_prepare(run_cli, tmp_path, shared_data):
    source = {"path": str(shared_data / "sms_spam" / "SMSSpamCollection"), "format": "tsv", "header": False,
              "names": ["label", "text"]}
    recipe = write_case(tmp_path, {}, {"data": {"source": source}})
    code, out, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err, err
    assert "SMSSpamCollection:5082: a quote opens a field that runs to line 5084" in err
    assert "5572 rows were read from 5574 data lines" in err and "source.quoting: 3" in err


def test_rows_read_against_data_lines_are_logged_and_in_stats(run_cli, tmp_path):
    recipe = write_case(tmp_path, {"data.csv": GOOD}, {})
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    assert f"prepare: read 20 rows from 20 data lines of {tmp_path}/data.csv" in err
    stats = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())
    assert stats["read"] == {"train": {"rows": 20, "lines": 20}}


def test_yaml_nested_500_deep_is_exit_1_naming_the_line(run_cli, tmp_path):
    recipe = tmp_path / "deep.yaml"
    recipe.write_text("name: deep\ntrain:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 500)) + "  " * 500 + "x: 1\n")
    code, out, err = run_cli(["validate", recipe])
    assert code == 1 and "Traceback" not in err, err
    assert f"{recipe}:52:" in err and "nests more than 50 levels" in err


def test_a_bad_rerun_keeps_the_earlier_complete_manifest_and_prepared_files_are_copies(run_cli, tmp_path):
    """Item 8 (a failure on bad input leaves a complete manifest complete) and item 9 (prepare's
    outputs are copies of the cache, so editing one run's files changes nothing else)."""
    recipe = write_case(tmp_path, {"data.csv": GOOD}, {})
    run_dir = tmp_path / "run"
    assert run_cli(["prepare", recipe, "--run-dir", run_dir])[0] == 0
    manifest = (run_dir / "prepare" / "manifest.json").read_text()
    labels = run_dir / "prepare" / "labels.json"
    assert all(p.stat().st_nlink == 1 for p in (run_dir / "prepare").rglob("*") if p.is_file())
    cached = Path(json.loads(manifest)["cache_key"])
    cache_labels = Path(os.environ["ADAPTCTL_CACHE"]) / "prepared" / cached / "labels.json"
    before = cache_labels.read_text()
    labels.write_text('{"label2id": {"edited": 0}}')
    assert cache_labels.read_text() == before
    labels.write_text(before)

    (tmp_path / "data.csv").write_bytes((GOOD + "caf\xe9,pos\n").encode("latin-1"))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", run_dir])
    assert code == 1 and "not valid UTF-8" in err, err
    assert (run_dir / "prepare" / "manifest.json").read_text() == manifest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A LoRA run of a tiny classifier, trained and evaluated but not exported."""
    from tiny_classifier import trained_tiny_run

    return trained_tiny_run(tmp_path_factory.mktemp("tiny-run"))


def test_predict_on_a_run_without_export_prints_the_label_names(tiny_run, run_cli, tmp_path):
    _, run_dir = tiny_run
    inputs = tmp_path / "in.txt"
    inputs.write_text("great lovely\nawful sad\n")
    code, out, err = run_cli(["predict", run_dir, "--input", inputs])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in rows] == ["great lovely", "awful sad"]
    assert all(r["prediction"] in ("neg", "pos") and set(r["probabilities"]) == {"neg", "pos"} for r in rows)



def test_predict_reads_its_input_a_chunk_at_a_time_and_checks_every_row_before_writing(tiny_run, run_cli, tmp_path,
                                                                                       monkeypatch):
    """Memory holds one chunk of the input, never the file (issue 38); a bad row in a later chunk is still
    refused before a line is written, and a good input comes out whole, in order, with its own fields."""
    import adaptctl.predict
    from adaptctl.data import input_rows

    monkeypatch.setattr(adaptctl.predict, "CHUNK_ROWS", 2)
    _, run_dir = tiny_run
    rows = [{"id": i, "text": ["great lovely", "awful sad"][i % 2]} for i in range(5)]
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [len(chunk) for chunk in input_rows.chunks(good, good.name, None, 2)] == [2, 2, 1]
    code, out, err = run_cli(["predict", run_dir, "--input", good])
    assert code == 0 and "predict: 5 inputs" in err, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [0, 1, 2, 3, 4]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + '{"id": 5}\n')
    code, out, err = run_cli(["predict", run_dir, "--input", bad])
    assert code == 1 and f"{bad}:6: no 'text' field" in err and out == "", err
    # standard input is copied to a temporary file first, so that it too can be read twice
    monkeypatch.setattr("sys.stdin", io.StringIO(good.read_text()))
    code, out, err = run_cli(["predict", run_dir, "--input", "-"])
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [0, 1, 2, 3, 4], err

PREDICT_CASES = {
    "non-UTF-8 input": ("in.txt", "fine\ncaf\xe9\n".encode("latin-1"), [], ["in.txt:2: not valid UTF-8"]),
    "a non-UTF-8 CSV row": ("in.csv", "text\nfine\ncaf\xe9\n".encode("latin-1"), [], ["in.csv:3: not valid UTF-8"]),
    "--output is a folder": ("in.txt", b"fine\n", ["--output", "{dir}"], ["--output {dir} is a folder"]),
    "--batch-size 0": ("in.txt", b"fine\n", ["--batch-size", "0"], ["--batch-size must be at least 1, not 0"]),
    "a JSON line that is not an object": ("in.jsonl", b'{"text": "a"}\n[1, 2]\n', [], ["in.jsonl:2: a JSON list"]),
    "nested text": ("in.jsonl", b'{"text": {"a": 1}}\n', [], ["in.jsonl:1: 'text' holds a JSON dict"]),
    "a CSV row without the text": ("in.csv", b"text,id\nfine,1\n", ["--text-column", "id2"], ["in.csv:2: no 'id2' field"]),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_bad_predict_input_is_exit_1_before_anything_is_written(case, tiny_run, run_cli, tmp_path):
    name, content, extra, words = PREDICT_CASES[case]
    _, run_dir = tiny_run
    (tmp_path / name).write_bytes(content)
    code, out, err = run_cli(["predict", run_dir, "--input", tmp_path / name, *[a.format(dir=tmp_path) for a in extra]])
    assert code == 1 and "Traceback" not in err, err
    for word in words:
        assert word.format(dir=tmp_path) in err, f"{word!r} not in:\n{err}"
    assert out == "" and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_positive_label_that_is_no_label_is_exit_1_and_keeps_the_earlier_evaluate(tiny_run, run_cli):
    recipe, run_dir = tiny_run
    manifest = (run_dir / "evaluate" / "manifest.json").read_text()
    metrics = (run_dir / "evaluate" / "metrics.json").read_text()
    code, _, err = run_cli(["evaluate", recipe, "--run-dir", run_dir, "--set", "evaluate.positive_label=poss"])
    assert code == 1 and "Traceback" not in err, err
    assert "evaluate.positive_label: 'poss' is not a label of the data" in err
    assert "did you mean 'pos'?" in err and "the labels are: neg, pos" in err
    assert (run_dir / "evaluate" / "manifest.json").read_text() == manifest
    assert (run_dir / "evaluate" / "metrics.json").read_text() == metrics


def test_validate_catches_an_unbalanced_brace_in_a_template(run_cli, tmp_path):
    recipe = write_case(tmp_path, {}, {"task": "causal-lm", "data": {"text": None, "label": None,
                                                                     "prompt": "Q: {question", "response": "{answer}"}})
    code, out, err = run_cli(["validate", recipe])
    assert code == 1 and "Traceback" not in err, err
    assert f"{recipe}:" in err and "data.prompt: template 'Q: {question': expected '}' before end of string" in err
