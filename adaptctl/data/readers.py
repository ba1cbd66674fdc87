"""Read a recipe's `data.source` into a `datasets.Dataset` (the first step of prepare).

All parsing is done by `datasets` (pandas for csv/tsv, pyarrow for json/parquet), so a
load is cached as Arrow under ~/.cache/huggingface/datasets, keyed by path and mtime:
an edited file is read again.  What those libraries raise on bad data is long and
rarely names a line, so every failure becomes a UserError naming the file and, found
by a cheap scan that runs only when something is wrong, the line.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import re
from pathlib import Path

from adaptctl.errors import UserError

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "text", "arrow", "hub")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl",
               ".parquet": "parquet", ".txt": "text", ".text": "text"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CSV_HINT = ("every row needs the same number of fields; if the text has stray quote characters "
             "set source.quoting: 3 (no quoting); check source.delimiter and source.header")


def infer_format(path: str) -> str:
    p = Path(path)
    if p.suffix.lower() in _EXTENSIONS:
        return _EXTENSIONS[p.suffix.lower()]
    # save_to_disk writes state.json (a Dataset) or dataset_dict.json (a DatasetDict)
    if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
        return "arrow"
    if not p.exists() and _HUB_ID.fullmatch(path):
        return "hub"
    if not p.exists():
        raise UserError(f"no file, folder or hub id (owner/name) at {path}", hint="check source.path")
    raise UserError(f"cannot tell the format of {path}", hint=f"set source.format to one of: {', '.join(FORMATS)}")


def read_source(source, base_dir: Path):
    """Load `source` (path, format, header, names, delimiter, quoting, field, split, per_file)."""
    # absolute, so that messages say exactly where we looked; an absolute source.path stays as it is
    path = Path(os.path.abspath(Path(base_dir) / Path(source.path).expanduser()))
    # only a name whose folder does not exist here may be a hub id: "data/tain.csv" is a typo, not a repo
    local = path.exists() or path.parent.is_dir()
    fmt = _opt(source, "format") or infer_format(str(path) if local else source.path)
    if fmt not in FORMATS:
        raise UserError(f"unknown data format {fmt!r} for {source.path}", hint=f"use one of: {', '.join(FORMATS)}")
    files = [] if fmt == "hub" else _files(path, source, base_dir, fmt)
    try:
        with _muted("datasets"):
            ds = _load(fmt, files, source)
    except UserError:
        raise
    except Exception as err:  # datasets, pandas and pyarrow raise many types, none meant for the user
        raise _explain(err, files, fmt, source, path) from None
    if ds.num_rows == 0:
        raise UserError(f"{path} has no rows", hint="check that source.path is the file you meant")
    return ds


@contextlib.contextmanager
def _muted(logger_name: str):
    """datasets logs a reader's failure ("Failed to read file ...") before raising it; the UserError
    below says it better, with the line, so the library's line is only noise on stderr."""
    import logging

    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _opt(source, name, default=None):
    return getattr(source, name, default)  # lets callers pass only the options they use


def _files(path: Path, source, base_dir, fmt) -> list[Path]:
    if fmt == "arrow" and path.is_dir():
        return [path]
    if re.search(r"[*?[]", str(path)):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    elif path.is_dir():  # a folder of shards or documents; skip .DS_Store, .gitkeep and the like
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise UserError(f"data not found: {path}",
                        hint=f"source.path {source.path!r} is resolved relative to {Path(base_dir).resolve()}")
    for f in files:  # pandas and pyarrow fail on a 0-byte file without saying so
        if fmt != "text" and f.stat().st_size == 0:
            raise UserError(f"{f} is empty (0 bytes)", hint="point source.path at a file with data")
    return files


def _load(fmt, files, source):
    import datasets

    paths = [str(f) for f in files]
    if fmt in ("csv", "tsv"):
        return _read_csv(datasets, files, source, _sep(fmt, source))
    if fmt in ("json", "jsonl"):
        for f in files if _opt(source, "field") is None else []:
            _refuse_single_object(f)
        from datasets.packaged_modules.json.json import JsonConfig

        # datasets 5 takes a jsonl that merely has type/message keys for agent traces (needs `teich`)
        extra = {"parse_agent_traces": False} if "parse_agent_traces" in JsonConfig.__dataclass_fields__ else {}
        ds = datasets.Dataset.from_json(paths, field=_opt(source, "field"), **extra)
        ds.data.table.validate(full=True)  # pyarrow's json reader lets bytes that are not UTF-8 through
        return ds
    if fmt == "parquet":
        return datasets.Dataset.from_parquet(paths)
    if fmt == "text":
        ds = datasets.Dataset.from_text(paths, sample_by="document" if _opt(source, "per_file") else "line")
        # a blank line or an empty file would be an example without a single token
        return ds.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    if fmt == "arrow":
        return _pick_split(datasets.load_from_disk(paths[0]), source, paths[0])
    return _pick_split(datasets.load_dataset(source.path, split=_opt(source, "split")), source, source.path)


def _sep(fmt, source):
    return _opt(source, "delimiter") or ("\t" if fmt == "tsv" else ",")


def _read_csv(datasets, files, source, sep):
    kwargs = dict(sep=sep, header=0 if _opt(source, "header", True) else None, names=_opt(source, "names"),
                  # only an empty cell is missing: "NA", "null" and "None" are real words in messages
                  keep_default_na=False, na_values=[""])
    if _opt(source, "quoting") is not None:
        kwargs["quoting"] = source.quoting
    if len(sep) > 1:  # pandas reads a longer delimiter as a regex, which only its python engine can
        kwargs["engine"] = "python"
    ds = datasets.Dataset.from_csv([str(f) for f in files], **kwargs)
    # pandas pads a short row with empty cells and makes a long one's extra field an index, silently
    if "__index_level_0__" in ds.column_names or any(c.null_count for c in ds.data.table.columns):
        if err := _csv_error(files, source, sep):
            raise err
    if not _opt(source, "header", True) and not _opt(source, "names"):  # pandas names them "0", "1", ...
        ds = ds.rename_columns({c: f"column{i}" for i, c in enumerate(ds.column_names, 1)})
    return ds


def _pick_split(data, source, where):
    split = _opt(source, "split")
    if not hasattr(data, "keys"):  # a Dataset, not a DatasetDict
        return data
    if split is None and len(data) == 1:
        return next(iter(data.values()))
    if split in data:
        return data[split]
    raise UserError(f"{where} has splits {list(data)} and source.split is {split!r}",
                    hint=f"set source.split to one of: {', '.join(data)}")


def _explain(err, files, fmt, source, path) -> UserError:
    cause = err.__cause__ or err  # datasets wraps a reader's error in DatasetGenerationError
    name = files[0] if len(files) == 1 else (files[0].parent if files else source.path)
    if fmt == "hub":
        return UserError(f"could not load hub data set {source.path!r}: {cause}",
                         hint=f"nothing at {path} either; check the id, the network and HF_HUB_OFFLINE")
    for f in files if fmt not in ("parquet", "arrow") else []:
        if line := _bad_utf8_line(f):
            return UserError(f"{f}:{line}: not valid UTF-8",
                             hint="save the file as UTF-8, e.g. iconv -f latin1 -t utf-8")
        if fmt in ("json", "jsonl") and (bad := _bad_json_line(f, _opt(source, "field"))):
            return UserError(f"{f}:{bad[0]}: {bad[1]}", hint="json: one document, a list of records (or set "
                             "source.field); jsonl: one JSON object per line")
    if fmt in ("csv", "tsv") and (csv_err := _csv_error(files, source, _sep(fmt, source))):
        return csv_err
    if isinstance(cause, KeyError) and _opt(source, "field"):
        return UserError(f"{name} has no key {source.field!r}", hint=f"keys holding lists: {_list_keys(files[0])}")
    if isinstance(cause, StopIteration) or "corresponds to no data" in str(cause):
        return UserError(f"{name} has no rows", hint="check that source.path is the file you meant")
    return UserError(f"could not read {name} as {fmt}: {type(cause).__name__}: {cause}",
                     hint="check source.format and the options that go with it")


def _bad_utf8_line(path) -> int | None:
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return n
    return None


def _bad_json_line(path, field) -> tuple[int, str] | None:
    with open(path, encoding="utf-8") as fh:
        if field or fh.read(1024).lstrip().startswith("["):  # one JSON document: the decoder knows the line
            fh.seek(0)
            try:
                json.load(fh)
            except json.JSONDecodeError as e:
                return e.lineno, f"invalid JSON: {e.msg}"
            return None
        fh.seek(0)
        for n, line in enumerate(fh, 1):
            try:
                record = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError as e:
                return n, f"invalid JSON: {e.msg} (column {e.colno})"
            if not isinstance(record, dict):
                return n, f"a JSON {type(record).__name__}, not an object"
    return None


def _csv_error(files, source, sep) -> UserError | None:
    """The first row whose field count differs from the header's (or the names', or the first row's)."""
    names = _opt(source, "names")
    for f in files:
        want = len(names) if names and not _opt(source, "header", True) else None
        with open(f, encoding="utf-8", newline="") as fh:
            if len(sep) == 1:
                reader = csv.reader(fh, delimiter=sep, quoting=_opt(source, "quoting") or csv.QUOTE_MINIMAL)
                rows = ((reader.line_num, row) for row in reader)
            else:  # a regex delimiter, split the way pandas' python engine does
                rows = ((n, re.split(sep, line.strip())) for n, line in enumerate(fh, 1))
            try:
                for n, row in rows:
                    if row not in ([], [""]):  # pandas skips blank lines
                        want = want or len(row)
                        if len(row) != want:
                            return UserError(f"{f}:{n}: {len(row)} fields where {want} were expected",
                                             hint=_CSV_HINT)
            except csv.Error:  # a field over csv's size limit: no line to show, keep the loader's message
                return None
    return None


def _refuse_single_object(path):
    """A pretty-printed {"data": [...]} would load as one row of nested lists: ask for `field`."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip()
    if not first.startswith("{"):
        return
    try:
        json.loads(first)  # one whole object on the first line: JSON lines
    except json.JSONDecodeError:
        if (keys := _list_keys(path)) is not None:
            raise UserError(f"{path} is one JSON object, not a list of records",
                            hint=f"set source.field to the key holding the records; keys holding lists: {keys}")


def _list_keys(path) -> str | None:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None  # not one JSON document: the loader's error path finds the line
    if not isinstance(doc, dict):
        return None
    return ", ".join(k for k, v in doc.items() if isinstance(v, list)) or "none"
