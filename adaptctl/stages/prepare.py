"""prepare: raw files -> mapped columns -> splits -> tokenized arrow data.

Writes RUN_DIR/prepare/{data/, labels.json, stats.json, lengths.png}.  The
result is cached under ADAPTCTL_CACHE keyed by the data files' contents, the
recipe's task/data/model sections and the tokenizer, so a second prepare with
the same inputs only copies it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from adaptctl.core import console, redact
from adaptctl.data.labels import label_counts
from adaptctl.data.columns import RowError, TemplateRowError, check_columns, render, slice_column, without_slices
from adaptctl.data.readers import private_cache
from adaptctl.data.splits import group_split_indices, split_indices
from adaptctl.core.errors import UserError
from adaptctl.run.context import StageContext, StageResult, resolved_recipe_text
from adaptctl.core.redact import write_text
from adaptctl.retrieval import FOLDER as RETRIEVAL_FOLDER
from adaptctl.core.rundir import TEACHER_LOGITS, atomic_dir, content_hash, file_hash, json_hash
from adaptctl.tasks import TASK_MODULES, get_task

SPLITS = ("train", "validation", "test")
PERCENTILES = (50, 90, 95, 99, 100)


def inputs(ctx: StageContext) -> dict:
    """Content hashes of every local data file the recipe names."""
    data = ctx.recipe.data
    hashes: dict = {}
    for name in ("source", "validation", "test"):
        source = getattr(data, name)
        if source is not None and source.columns:  # the files it names, not the rest of their folder
            hashes[name] = _hash_columns(ctx, name)
        elif source is not None:
            path = _local_path(source.path, ctx.recipe_dir)
            hashes[name] = _hash_data(path) if path is not None else source.path
    if parent := _parent_model_key(ctx):
        hashes["base_run"] = parent
    elif folder := _local_model_folder(ctx):  # weights or tokenizer edited in place: the stages are stale
        hashes["model.base"] = content_hash(folder)
    if data.retrieval is not None:  # the corpus (and, where prepare retrieves, the embedder) by content
        hashes.update(_retrieval_keys(ctx))
    return hashes


def _retrieval_keys(ctx: StageContext) -> dict:
    from adaptctl.retrieval.corpus import corpus_hash
    from adaptctl.retrieval.prepared import content_keys

    settings = ctx.recipe.data.retrieval
    assert settings is not None  # inputs asks only with data.retrieval
    if get_task(ctx.recipe.task).retrieval_use(ctx.recipe.data) == "prompt":
        return content_keys(settings, ctx.recipe_dir, ctx.where)
    return {"data.retrieval.corpus": corpus_hash(settings.corpus, ctx.recipe_dir, ctx.where)}


def _local_model_folder(ctx: StageContext) -> Path | None:
    """model.base when it is a model folder of the user's (not a hub id, a .gguf file or an earlier run)."""
    folder = _local_path(ctx.recipe.model.base, ctx.recipe_dir)
    return folder if folder is not None and folder.is_dir() and (folder / "config.json").is_file() else None


def _parent_model_key(ctx: StageContext) -> dict | None:
    """model.base a run directory: its model stage's key, so that a parent trained again makes this run stale."""
    from adaptctl.core.rundir import RunDir, is_run_directory, run_model_folder

    folder = _local_path(ctx.recipe.model.base, ctx.recipe_dir)
    found = run_model_folder(folder) if folder is not None and is_run_directory(folder) else None
    if found is None:
        return None  # a plain model, or a run without a model (refused when prepare runs)
    assert folder is not None  # found is its model
    stage = found[1]
    return {"stage": stage, "key": (RunDir(folder).read_manifest(stage) or {}).get("key")}


def _hash_data(path: Path) -> str:
    # runs before the stage starts (its key), so an unreadable file must be a UserError here already
    from adaptctl.data.readers import cannot_read

    try:
        return file_hash(path)
    except OSError as exc:
        raise cannot_read(path, exc) from None


def _hash_columns(ctx: StageContext, name: str) -> dict:
    """Each line-aligned file's hash; files of different lengths are refused here, at data.<name>, before any
    stage starts."""
    from adaptctl.data.readers import source_files

    source = getattr(ctx.recipe.data, name)
    try:
        files = source_files(source, ctx.recipe_dir)
    except UserError as err:
        raise UserError(f"{ctx.where(('data', name))}: {err.message}", hint=err.hint) from None
    return {column: _hash_data(path) for column, path in zip(source.columns, files)}


def data_seed(recipe) -> int:
    """The seed that picks held-out and sampled rows: data.splits.seed, else the recipe's seed."""
    return recipe.data.splits.seed if recipe.data.splits.seed is not None else recipe.seed


def _local_path(path: str, base: Path) -> Path | None:
    candidate = Path(path) if os.path.isabs(path) else base / path
    return candidate if candidate.exists() else None


def _refuse_gguf_of_this_model(ctx: StageContext, model_path: Path):
    """export.formats: gguf for an architecture that cannot have it: said now, not after training."""
    from adaptctl.export.gguf_support import config_problem
    from adaptctl.core.rundir import read_json_object

    if problem := config_problem(ctx.recipe, read_json_object(model_path / "config.json")):
        raise UserError(f"{ctx.where(('export', 'formats'))}: {problem[0]}", hint=problem[1])


def run(ctx: StageContext) -> StageResult:
    from adaptctl.models.resolve import cache_dir

    from adaptctl.models.loading import check_loadable, check_tokenizer_files

    recipe = ctx.recipe
    model = _resolve_base(ctx)
    check_loadable(model.path, recipe)  # the first stage refuses unsafe model folders, before any work
    check_tokenizer_files(model.path)
    if problem := get_task(recipe.task).model_problem(model.path):
        raise UserError(f"{ctx.where(('model', 'base'))}: {problem}",
                        hint=f"use a model that fits task {recipe.task} (e.g. {get_task(recipe.task).starter['model']}), "
                             "or the task that fits this model")
    _refuse_gguf_of_this_model(ctx, model.path)
    # The data is masked for the secret values set now: data masked for other values is not reused from
    # the cache.  They are not part of the stage key: a rotated token must not make every trained model stale.
    key = json_hash({"inputs": ctx.inputs_of("prepare"), "masked_secrets": redact.fingerprint(),
                     "task": recipe.task, "seed": data_seed(recipe),
                     "data": recipe.data.model_dump(mode="json"), "tokenizer": _tokenizer_hash(model.path),
                     "code": _code_hash(recipe.task, retrieves=recipe.data.retrieval is not None),
                     **({"add_tokens": recipe.model.model_dump(mode="json")["add_tokens"]} if recipe.model.add_tokens else {}),
                     **({"slices": recipe.evaluate.slices} if recipe.evaluate.slices else {}),
                     **({"pii": _pii_code()} if recipe.data.pii else {}),
                     **({"canaries": [recipe.evaluate.canaries, recipe.evaluate.canary_copies or 1]}
                        if recipe.evaluate.canaries else {})})
    cached = cache_dir() / "prepared" / key
    if (cached / "stats.json").exists():
        console.info(f"prepare: cache hit ({cached}); reusing the tokenized data")
        cache_hit = True
    else:
        # keep_existing: a sweep's other worker may prepare the same data at once; either copy serves, and
        # one replacing the other while a third process copies it would pull the folder from under it.
        with atomic_dir(cached, keep_existing=True) as tmp, private_cache():  # no raw rows left in datasets' cache
            _prepare_into(tmp, ctx, model.path)
        cache_hit = False
    out = ctx.run.stage("prepare")
    with atomic_dir(out) as tmp:
        # Copied, not hard-linked: a link would make an edit of one run's labels.json (or a tool writing
        # to its arrow files) change the cache and every other run with the same data.  A prepared SST-2
        # folder (2.8 MB, 13 files) copies in 12 ms against 2 ms to link (median of 20 here).
        shutil.copytree(cached, tmp, dirs_exist_ok=True)
        _keep_teacher_logits(ctx, out, tmp, key)
    stats = json.loads((out / "stats.json").read_text())
    outputs = {"data": "prepare/data", "stats": "prepare/stats.json", "labels": "prepare/labels.json",
               "lengths_plot": "prepare/lengths.png"}
    if (out / RETRIEVAL_FOLDER).is_dir():
        outputs["retrieval"] = f"prepare/{RETRIEVAL_FOLDER}"
    metrics = {f"{s}_rows": v["rows"] for s, v in stats["splits"].items()}
    return StageResult(outputs=outputs, metrics=metrics,
                       manifest={"cache_hit": cache_hit, "cache_key": key, "model_path": str(model.path),
                                 "inputs": {"data_hashes": ctx.inputs_of("prepare"), "model": recipe.model.base,
                                            **({"decoder": recipe.model.decoder} if recipe.model.decoder else {})},
                                 "lineage": lineage(ctx, model)})


def _resolve_base(ctx: StageContext):
    """model.base resolved (a run directory to its model), or with model.decoder the encoder-decoder
    composed of the two (encoder_decoder.py); what cannot be is said at its recipe line."""
    from dataclasses import replace

    from adaptctl.models.encoder_decoder import composed_folder
    from adaptctl.models.loading import check_loadable, load_options

    recipe = ctx.recipe
    base = _resolved(ctx, "base")
    if recipe.model.decoder is None:
        return base
    decoder = _resolved(ctx, "decoder")
    check_loadable(base.path, recipe)
    check_loadable(decoder.path, recipe, name=recipe.model.decoder)
    try:
        folder = composed_folder(base.path, decoder.path, load_options(recipe))
    except UserError as exc:
        field = next((f for f in ("base", "decoder") if exc.message.startswith(f"model.{f}: ")), None)
        if field is None:
            raise
        raise UserError(f"{ctx.where(('model', field))}: {exc.message.removeprefix(f'model.{field}: ')}",
                        hint=exc.hint) from None
    console.info(f"prepare: encoder-decoder from {recipe.model.base} (encoder) and {recipe.model.decoder} "
                 f"(decoder, new cross-attention): {folder}")
    return replace(base, path=folder)


def _resolved(ctx: StageContext, field: str):
    """model.<field> resolved; resolve_model's messages name model.base, located here at the field's line."""
    from adaptctl.models.resolve import resolve_model

    try:
        return resolve_model(getattr(ctx.recipe.model, field), base_dir=ctx.recipe_dir, allow_pickle=ctx.recipe.model.allow_pickle)
    except UserError as exc:
        if not exc.message.startswith("model.base: "):
            raise
        raise UserError(f"{ctx.where(('model', field))}: {exc.message.removeprefix('model.base: ')}",
                        hint=exc.hint, details=exc.details) from None


def lineage(ctx: StageContext, model) -> list[dict]:
    """base model -> each earlier phase (a run directory named by model.base) -> this run, each run with
    its recipe hash; the model card and `adaptctl runs show` print it."""
    from adaptctl.core.rundir import phase_entry, run_lineage

    if model.source.startswith("run:"):
        chain = [dict(entry) for entry in run_lineage(model.run)]
        chain[-1]["model_stage"] = model.source.removeprefix("run:")
    else:
        chain = [{"model": ctx.recipe.model.base}]
    text = resolved_recipe_text(ctx.recipe)
    return chain + [phase_entry(ctx.run.root, ctx.recipe.model_dump(mode="json"), text)]


def _keep_teacher_logits(ctx: StageContext, out: Path, tmp: Path, key: str):
    """distill's teacher-logit cache lives beside the prepared data: re-preparing the same data keeps it."""
    kept = out / TEACHER_LOGITS
    if kept.is_dir() and (ctx.previous or {}).get("cache_key") == key:
        shutil.copytree(kept, tmp / TEACHER_LOGITS, copy_function=_link_or_copy)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)  # safe here: the folder linked from is the run's own, and it is replaced
    except OSError:
        shutil.copy2(src, dst)


def _code_hash(task: str, retrieves: bool = False) -> str:
    """The code that shapes prepared data: a changed tokenizer function must not reuse an old cache."""
    import importlib
    from importlib.metadata import version

    from adaptctl.data import aligned, columns, conll, readers, splits

    modules = [aligned, columns, conll, readers, splits, importlib.import_module(__name__), importlib.import_module(TASK_MODULES[task])]
    if retrieves:  # the passages in the prompt, the corpus read, the index searched
        modules += [importlib.import_module(f"adaptctl.retrieval.{name}") for name in ("rows", "corpus", "index")]
    # Jinja renders `{{ }}` templates: another version may render the same template differently
    return json_hash([file_hash(Path(m.__file__)) for m in modules] + [f"jinja2 {version('jinja2')}"])  # type: ignore[arg-type]  # modules from files


def _pii_code() -> str:
    """data.pii's detector: its module and the Presidio and phonenumbers versions that find the spans."""
    from importlib.metadata import version

    from adaptctl.data import pii

    return json_hash([file_hash(Path(pii.__file__)), version("presidio-analyzer"), version("phonenumbers")])


def _tokenizer_hash(model_path: Path) -> str:
    files = [model_path / n for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")]
    return json_hash([file_hash(f) for f in files if f.exists()])


# ---------------------------------------------------------------- the work
def _prepare_into(folder: Path, ctx: StageContext, model_path: Path):
    from datasets import DatasetDict
    from transformers import AutoTokenizer

    from adaptctl.data.plots import length_plot
    recipe, task = ctx.recipe, get_task(ctx.recipe.task)
    retrieval = _open_retrieval(ctx, task)
    splits, dropped, read, pii = _read_splits(ctx, task, retrieval.retriever if retrieval else None)
    if recipe.evaluate.canaries:
        splits["train"] = _plant_canaries(folder, splits["train"], recipe, task)
    label2id = _label_map(splits, task.labels_of) if task.has_label_map else {}
    from adaptctl.models.loading import tokenizer_options

    tokenizer = AutoTokenizer.from_pretrained(model_path, **tokenizer_options(recipe))
    vocabulary = _extend_vocabulary(folder, recipe, tokenizer, splits) if recipe.model.add_tokens else None
    console.info(f"prepare: tokenizing {', '.join(f'{k} {len(v)}' for k, v in splits.items())} rows")
    tokenized = DatasetDict({name: task.tokenize(ds, tokenizer, recipe, label2id) for name, ds in splits.items()})
    stats = _stats(tokenized, dropped, label2id, recipe.data.max_length, task.labels_of)
    if vocabulary:
        stats["vocabulary"] = vocabulary
    for name, split in tokenized.items():
        stats["splits"][name].update(task.split_stats(split, recipe))  # causal-lm packing: blocks, documents
    _report_packing(stats)
    stats["read"] = read
    if pii is not None:
        stats["pii"] = pii
    for name, split in stats["splits"].items():
        if split["truncated"]:
            _report_long_rows(recipe, task, name, split)
    stats["unknown_token_fraction"] = _unknown_fraction(tokenized, tokenizer)
    # what the model is taught to write: a seq2seq target's tokens are not among the inputs (a translation's
    # target language may be the one the vocabulary lacks)
    stats["unknown_token_fraction_targets"] = _unknown_fraction(tokenized, tokenizer, "labels")
    _report_unknown_tokens({"tokens": stats["unknown_token_fraction"],
                            "target tokens": stats["unknown_token_fraction_targets"]}, tokenizer, model_path)
    tokenized.save_to_disk(str(folder / "data"))
    if retrieval:
        from adaptctl.retrieval.prepared import write_folder

        write_folder(folder / RETRIEVAL_FOLDER, retrieval, recipe.data.retrieval)
    write_text(folder / "labels.json", json.dumps({"label2id": label2id}, indent=2))
    write_text(folder / "stats.json", json.dumps(stats, indent=2))
    length_plot(tokenized, folder / "lengths.png", recipe.data.max_length)


def _plant_canaries(folder: Path, train, recipe, task):
    """evaluate.canaries: random secrets added to the training split only (evaluation/canaries.py), kept in
    prepare/canaries.json for evaluate to measure."""
    from datasets import Dataset, concatenate_datasets

    from adaptctl.evaluation import canaries

    planted = canaries.plant(recipe.evaluate.canaries, recipe.evaluate.canary_copies or 1, recipe.seed)
    rows = [task.canary_row(recipe.data, planted["prefix"], s) for s in planted["secrets"] for _ in range(planted["copies"])]
    blank = {name: "" if feature.dtype == "string" else None for name, feature in train.features.items()
             if hasattr(feature, "dtype")}
    added = Dataset.from_list([{**blank, **row} for row in rows], features=train.features)
    write_text(folder / canaries.FILE, json.dumps(planted, indent=2))
    console.info(f"prepare: evaluate.canaries: {len(planted['secrets'])} canaries planted {planted['copies']} "
                 f"time(s) each among {len(train)} training rows")
    return concatenate_datasets([train, added])


def _open_retrieval(ctx: StageContext, task):
    """The corpus's retriever (retrieval/prepared.py) where prepare retrieves passages into the prompt, else None."""
    if ctx.recipe.data.retrieval is None or task.retrieval_use(ctx.recipe.data) != "prompt":
        return None
    from adaptctl.retrieval.prepared import open_retriever

    return open_retriever(ctx.recipe.data.retrieval, ctx.recipe_dir, ctx.where)


def _extend_vocabulary(folder: Path, recipe, tokenizer, splits: dict) -> dict:
    """model.add_tokens: the words added to the tokenizer (saved in prepare/tokenizer/ for every later
    stage), with the fertility (tokens per word) of all the text before and after."""
    from adaptctl.data import vocabulary

    if not tokenizer.is_fast:
        raise UserError("model.add_tokens: mining and adding words needs a fast tokenizer (tokenizer.json)",
                        hint="use a model folder with tokenizer.json, or remove model.add_tokens")
    texts = [value for ds in splits.values() for name, feature in ds.features.items()
             if getattr(feature, "dtype", None) == "string" for value in ds[name] if value]
    asked = recipe.model.add_tokens
    words = [w.strip() for w in asked if w.strip()] if isinstance(asked, list) else \
        vocabulary.mine([t for t in splits["train"]["text"]] if "text" in splits["train"].column_names else texts,
                        tokenizer, asked.from_data)
    before = vocabulary.fertility(texts, tokenizer)
    added = vocabulary.extend(tokenizer, words)
    after = vocabulary.fertility(texts, tokenizer)
    console.info(f"prepare: model.add_tokens: {len(added)} words added ({', '.join(list(added)[:8])}"
                 f"{', ...' if len(added) > 8 else ''}); tokens per word {before} -> {after}")
    return vocabulary.write(folder, tokenizer, added, before, after)


def _report_packing(stats: dict):
    for name, split in stats["splits"].items():
        if packed := split.get("packing"):
            console.info(f"prepare: {name}: {packed['documents']} documents packed into {packed['blocks']} blocks of "
                         f"{packed['block_length']} tokens ({packed['tail_dropped']} tail tokens dropped)")


# More unknown tokens than this means the tokenizer does not fit the data (or its vocabulary is
# missing): the model would learn from [UNK]s.  Ordinary text with a fitting tokenizer has well under 1%.
UNKNOWN_TOKEN_WARNING = 0.05


def _unknown_fraction(tokenized, tokenizer, column: str = "input_ids") -> float | None:
    """The share of the unknown token among the tokens of `column` in every split (labels: the target
    tokens, not the -100 of positions without one); None where the tokenizer has no unknown token (as
    byte-level BPE tokenizers do) or no split has that column of token ids."""
    from adaptctl.data import columnar

    unk = tokenizer.unk_token_id
    if unk is None:
        return None
    unknown = total = 0
    for ds in tokenized.values():
        if column in ds.column_names and len(ds) and isinstance(ds[0][column], list):
            hits, items = columnar.count_in_lists(ds, column, unk, ignore=-100)
            unknown, total = unknown + hits, total + items
    return round(unknown / total, 6) if total else None


def _report_unknown_tokens(fractions: dict, tokenizer, model_path: Path):
    for where, fraction in fractions.items():
        if fraction is not None and fraction > UNKNOWN_TOKEN_WARNING:
            console.warn(f"prepare: {fraction:.0%} of the {where} are the unknown token {tokenizer.unk_token}: the "
                         f"tokenizer of {model_path} does not fit this data (a wrong or incomplete vocabulary?)")


def _report_long_rows(recipe, task, name: str, split: dict):
    if task.long_rows is not None:  # a task that cuts nothing says what it does instead (extractive-qa: windows)
        console.info(task.long_rows(recipe, name, split))
        return
    length = f"data.max_length={recipe.data.max_length} tokens"
    console.warn(f"prepare: {split['truncated']} of {split['rows']} {name} rows were truncated to {length}")


def _read_splits(ctx: StageContext, task, retriever=None) -> tuple[dict, dict, dict, dict | None]:
    from adaptctl.data.readers import read_table

    data, recipe = ctx.recipe.data, ctx.recipe
    raw = {"train": read_table(data.source, ctx.recipe_dir)}
    for name in ("validation", "test"):
        if getattr(data, name) is not None:
            raw[name] = read_table(getattr(data, name), ctx.recipe_dir)
    dropped, mapped, read, raft = {}, {}, {}, None
    tally = _pii_tally(recipe)
    for name, table in raw.items():
        source = getattr(data, "source" if name == "train" else name)
        source = table.name if source.columns else source.path  # line-aligned files: name each of them
        read[name] = _read_counts(table, source)
        table.ds = _flat_squad(table.ds, source)
        table.ds = _with_slices(table.ds, ctx, source)
        if tally is not None:
            table.ds = _scan_pii(table, task, recipe, tally)
        table.ds = _with_source_rows(table.ds)  # after the PII scan: a redacted column passes through redacted
        views = _retrieved(ctx, table, retriever)
        table.ds = views.shown if views else table.ds
        mapped[name], dropped[name] = _canonical(table, task, recipe, source)
        mapped[name] = _mask_secrets(mapped[name], source)
        if name == "train" and views and views.raft is not None:  # RAFT's view of the same rows, for training
            table.ds = views.raft
            raft = _mask_secrets(_canonical(table, task, recipe, source)[0], source)
        for reason, count in dropped[name].items():
            if count:  # counted in stats.json, and said: data that disappears silently is a trap
                console.warn(f"prepare: {count} rows of {source} dropped ({reason.replace('_', ' ')})")
    splits = _limit(_split_missing(mapped, recipe, task), data, data_seed(recipe))
    if raft is not None:
        from adaptctl.retrieval.rows import swap_in

        splits["train"] = swap_in(splits["train"], raft)
    return splits, dropped, read, tally and data.pii and tally.document(data.pii.action)  # a tally exists with data.pii


def _pii_tally(recipe):
    from adaptctl.data.pii import Tally

    return Tally(tuple(recipe.data.pii.detect)) if recipe.data.pii else None


def _scan_pii(table, task, recipe, tally):
    """data.pii: the personal data in the columns the templates read, counted into `tally`; the table
    returned with every span redacted (action redact), or the first rows refused at their file:line."""
    from adaptctl.data import pii

    ds, settings, kinds = table.ds, recipe.data.pii, tuple(recipe.data.pii.detect)
    columns = _input_columns(task, recipe, ds.column_names)
    refused, redacted = [], {c: [] for c in columns}
    for index, row in enumerate(ds.select_columns(columns)):
        holds = False
        for column in columns:
            value = row[column]
            texts = list(pii.strings(value))
            spans_of = [pii.find(text, kinds) for text in texts]
            for text, spans in zip(texts, spans_of):
                tally.add(column, text, spans)
                if spans and settings.action == "refuse":
                    refused.append(f"{table.where(index)}: {column}: {', '.join(sorted({s.kind for s in spans}))}")
            holds = holds or any(spans_of)
            if settings.action == "redact":
                redacted[column].append(pii.redact(value, spans_of[0]) if isinstance(value, str)
                                        else pii.redacted_cell(value, kinds))
        tally.rows += holds
        if len(refused) >= 5:
            break
    if refused:
        raise UserError(f"{refused[0]}: personal data (data.pii.action: refuse)", details=refused[1:],
                        hint="remove or fix those rows, or set data.pii.action: redact (or report)")
    found = ", ".join(f"{n} {kind}" for kind, n in tally.counts.items() if n) or "nothing"
    console.info(f"prepare: data.pii: {found} so far, in {tally.rows} rows (columns {', '.join(columns)} of {table.name})")
    if settings.action != "redact":
        return ds
    for column in columns:
        feature = ds.features[column]
        ds = ds.remove_columns(column).add_column(column, redacted[column], feature=feature)
    return ds


def _input_columns(task, recipe, columns: list[str]) -> list[str]:
    """The file's columns that the task's templates read, the label's aside: what reaches the model as text."""
    from adaptctl.data.columns import template_columns

    templates = task.templates(recipe.data, columns)
    return sorted({c for key, t in templates.items() if key != "label" and t for c in template_columns(t, columns)}
                  & set(columns))


def _retrieved(ctx: StageContext, table, retriever):
    """data.retrieval: the rows with their passages (and RAFT's training view), retrieval/rows.py."""
    if retriever is None:
        return None
    from adaptctl.retrieval.rows import views

    assert ctx.recipe.data.prompt is not None  # a retriever is opened for passages into data.prompt
    return views(table.ds, table, retriever, ctx.recipe.data.retrieval, ctx.recipe.data.prompt,
                 data_seed(ctx.recipe), ctx.where)


def _flat_squad(ds, source: str):
    """SQuAD's nested JSON (one row per article) as one row per question, for every task (data/squad.py)."""
    from adaptctl.data import squad

    if not squad.is_nested(ds.column_names):
        return ds
    flat = squad.flatten(ds)
    console.info(f"prepare: {source} is SQuAD-style JSON: {len(ds)} articles read as {len(flat)} questions "
                 "(columns id, title, question, context, answers, answer1...)")
    return flat


def _with_slices(ds, ctx: StageContext, source: str):
    """The evaluate.slices templates, and data.splits.group, rendered into slice columns, which the task's
    mapping passes through (data/columns.py SLICE_PREFIX).  A column that the file lacks is refused at its
    recipe line."""
    from adaptctl.data.columns import column_problems

    fields: dict[tuple, str] = {("evaluate", "slices", i): t for i, t in enumerate(ctx.recipe.evaluate.slices)}
    if ctx.recipe.data.splits.group:
        fields[("data", "splits", "group")] = ctx.recipe.data.splits.group
    if not fields:
        return ds
    for field, message, hint in column_problems(fields, ds.column_names, source)[:1]:
        raise UserError(f"{ctx.where(field)}: {message}", hint=hint)
    templates = set(fields.values())

    def render_slices(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return {slice_column(t): [render(t, row).strip() or "(empty)" for row in rows] for t in templates}

    return ds.map(render_slices, batched=True, desc="slice columns")


def _with_source_rows(ds):
    """Each row's own columns as JSON text (data/passthrough.py), carried to evaluate/predictions.jsonl so
    that its rows keep the user's `id` and columns."""
    from adaptctl.data.passthrough import SOURCE_ROW, source_rows

    return ds.map(lambda batch: {SOURCE_ROW: source_rows(batch)}, batched=True, desc="source rows")


def _read_counts(table, source: str) -> dict:
    """Rows read against data lines (csv/tsv): a quoted field that spans lines makes them differ."""
    rows = table.ds.num_rows
    if table.lines is None:
        console.info(f"prepare: read {rows} rows from {source}")
    else:
        console.info(f"prepare: read {rows} rows from {table.lines} data lines of {source}")
    return {"rows": rows, "lines": table.lines}


def _mask_secrets(ds, source: str):
    """A secret's value in the data is masked (same length, so character offsets hold) before it is
    tokenized, stored, trained on or written into predictions."""
    from datasets import Value

    if not redact.secret_values():
        return ds
    columns = [name for name, feature in ds.features.items() if feature == Value("string")]

    def holds_secret(batch):
        return [any(redact.mask(v or "") != (v or "") for v in values) for values in zip(*(batch[c] for c in columns))]

    found = ds.filter(holds_secret, batched=True, desc="find secrets")
    if len(found) == 0:
        return ds
    console.warn(f"prepare: {len(found)} rows of {source} hold the value of a secret variable; it is masked with *")
    return ds.map(lambda batch: {c: [redact.mask(v) if v is not None else None for v in batch[c]] for c in columns},
                  batched=True, desc="mask secrets")


def _canonical(table, task, recipe, source: str):
    """Rows with the task's canonical columns; empty inputs dropped and counted."""
    templates = {k: v for k, v in task.templates(recipe.data, table.ds.column_names).items() if v is not None}
    try:
        return _map_columns(table, task, recipe, source, templates)
    except TemplateRowError as err:  # raised inside a batch, which knows no row: find it now, on this error path
        raise _located(err, table, templates) from None
    except RowError as err:  # a row the task cannot read, by its index: its file and line
        raise UserError(f"{table.where(err.index)}: {err.message}", hint=err.hint) from None


def _map_columns(table, task, recipe, source: str, templates: dict):
    ds = table.ds
    if task.canonicalize is not None:
        return task.canonicalize(ds, recipe, source)
    check_columns(templates, ds.column_names, source)

    def to_canonical(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return {col: [render(t, row).strip() if col == "label" else render(t, row) for row in rows]
                for col, t in templates.items()}

    from datasets import Features, Value

    # Explicit string features: datasets would otherwise keep an input column's type (int labels stay int).
    kept = [c for c in ds.column_names if c not in without_slices(ds.column_names)]
    features = Features({col: Value("string") for col in [*templates, *kept]})
    ds = ds.map(to_canonical, batched=True, remove_columns=without_slices(ds.column_names), features=features,
                desc="map columns")
    if "label" in templates:
        _check_labels(ds, table, templates["label"])
    before = len(ds)
    ds = ds.filter(lambda batch: [all(str(v).strip() for v in values) for values in zip(*(batch[c] for c in templates))],
                   batched=True, desc="drop empty")
    if len(ds) == 0:
        raise UserError(f"{source}: every row has an empty {' or '.join(templates)}",
                        hint="check data.* templates against the file's columns")
    return ds, {"empty": before - len(ds)}


def _located(err: TemplateRowError, table, templates: dict) -> UserError:
    """The error at `file:line` of the first row the template fails on, and the data.* field it is."""
    field = next((f"data.{key}: " for key, t in templates.items() if t == err.template), "")
    for index, row in enumerate(table.ds):
        try:
            render(err.template, row)
        except TemplateRowError as first:
            return UserError(f"{table.where(index)}: {field}{first.message}", hint=first.hint)
    return UserError(f"{table.name}: {field}{err.message}", hint=err.hint)


# Spellings of a missing value that writers put in files (pandas, JSON, SQL dumps).  "none" and "NA"
# are not among them: they are real class names (no toxicity, North America).
_MISSING_LABELS = ("", "nan", "null")


def _check_labels(ds, table, template: str):
    """Refuse labels that are missing, or a mix of numbers and names.  Labels are compared as text, so
    1 and "1" are one class; "1" beside "spam" is almost always a column mix-up, not a third class.
    Judged on the distinct labels and their counts (Arrow), so a million rows cost no more than a few."""
    from adaptctl.data import columnar

    column = f"data.label ({template!r})"
    counts = columnar.counts(ds, "label")
    missing = [label for label in counts if label.lower() in _MISSING_LABELS]
    if missing:
        i = columnar.first_index(ds, "label", missing)
        shown = "no value" if not ds[i]["label"] else repr(ds[i]["label"])
        raise UserError(f"{table.where(i)}: {column} is missing ({shown})",
                        hint="drop those rows, or fill in their label")
    numbers = [label for label in counts if label.lstrip("-").isdigit()]
    names = [label for label in counts if label not in set(numbers)]
    if numbers and names:
        in_numbers, in_names = sum(counts[n] for n in numbers), sum(counts[n] for n in names)
        odd, others = (numbers, names) if in_numbers <= in_names else (names, numbers)  # point at the rarer kind
        i, other = columnar.first_index(ds, "label", odd), columnar.first_index(ds, "label", others)
        raise UserError(f"{table.where(i)}: {column} is {ds[i]['label']!r}, while other rows have "
                        f"{'names' if odd is numbers else 'numbers'} (such as {ds[other]['label']!r})",
                        hint="make every label a class name, or every label a number")


def _split_missing(mapped: dict, recipe, task=None) -> dict:
    import numpy as np

    from adaptctl.data import columnar

    ratios = recipe.data.splits
    want = {"validation": 0.0 if "validation" in mapped else ratios.validation,
            "test": 0.0 if "test" in mapped else ratios.test}
    train = mapped["train"]
    # stratified by the row's label where a row has one (classification), not a list of them (one per word)
    one_label = task.has_label_map and getattr(train.features.get("label"), "dtype", None) == "string"
    strata = columnar.sorted_codes(train, "label") if one_label and ratios.stratify else None
    if ratios.group:  # the recipe's groups: rows with one value stay in one split
        groups = columnar.column(train, slice_column(ratios.group)).to_pylist()
        parts = group_split_indices(groups, want["validation"], want["test"], data_seed(recipe))
    elif task.split_indices is not None:  # a task that must keep groups together (extractive-qa: one context)
        parts = task.split_indices(train, want["validation"], want["test"], data_seed(recipe))
    else:
        parts = split_indices(len(train), want["validation"], want["test"], data_seed(recipe), strata)
    splits = {name: train.select(np.sort(idx)) for name, idx in parts.items() if len(idx)}
    splits.update({k: v for k, v in mapped.items() if k != "train"})
    return {name: splits[name] for name in SPLITS if name in splits}


def _limit(splits: dict, data, seed: int) -> dict:
    if data.max_train_samples and len(splits["train"]) > data.max_train_samples:
        splits["train"] = splits["train"].shuffle(seed=seed).select(range(data.max_train_samples))
    for name in ("validation", "test"):
        if name in splits and data.max_eval_samples and len(splits[name]) > data.max_eval_samples:
            splits[name] = splits[name].shuffle(seed=seed).select(range(data.max_eval_samples))
    return splits


def _label_counts(ds, label2id: dict, labels_of) -> dict:
    """How many times each label of the map occurs in the split."""
    found = label_counts(ds, labels_of)
    return {label: found.get(label, 0) for label in label2id}


def _labels(split, labels_of) -> set:
    """Every label the split's rows hold."""
    return set(label_counts(split, labels_of))


def _label_map(splits: dict, labels_of) -> dict:
    train_labels = _labels(splits["train"], labels_of)
    if len(train_labels) < 2:
        raise UserError(f"data.label: the training split has a single class ({', '.join(train_labels)})",
                        hint="a classifier needs at least two classes; check the data's labels")
    for name in ("validation", "test"):
        unseen = sorted(_labels(splits[name], labels_of) - train_labels) if name in splits else []
        if unseen:
            raise UserError(f"data.label: {name} has labels that train never has: {', '.join(unseen[:10])}",
                            hint="make every class appear in training, or fix the labels")
    ordered = sorted(train_labels, key=lambda x: (0, int(x)) if x.lstrip("-").isdigit() else (1, x))
    return {name: i for i, name in enumerate(ordered)}


# ------------------------------------------------------------------ stats
def _stats(tokenized, dropped: dict, label2id: dict, max_length: int, labels_of=None) -> dict:
    import numpy as np

    from adaptctl.data import columnar

    stats: dict[str, Any] = {"splits": {}, "labels": list(label2id), "label_counts": {}, "dropped": dropped, "max_length": max_length}
    for name, ds in tokenized.items():
        lengths = columnar.numbers(ds, "num_tokens") if len(ds) else np.zeros(1)
        stats["splits"][name] = {
            "rows": len(ds), "tokens": int(lengths.sum()), "truncated": columnar.total(ds, "truncated"),
            "length_percentiles": {f"p{p}": int(np.percentile(lengths, p)) for p in PERCENTILES},
        }
        if "trained_tokens" in ds.column_names:  # conversations: what the loss covers, and what it does not
            trained = columnar.total(ds, "trained_tokens")
            stats["splits"][name].update(turns=columnar.total(ds, "turns"), trained_tokens=trained,
                                         untrained_tokens=int(lengths.sum()) - trained)
        if label2id:
            stats["label_counts"][name] = _label_counts(ds, label2id, labels_of)
    return stats
