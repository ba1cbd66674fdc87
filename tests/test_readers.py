"""adaptctl.data.readers: every format reads the same rows; bad data is a UserError naming file and line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from adaptctl.data.readers import infer_format, read_source
from adaptctl.core.errors import UserError

SHARED = Path(__file__).parents[2] / "shared" / "data"
ROWS = [{"text": f"example number {i}, with a comma and a \"quote\"", "label": ["ham", "spam", "eggs"][i % 3]}
        for i in range(12)]


def src(path, **options):
    defaults = dict(format=None, header=True, names=None, delimiter=None, quoting=None, field=None,
                    split=None, per_file=False)
    return SimpleNamespace(path=str(path), **{**defaults, **options})


def rows(ds):
    return [{"text": r["text"], "label": r["label"]} for r in ds]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    # a hub lookup must fail fast instead of retrying an unreachable network; the cache stays out of ~
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf-datasets")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import datasets
    import pandas as pd

    d = tmp_path_factory.mktemp("table")
    df = pd.DataFrame(ROWS)
    df.to_csv(d / "t.csv", index=False)
    df.to_csv(d / "t.tsv", sep="\t", index=False)
    df.to_json(d / "t.jsonl", orient="records", lines=True)
    (d / "list.json").write_text(json.dumps(ROWS, indent=2))
    (d / "field.json").write_text(json.dumps({"version": 1, "records": ROWS}, indent=2))
    df.to_parquet(d / "t.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(d / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(str(d / "saved_dict"))
    return d


@pytest.mark.parametrize("name, options", [
    ("t.csv", {}), ("t.tsv", {}), ("t.jsonl", {}), ("list.json", {}), ("field.json", {"field": "records"}),
    ("t.parquet", {}), ("saved", {}), ("saved_dict", {"split": "train"}),
])
def test_every_format_reads_the_same_rows(table, name, options):
    assert rows(read_source(src(name, **options), table)) == ROWS


@pytest.mark.parametrize("path, fmt", [
    ("a.csv", "csv"), ("a.TSV", "tsv"), ("a.json", "json"), ("a.jsonl", "jsonl"), ("a.parquet", "parquet"),
    ("a.txt", "text"), ("a.text", "text"), ("corpus/*.txt", "text"), ("owner/name", "hub"),
])
def test_infer_format_from_the_name(path, fmt):
    assert infer_format(path) == fmt


def test_infer_format_of_saved_folder_and_unknown(table):
    assert infer_format(str(table / "saved")) == "arrow"
    assert infer_format(str(table / "saved_dict")) == "arrow"
    with pytest.raises(UserError, match="format"):
        infer_format(str(table))  # a folder of files, not a saved data set


def test_absolute_path_and_explicit_format(table, tmp_path):
    (tmp_path / "data.dat").write_text((table / "t.csv").read_text())
    ds = read_source(src(tmp_path / "data.dat", format="csv"), Path("/nonexistent"))
    assert rows(ds) == ROWS


def test_headerless_csv_with_names_and_delimiter(tmp_path):
    (tmp_path / "x.psv").write_text("".join(f"{r['label']}|{r['text']}\n" for r in ROWS))
    ds = read_source(src("x.psv", format="csv", header=False, names=["label", "text"], delimiter="|"), tmp_path)
    assert rows(ds) == ROWS


def test_headerless_csv_without_names_gets_column_names(tmp_path):
    (tmp_path / "x.csv").write_text("a,1\nb,2\n")
    ds = read_source(src("x.csv", header=False), tmp_path)
    assert ds.column_names == ["column1", "column2"] and ds["column1"] == ["a", "b"]


def test_quoting_none_keeps_stray_quotes(tmp_path):
    (tmp_path / "q.tsv").write_text('ham\t"hello there\nspam\tfree "prize" now\nham\tok"\n')
    ds = read_source(src("q.tsv", header=False, names=["label", "text"], quoting=3), tmp_path)
    assert ds["text"] == ['"hello there', 'free "prize" now', 'ok"']


def test_na_strings_stay_text(tmp_path):
    (tmp_path / "na.csv").write_text("text,label\nNA,1\nnull,0\nNone,1\n")
    assert read_source(src("na.csv"), tmp_path)["text"] == ["NA", "null", "None"]


def test_regex_delimiter_splits_label_from_sentence(tmp_path):
    (tmp_path / "s.txt").write_text('1 a " quoted , sentence\n0 another one\n')
    ds = read_source(src("s.txt", format="csv", header=False, names=["label", "text"], delimiter=r"(?<=^[01]) "),
                     tmp_path)
    assert ds["label"] == [1, 0] and ds["text"] == ['a " quoted , sentence', "another one"]


def test_text_per_line_skips_blank_lines(tmp_path):
    (tmp_path / "c.txt").write_text("first line\n\nsecond line\n   \nthird\n")
    assert read_source(src("c.txt"), tmp_path)["text"] == ["first line", "second line", "third"]


def test_text_per_file_from_folder_and_glob(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("doc a\nline two\n")
    (corpus / "sub" / "b.txt").write_text("doc b\n")
    (corpus / ".hidden").write_text("skip me")
    ds = read_source(src("corpus", format="text", per_file=True), tmp_path)
    assert ds["text"] == ["doc a\nline two\n", "doc b\n"]
    ds = read_source(src("corpus/*.txt", per_file=True), tmp_path)
    assert ds["text"] == ["doc a\nline two\n"]


def test_changed_file_is_read_again(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("text,label\nold,0\n")
    assert read_source(src("c.csv"), tmp_path)["text"] == ["old"]
    f.write_text("text,label\nnew,1\nmore,0\n")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # as any later write would
    assert read_source(src("c.csv"), tmp_path)["text"] == ["new", "more"]


# --- bad data: always a UserError that names the file (and the line where there is one) ---

def bad(tmp_path, name, content, **options):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as info:
        read_source(src(name, **options), tmp_path)
    assert name in info.value.message and info.value.hint
    return info.value.message


def test_missing_file_says_where_it_looked(tmp_path):
    with pytest.raises(UserError) as info:
        read_source(src("nope/train.csv"), tmp_path)
    assert "nope/train.csv" in info.value.message and str(tmp_path) in info.value.hint


def test_missing_glob(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_source(src("corpus/*.txt", per_file=True), tmp_path)


def test_unknown_format(tmp_path):
    with pytest.raises(UserError, match="unknown data format 'xlsx'"):
        read_source(src("a.csv", format="xlsx"), tmp_path)
    assert "format" in bad(tmp_path, "a.dat", "x,y\n")


@pytest.mark.parametrize("name, content", [
    ("e.csv", ""), ("e.jsonl", ""), ("e.json", ""), ("e.parquet", ""), ("h.csv", "text,label\n"),
    ("l.json", "[]"), ("b.txt", "\n\n  \n"), ("w.jsonl", "\n\n"),
])
def test_empty(tmp_path, name, content):
    message = bad(tmp_path, name, content)
    assert "empty" in message or "no rows" in message


def test_csv_row_with_too_many_fields(tmp_path):
    assert ":4: 3 fields where 2" in bad(tmp_path, "long.csv", "text,label\na,1\nb,2\nc,3,4\nd,5\n")


def test_csv_row_with_too_few_fields(tmp_path):
    assert ":3: 1 fields where 2" in bad(tmp_path, "short.csv", "text,label\na,1\nb\nc,3\n")


def test_headerless_rows_longer_than_names(tmp_path):
    msg = bad(tmp_path, "n.tsv", "ham\thi\nspam\tbuy\tnow\n", header=False, names=["label", "text"])
    assert ":2: 3 fields where 2" in msg


def test_regex_delimited_row_without_a_label(tmp_path):
    msg = bad(tmp_path, "s.txt", "1 good\nno label here\n", format="csv", header=False,
              names=["label", "text"], delimiter=r"(?<=^[01]) ")
    assert ":2:" in msg


def test_invalid_jsonl_line(tmp_path):
    assert ":3: invalid JSON" in bad(tmp_path, "bad.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3,}\n{"a": 4}\n')


def test_jsonl_line_that_is_not_an_object(tmp_path):
    assert ":2: a JSON list" in bad(tmp_path, "arr.jsonl", '{"a": 1}\n[1, 2]\n')


def test_invalid_json_document(tmp_path):
    assert ":3: invalid JSON" in bad(tmp_path, "bad.json", '[{"a": 1},\n {"a": 2},\n {"a" 3}\n]')


def test_json_object_without_field_asks_for_it(tmp_path):
    doc = json.dumps({"version": "1", "data": ROWS}, indent=2)
    assert "one JSON object" in bad(tmp_path, "obj.json", doc)
    with pytest.raises(UserError, match="no key 'nope'") as info:
        read_source(src("obj.json", field="nope"), tmp_path)
    assert "data" in info.value.hint


@pytest.mark.parametrize("name, options", [("l.csv", {}), ("l.tsv", {}), ("l.jsonl", {}), ("l.txt", {}),
                                           ("l.txt", {"per_file": True})])
def test_non_utf8_line(tmp_path, name, options):
    lines = {"l.csv": "text,label\nok,1\ncafé,2\n", "l.tsv": "text\tlabel\nok\t1\ncafé\t2\n",
             "l.jsonl": '{"a": "x"}\n{"a": "y"}\n{"a": "café"}\n', "l.txt": "one\ntwo\ncafé\n"}[name]
    assert ":3: not valid UTF-8" in bad(tmp_path, name, lines.encode("latin-1"), **options)


def test_not_parquet(tmp_path):
    assert "parquet" in bad(tmp_path, "x.parquet", "not parquet at all")


def test_saved_dict_needs_a_split(table):
    with pytest.raises(UserError, match="splits") as info:
        read_source(src("saved_dict"), table)
    assert "train" in info.value.hint
    with pytest.raises(UserError, match="splits"):
        read_source(src("saved_dict", split="validation"), table)


def test_hub_id_that_cannot_be_loaded(tmp_path):
    with pytest.raises(UserError, match="nobody-xyz/no-such-data"):
        read_source(src("nobody-xyz/no-such-data"), tmp_path)


# --- the real data sets in ../shared/data (docs/offline.md) ---

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")
SST2 = dict(format="csv", header=False, names=["label", "text"], delimiter=r"(?<=^[01]) ")


@needs_shared
@pytest.mark.parametrize("path, options, columns, count", [
    ("sms_spam/SMSSpamCollection", dict(format="tsv", header=False, names=["label", "text"], quoting=3),
     ["label", "text"], 5574),
    ("sst2/stsa.binary.train", SST2, ["label", "text"], 6920),
    ("sst2/stsa.binary.dev", SST2, ["label", "text"], 872),
    ("sst2/stsa.binary.test", SST2, ["label", "text"], 1821),
    ("ag_news/test.csv", dict(header=False, names=["label", "title", "description"]),
     ["label", "title", "description"], 7600),
    ("dialogsum/dialogsum.dev.jsonl", {}, ["fname", "dialogue", "summary", "topic"], 500),
    ("dialogsum/dialogsum.test.jsonl", {}, ["fname", "dialogue", "summary1", "topic1", "summary2", "topic2",
                                            "summary3", "topic3"], 500),
    ("xquad_en/xquad.en.json", dict(field="data"), ["paragraphs", "title"], 48),
])
def test_shared_data_sets(path, options, columns, count):
    ds = read_source(src(path, **options), SHARED)
    assert ds.column_names == columns and ds.num_rows == count
    assert not any(c.null_count for c in ds.data.table.columns)


@needs_shared
def test_shared_label_counts():
    sms = read_source(src("sms_spam/SMSSpamCollection", format="tsv", header=False, names=["label", "text"],
                          quoting=3), SHARED)
    assert sms["label"].count("spam") == 747
    sst2 = read_source(src("sst2/stsa.binary.train", **SST2), SHARED)
    assert sum(sst2["label"]) == 3610
    raw = (SHARED / "sst2/stsa.binary.train").read_text(encoding="utf-8").splitlines()
    assert [f"{r['label']} {r['text']}" for r in sst2] == raw  # the split loses nothing
    ag = read_source(src("ag_news/test.csv", header=False, names=["label", "title", "description"]), SHARED)
    assert sorted(set(ag["label"])) == [1, 2, 3, 4]
    xquad = read_source(src("xquad_en/xquad.en.json", field="data"), SHARED)
    assert sum(len(q["qas"]) for a in xquad["paragraphs"] for q in a) == 1190


# --- data that used to be read wrong in silence (issue 22, item 6) ---

@needs_shared
def test_sms_spam_with_default_quoting_is_refused_naming_the_line_and_quoting_3():
    """A message that starts with `"` swallowed the next two under csv quoting: 5,572 rows from 5,574 lines."""
    options = dict(format="tsv", header=False, names=["label", "text"])
    with pytest.raises(UserError) as info:
        read_source(src("sms_spam/SMSSpamCollection", **options), SHARED)
    assert "SMSSpamCollection:5082:" in info.value.message and "5572 rows were read from 5574 data lines" in info.value.message
    assert "quoting: 3" in info.value.hint
    from adaptctl.data.readers import read_table

    table = read_table(src("sms_spam/SMSSpamCollection", quoting=3, **options), SHARED)
    assert (table.ds.num_rows, table.lines) == (5574, 5574)


def test_quoted_fields_that_really_span_lines_are_read_and_counted(tmp_path):
    from adaptctl.data.readers import read_table

    (tmp_path / "m.csv").write_text('text,label\n"first line\nsecond line",a\nplain,b\n"x, ""y""",a\n')
    table = read_table(src("m.csv"), tmp_path)
    assert table.ds["text"] == ["first line\nsecond line", "plain", 'x, "y"'] and table.lines == 4
    assert [table.where(i) for i in range(3)] == [f"{tmp_path / 'm.csv'}:{n}" for n in (2, 4, 5)]


def test_an_integer_column_with_an_empty_cell_stays_integer(tmp_path):
    (tmp_path / "i.csv").write_text("text,label\na,1\nb,\nc,0\n")
    ds = read_source(src("i.csv"), tmp_path)
    assert ds["label"] == [1, None, 0] and ds.features["label"].dtype == "int64"
    (tmp_path / "f.csv").write_text("text,score\na,0.5\nb,\n")
    assert read_source(src("f.csv"), tmp_path)["score"] == [0.5, None]  # real fractions stay floats


def test_duplicate_column_names_are_refused_naming_both(tmp_path):
    assert ":1: columns 1 and 3 are both named 'text'" in bad(tmp_path, "d.csv", "text,label,text\na,1,b\n")
    (tmp_path / "n.tsv").write_text("a\tb\n")
    with pytest.raises(UserError, match="source.names: columns 1 and 2 are both named 'text'"):
        read_source(src("n.tsv", header=False, names=["text", "text"]), tmp_path)


def test_rows_are_located_by_line_despite_blank_lines(tmp_path):
    from adaptctl.data.readers import read_table

    (tmp_path / "b.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    (tmp_path / "b.csv").write_text("\ntext,label\n\nx,1\ny,2\n")
    assert read_table(src("b.jsonl"), tmp_path).where(1) == f"{tmp_path / 'b.jsonl'}:3"
    csv_table = read_table(src("b.csv"), tmp_path)
    assert csv_table.where(0) == f"{tmp_path / 'b.csv'}:4" and csv_table.lines == 2
    (tmp_path / "l.json").write_text(json.dumps(ROWS))
    assert read_table(src("l.json"), tmp_path).where(3) == f"{tmp_path / 'l.json'}: row 4"


def test_a_file_that_cannot_be_opened_is_a_user_error(tmp_path, monkeypatch):
    """Permission denied (simulated: these tests may run as root, who reads any file)."""
    import builtins

    target = tmp_path / "locked.csv"
    target.write_text("text,label\na,1\n")
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if str(file) == str(target):
            raise PermissionError(13, "Permission denied", str(target))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(UserError, match="cannot read .*locked.csv: Permission denied") as info:
        read_source(src("locked.csv"), tmp_path)
    assert "permissions" in info.value.hint
