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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adaptctl.data import aligned, conll, limits, squad
from adaptctl.data.files import cannot_read  # also imported from here by prepare and predict
from adaptctl.data.limits import json_loads, longest_line, too_deep_json
from adaptctl.core.errors import UserError
from adaptctl.core.rundir import require_regular_file

# A field may be as long as a line may be (limits.MAX_LINE_BYTES, checked before any csv reading), not the
# csv module's 128 KiB, which a long document in a headerless file passes.
csv.field_size_limit(max(csv.field_size_limit(), limits.MAX_LINE_BYTES))

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "text", "arrow", "hub", "conll")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl",
               ".parquet": "parquet", ".txt": "text", ".text": "text", ".conll": "conll"}
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


@dataclass
class Table:
    """What a source read into: the rows, and enough about the files to point at a row's line."""

    ds: Any                    # datasets.Dataset
    files: list
    fmt: str
    source: Any
    lines: int | None = None   # csv/tsv: the data lines (not blank, not a header), to compare with rows

    @property
    def name(self) -> str:
        if self.fmt == "aligned":  # line-aligned files: all of them
            return ", ".join(map(str, self.files))
        return str(self.files[0] if len(self.files) == 1 else (self.files[0].parent if self.files else self.source.path))

    def where(self, index: int) -> str:
        """`file:line` of row `index` (0-based), or `file: row N` where a format has no lines."""
        try:
            for n, place in enumerate(_row_places(self.files, self.fmt, self.source)):
                if n == index:
                    return place
        except csv.Error:  # a field over csv's size limit: count rows instead
            pass
        return f"{self.name}: row {index + 1}"


def read_source(source, base_dir: Path):
    """Load `source` (path, format, header, names, delimiter, quoting, field, split, per_file)."""
    return read_table(source, base_dir).ds


def read_table(source, base_dir: Path) -> Table:
    """read_source, keeping the files and (csv/tsv) the count of data lines beside the rows."""
    if _opt(source, "columns"):
        return _read_aligned(source, base_dir)
    path, fmt = _resolve(source, base_dir)
    files = [] if fmt == "hub" else _files(path, source, base_dir, fmt)
    _check_bounds(files, fmt, source)
    try:
        with _muted("datasets"):
            ds = _load(fmt, files, source)
    except UserError:
        raise
    except Exception as err:  # datasets, pandas and pyarrow raise many types, none meant for the user
        raise _explain(err, files, fmt, source, path) from None
    if ds.num_rows == 0:
        raise UserError(f"{path} has no rows", hint="check that source.path is the file you meant")
    lines = None
    if fmt in ("csv", "tsv"):
        lines = sum(_data_lines(f, _opt(source, "header", True)) for f in files)
        if ds.num_rows != lines:
            _check_quoting(files, source, _sep(fmt, source), ds.num_rows, lines)
    return Table(ds=ds, files=files, fmt=fmt, source=source, lines=lines)


def _read_aligned(source, base_dir: Path) -> Table:
    """source.columns: line-aligned plain-text files, one column each (data/aligned.py)."""
    import datasets

    files = aligned.column_files(source, _folder(source, base_dir))
    ds = datasets.Dataset.from_dict(aligned.read_columns(files))
    return Table(ds=ds, files=list(files.values()), fmt="aligned", source=source, lines=None)


def _folder(source, base_dir: Path) -> Path:
    """source.path as an absolute path (for source.columns: the folder the files are in)."""
    return Path(os.path.abspath(Path(base_dir) / Path(source.path).expanduser()))


def source_files(source, base_dir: Path) -> list[Path]:
    """The local files a source reads (none for a hub id); a missing file is the UserError prepare gives."""
    if _opt(source, "columns"):
        files = aligned.column_files(source, _folder(source, base_dir))
        aligned.check_aligned(files)
        return list(files.values())
    path, fmt = _resolve(source, base_dir)
    return [] if fmt == "hub" else _files(path, source, base_dir, fmt)


def _resolve(source, base_dir: Path) -> tuple[Path, str]:
    """The absolute path and the format of a source."""
    # absolute, so that messages say exactly where we looked; an absolute source.path stays as it is
    path = Path(os.path.abspath(Path(base_dir) / Path(source.path).expanduser()))
    # only a name whose folder does not exist here may be a hub id: "data/tain.csv" is a typo, not a repo
    local = path.exists() or path.parent.is_dir()
    fmt = _opt(source, "format") or infer_format(str(path) if local else source.path)
    if fmt not in FORMATS:
        raise UserError(f"unknown data format {fmt!r} for {source.path}", hint=f"use one of: {', '.join(FORMATS)}")
    return path, fmt


# ------------------------------------------------------- a cheap look, for validate
PEEK_ROWS = 10
PEEK_DOCUMENT_BYTES = 8 * 2**20  # a JSON document is parsed whole to see its first records: ~0.1 s at this size


@dataclass
class Peek:
    """The columns of a source and its first rows, read without the data libraries (validate must stay fast)."""

    columns: list
    where: str                  # the file, or "the first N rows of FILE" where later rows may add columns
    rows: list | tuple = ()     # only where they hold the values prepare will see (JSON keeps its types; csv does not)
    places: list | tuple = ()   # file:line (or file: row N) of each row


def peek(source, base_dir: Path) -> Peek | None:
    """The columns and first rows of `source`, or None where that cannot be had cheaply: a hub id (the
    network or the datasets cache), parquet (importing pyarrow alone costs more than the rest of
    validate), a JSON document over PEEK_DOCUMENT_BYTES.  A missing or empty file is the UserError
    that prepare would raise."""
    if _opt(source, "columns"):
        files: Any = aligned.column_files(source, _folder(source, base_dir))  # a dict here, a list of paths below
        columns = aligned.read_columns(files, limit=PEEK_ROWS)
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        return Peek(columns=list(columns), where=", ".join(map(str, files.values())), rows=rows,
                    places=aligned.places(files, len(rows)))
    path, fmt = _resolve(source, base_dir)
    if fmt in ("hub", "parquet"):
        return None
    files = _files(path, source, base_dir, fmt)
    _check_bounds(files[:1], fmt, source, lines=PEEK_ROWS + 1)  # the lines a peek reads
    if fmt in ("csv", "tsv"):
        return _peek_csv(files, source, _sep(fmt, source))
    if fmt in ("json", "jsonl"):
        return _peek_json(files[0], source)
    if fmt == "text":
        return Peek(columns=["text"], where=str(files[0]))
    if fmt == "conll":
        rows, places = conll.first_rows(files[0], PEEK_ROWS)
        return Peek(columns=list(conll.COLUMNS), where=str(files[0]), rows=rows, places=places)
    return _peek_saved(files[0], source)


def _peek_csv(files, source, sep) -> Peek | None:
    _refuse_duplicate_names(files[:1], source, sep)
    with open(files[0], encoding="utf-8", errors="replace", newline="") as fh:
        if len(sep) == 1:
            try:
                first = next((row for row in csv.reader(fh, delimiter=sep, quoting=_quoting(source)) if row), [])
            except csv.Error:  # a NUL byte, a quoted field running on past the size limit: prepare finds the line
                return None
        else:  # a regex delimiter, split the way pandas' python engine does
            first = next((re.split(sep, line.strip()) for line in fh if line.strip()), [])
    names = _opt(source, "names")
    if names:
        columns = list(names)
    elif _opt(source, "header", True):
        columns = first
    else:
        columns = [f"column{i}" for i in range(1, len(first) + 1)]
    return Peek(columns=columns, where=str(files[0]))


def _peek_json(path: Path, source) -> Peek | None:
    try:
        records, places, complete = _first_json_records(path, _opt(source, "field"))
    except ValueError:  # not JSON (UnicodeDecodeError is one too): prepare's reader finds the line
        return None
    if not records or not all(isinstance(r, dict) for r in records):
        return None  # not records: prepare's reader explains what it is
    if squad.is_nested(list(dict.fromkeys(key for record in records for key in record))):
        records = squad.flatten_records(records)[:PEEK_ROWS]  # as prepare reads it: one row per question
        places = [f"{path}: question {i}" for i in range(1, len(records) + 1)]
        if not records:
            return None  # articles without questions: prepare says so
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = [{c: record.get(c) for c in columns} for record in records]  # a key a row lacks is None, as datasets reads it
    where = str(path) if complete else f"the first {len(rows)} rows of {path}"
    return Peek(columns=columns, where=where, rows=rows, places=places)


def _first_json_records(path: Path, field) -> tuple[list | None, list, bool]:
    """(the first records, their places, whether they are all the records' keys can come from)."""
    with open(path, encoding="utf-8") as fh:
        if field is not None or fh.read(1024).lstrip().startswith("["):  # one document
            if path.stat().st_size > PEEK_DOCUMENT_BYTES:
                return None, [], False
            fh.seek(0)
            doc = json_loads(fh.read())
            records = doc.get(field) if field is not None and isinstance(doc, dict) else doc
            if not isinstance(records, list):
                return None, [], False
            return records[:PEEK_ROWS], [f"{path}: row {i}" for i in range(1, min(len(records), PEEK_ROWS) + 1)], \
                len(records) <= PEEK_ROWS
        fh.seek(0)
        records, places = [], list[str]()
        for n, line in enumerate(fh, 1):  # JSON lines: the first lines are the first rows
            if len(records) == PEEK_ROWS:
                return records, places, False
            if line.strip():
                records.append(json_loads(line))
                places.append(f"{path}:{n}")
        return records, places, True


def _peek_saved(folder: Path, source) -> Peek | None:
    """A save_to_disk folder names its columns in dataset_info.json (a DatasetDict: per split folder)."""
    if (folder / "dataset_dict.json").is_file():
        splits = json_loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        split = _opt(source, "split") or (splits[0] if len(splits) == 1 else None)
        if split is None or split not in splits:
            return None  # prepare names the splits there are
        folder = folder / split
    info = folder / "dataset_info.json"
    features = json_loads(info.read_text(encoding="utf-8")).get("features") if info.is_file() else None
    return Peek(columns=list(features), where=str(folder)) if isinstance(features, dict) else None


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
    elif path.exists() and not path.is_file():  # /dev/zero, a FIFO, a terminal: read for ever, or blocked
        require_regular_file(path)
        files = []
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise UserError(f"data not found: {path}",
                        hint=f"source.path {source.path!r} is resolved relative to {Path(base_dir).resolve()}")
    for f in files:  # pandas and pyarrow fail on a 0-byte file without saying so
        _require_readable(f)
        if fmt != "text" and f.stat().st_size == 0:
            raise UserError(f"{f} is empty (0 bytes)", hint="point source.path at a file with data")
    return files


# Formats read line by line: one line is read whole by the readers here and by pandas and pyarrow.
LINE_FORMATS = ("csv", "tsv", "jsonl", "text")


def _check_bounds(files, fmt: str, source, lines: int | None = None):
    """A line over limits.MAX_LINE_BYTES (a file that is one endless line) is refused by file and line,
    before anything reads it whole; so is JSON nested past limits.MAX_JSON_DEPTH (pyarrow's reader
    would crash the process on it).  `lines`: only the first lines (what validate's peek reads)."""
    if fmt in LINE_FORMATS and not (fmt == "text" and _opt(source, "per_file")):
        for f in files:
            if found := longest_line(f, lines=lines):
                raise UserError(f"{f}:{found[0]}: a line of more than {limits.MAX_LINE_BYTES // 2**20} MiB",
                                hint="is this the data file you meant? Each line should be one row; check source.format")
    if fmt in ("json", "jsonl"):
        for f in files:
            if line := too_deep_json(f, lines=lines):
                raise UserError(f"{f}:{line}: JSON nested more than {limits.MAX_JSON_DEPTH} levels deep",
                                hint="a record nests a few levels; is this the data file you meant?")


def _require_readable(path: Path):
    """A file we may not open would fail deep inside pandas or pyarrow, and again in the error path."""
    if path.is_dir():
        return  # a saved data set folder: load_from_disk reads it
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise cannot_read(path, exc) from None


# Where `datasets` writes the Arrow copy of a file it reads, and its map caches: a folder of adaptctl's own,
# removed when the reading is done (private_cache), or None for the library's shared cache.
_scratch: list[Path] = []


@contextlib.contextmanager
def private_cache():
    """Around reading and preparing a data set: `datasets` caches what it reads (the raw rows, secrets
    not yet masked, redact.py) in a folder that is removed at the end, not in ~/.cache/huggingface, where
    they would stay.  adaptctl keeps its own cache of the prepared, masked data (stages/prepare.py)."""
    import shutil

    from adaptctl.core.rundir import cache_dir, clear_stale, leftover_path

    if _scratch:  # already inside one: it is removed by the outer block
        yield _scratch[-1]
        return
    clear_stale(cache_dir() / "datasets")  # what a killed process left: .datasets.tmp-PID of a dead PID
    folder = leftover_path(cache_dir() / "datasets", "tmp")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _scratch.append(folder)
    try:
        yield folder
    finally:
        _scratch.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _cache_options() -> dict:
    return {"cache_dir": str(_scratch[-1])} if _scratch else {}


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
        ds = datasets.Dataset.from_json(paths, field=_opt(source, "field"), **extra, **_cache_options())
        ds.data.table.validate(full=True)  # pyarrow's json reader lets bytes that are not UTF-8 through
        return ds
    if fmt == "parquet":
        return datasets.Dataset.from_parquet(paths, **_cache_options())
    if fmt == "conll":
        return conll.read(files)
    if fmt == "text":
        ds = datasets.Dataset.from_text(paths, sample_by="document" if _opt(source, "per_file") else "line",
                                        **_cache_options())
        # a blank line or an empty file would be an example without a single token
        return ds.filter(lambda batch: [bool(t.strip()) for t in batch["text"]], batched=True)
    if fmt == "arrow":
        return _pick_split(datasets.load_from_disk(paths[0]), source, paths[0])
    return _pick_split(datasets.load_dataset(source.path, split=_opt(source, "split")), source, source.path)


def _sep(fmt, source):
    return _opt(source, "delimiter") or ("\t" if fmt == "tsv" else ",")


def _read_csv(datasets, files, source, sep):
    _refuse_duplicate_names(files, source, sep)
    kwargs = dict(sep=sep, header=0 if _opt(source, "header", True) else None, names=_opt(source, "names"),
                  # only an empty cell is missing: "NA", "null" and "None" are real words in messages
                  keep_default_na=False, na_values=[""])
    if _opt(source, "quoting") is not None:
        kwargs["quoting"] = source.quoting
    if len(sep) > 1:  # pandas reads a longer delimiter as a regex, which only its python engine can
        kwargs["engine"] = "python"
    ds = datasets.Dataset.from_csv([str(f) for f in files], **kwargs, **_cache_options())
    # pandas pads a short row with empty cells and makes a long one's extra field an index, silently
    if "__index_level_0__" in ds.column_names or any(c.null_count for c in ds.data.table.columns):
        if err := _csv_error(files, source, sep):
            raise err
    if not _opt(source, "header", True) and not _opt(source, "names"):  # pandas names them "0", "1", ...
        ds = ds.rename_columns({c: f"column{i}" for i, c in enumerate(ds.column_names, 1)})
    return _integers_back(ds)


def _integers_back(ds):
    """pandas reads an integer column with an empty cell as floats (1 -> 1.0): labels "0"/"1" would
    become "0.0"/"1.0".  A float column with missing cells whose values are all whole is an integer
    column; give it back its type, with the empty cells missing (None), so that they can be refused."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Value

    for name in ds.column_names:
        column = ds.data.table.column(name)
        if not pa.types.is_floating(column.type) or not column.null_count:
            continue
        values = pc.drop_null(column)
        whole = pc.and_(pc.equal(values, pc.floor(values)), pc.less(pc.abs(values), 2.0 ** 53))  # exact in a float
        if len(values) and pc.all(whole).as_py():
            ds = ds.cast_column(name, Value("int64"))
    return ds


def _refuse_duplicate_names(files, source, sep):
    """pandas renames a repeated column name to "name.1", so a template reading `name` silently sees
    only the first of them: refuse, naming both."""
    names = _opt(source, "names")
    if names:
        _first_duplicate(names, "source.names", "give every column its own name in source.names")
    if not _opt(source, "header", True) or len(sep) != 1:
        return
    for f in files:
        with open(f, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=sep, quoting=_quoting(source))
            try:
                header = next((row for row in reader if row), [])
            except csv.Error:  # a header over csv's field size limit: the loader's error path explains it
                return
            _first_duplicate(header, f"{f}:{reader.line_num}", "rename one of them in the header line, or set "
                             "source.header: false with source.names")


def _first_duplicate(names, where, hint):
    seen = {}
    for i, name in enumerate(names, 1):
        if name in seen:
            raise UserError(f"{where}: columns {seen[name]} and {i} are both named {name!r}", hint=hint)
        seen[name] = i


Quoting = Literal[0, 1, 2, 3]  # csv.QUOTE_MINIMAL, QUOTE_ALL, QUOTE_NONNUMERIC, QUOTE_NONE


def _quoting(source) -> Quoting:
    return csv.QUOTE_MINIMAL if _opt(source, "quoting") is None else source.quoting


def _data_lines(path, header: bool) -> int:
    """Lines that hold data: pandas skips blank lines, and the header is not a row."""
    with open(path, "rb") as fh:
        count = sum(1 for line in fh if line.strip(b"\r\n"))
    return max(count - bool(header), 0)


def _check_quoting(files, source, sep, rows: int, lines: int):
    """Fewer rows than data lines: a quoted field spans lines.  Where quotes are ordinary characters
    (SMSSpamCollection: a message that starts with `"`), that field swallows the messages after it,
    in silence.  If the file reads with every line one row of the right width when quotes are not
    special, that is what it means: refuse, naming the line and `quoting: 3`.  Fields that really
    span lines (the same file would not read that way) and an explicit `quoting` are accepted, and
    prepare reports the counts."""
    if _opt(source, "quoting") is not None or len(sep) != 1:
        return
    if _csv_error(files, source, sep, quoting=csv.QUOTE_NONE) is not None:
        return  # not one row per line without quoting either: quoted fields that span lines, as CSV allows
    for f in files:
        if span := _first_spanning_row(f, sep):
            raise UserError(f"{f}:{span[0]}: a quote opens a field that runs to line {span[1]}; {rows} rows were "
                            f"read from {lines} data lines",
                            hint="if quote characters in this file are ordinary text, set source.quoting: 3 "
                                 "(no quoting); if fields really span lines, set source.quoting: 0")


def _first_spanning_row(path, sep) -> tuple[int, int] | None:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        last = 0
        try:
            for _ in reader:
                if reader.line_num > last + 1:
                    return last + 1, reader.line_num
                last = reader.line_num
        except csv.Error:  # a quote left open to the end of the file, beyond csv's field size limit
            return last + 1, last + 1
    return None


def _row_places(files, fmt, source):
    """`file:line` of each row in read order, the way the loaders count rows (blank lines skipped)."""
    if fmt == "aligned":  # every line is a row, blank ones too: the first column's file names it
        yield from (f"{files[0]}:{n}" for n in range(1, 1 + aligned.line_count(files[0])))
        return
    for f in files:
        if fmt in ("csv", "tsv") and len(_sep(fmt, source)) == 1:
            with open(f, encoding="utf-8", errors="replace", newline="") as fh:
                reader = csv.reader(fh, delimiter=_sep(fmt, source), quoting=_quoting(source))
                last, header = 0, _opt(source, "header", True)
                for row in reader:
                    start, last = last + 1, reader.line_num  # a quoted field may span lines: its row starts here
                    if row in ([], [""]):
                        continue
                    if header:  # the first row that is not blank
                        header = False
                        continue
                    yield f"{f}:{start}"
        elif fmt == "conll":
            yield from conll.places([f])
        elif fmt in ("csv", "tsv", "jsonl", "text") and not _opt(source, "per_file"):
            skip = fmt in ("csv", "tsv") and _opt(source, "header", True)
            with open(f, encoding="utf-8", errors="replace") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        if skip:
                            skip = False
                            continue
                        yield f"{f}:{n}"
        else:
            return  # json documents, parquet, arrow, per-file text: rows have no line of their own


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
                json_loads(fh.read())
            except json.JSONDecodeError as e:
                return e.lineno, f"invalid JSON: {e.msg}"
            return None
        fh.seek(0)
        for n, line in enumerate(fh, 1):
            try:
                record = json_loads(line) if line.strip() else {}
            except json.JSONDecodeError as e:
                return n, f"invalid JSON: {e.msg} (column {e.colno})"
            if not isinstance(record, dict):
                return n, f"a JSON {type(record).__name__}, not an object"
    return None


def _csv_error(files, source, sep, quoting: Quoting | None = None) -> UserError | None:
    """The first row whose field count differs from the header's (or the names', or the first row's),
    read with the source's quoting or the `quoting` given."""
    names = _opt(source, "names")
    for f in files:
        want = len(names) if names and not _opt(source, "header", True) else None
        with open(f, encoding="utf-8", newline="") as fh:
            if len(sep) == 1:
                reader = csv.reader(fh, delimiter=sep, quoting=_quoting(source) if quoting is None else quoting)
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
        json_loads(first)  # one whole object on the first line: JSON lines
    except json.JSONDecodeError:
        if (keys := _list_keys(path)) is not None:
            raise UserError(f"{path} is one JSON object, not a list of records",
                            hint=f"set source.field to the key holding the records; keys holding lists: {keys}") from None


def _list_keys(path) -> str | None:
    try:
        doc = json_loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None  # not one JSON document: the loader's error path finds the line
    if not isinstance(doc, dict):
        return None
    return ", ".join(k for k, v in doc.items() if isinstance(v, list)) or "none"
