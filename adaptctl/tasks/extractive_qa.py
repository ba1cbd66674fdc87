"""Extractive question answering (SQuAD-style spans), AutoModelForQuestionAnswering.

Rows.  Canonical columns are `id`, `question`, `context` and `answers`
({"text": [...], "answer_start": [...]}, character offsets into the context).
`canonicalize` accepts flat rows whose columns are named by data.question /
data.context / data.answers (answers as that dict, or a list of
{text, answer_start}); the nested SQuAD v1.1 JSON read with
`source.field: data` arrives flattened to such rows (data/squad.py).  An answer that is not where its
answer_start says is a user error naming the file and the question id; rows
with an empty question or context, or with no answer (SQuAD v2 "impossible"
questions: this task predicts a span for every question), are dropped and
counted.

Splits.  Questions about the same paragraph share it, so a random split by
question would put a test question's context, and often its answer, in the
training set.  `split_indices` splits whole contexts instead (with the
recipe's seed and ratios, over the distinct contexts), so the held-out
fractions hold in contexts and only approximately in questions.

Features.  A long context becomes several windows of data.max_length tokens
that overlap by data.stride (the Hugging Face recipe), so nothing is cut: an
example is counted as `truncated` (on its first window) when it needed more
than one.  Every feature keeps what evaluation needs, repeated per window:
`example_index` (the row in its split), `id`, `question`, `context`, the gold
answer texts, and `offset_mapping` (None outside the context).  Every split
also carries start/end positions (the CLS token where the answer is outside
the window) so the Trainer can report a validation loss.

Evaluation.  The best span per example over all its windows: the n-best start
and end logits, spans inside the context and at most MAX_ANSWER_TOKENS long,
scored by start + end logit; then SQuAD exact match and token F1.
"""

from __future__ import annotations

from adaptctl.core import console
from adaptctl.data.columns import slice_columns
from adaptctl.data.tokens import ENCODER_INPUTS
from adaptctl.core.errors import UserError
from adaptctl.tasks.spec import TaskSpec

COLUMNS = ("id", "question", "context", "answers")   # the canonical rows
MAX_ANSWER_TOKENS = 30   # as the SQuAD reference implementations
N_BEST = 20              # start/end candidates per window
METRICS = ("exact_match", "f1")


def templates(data, columns=()) -> dict:
    """The columns canonicalize reads."""
    return {"question": data.question, "context": data.context, "answers": data.answers}


# ------------------------------------------------------------------ rows
def canonicalize(ds, recipe, source: str):
    """(Dataset with COLUMNS, {reason: rows dropped})."""
    from datasets import Dataset, Features, Sequence, Value

    rows = list(_flat_rows(ds, recipe, source))
    kept, dropped = [], {"empty": 0, "no_answer": 0}
    for row in rows:
        if not row["question"] or not row["context"].strip():
            dropped["empty"] += 1
        elif not row["answers"]["text"]:
            dropped["no_answer"] += 1
        else:
            _check_answers(row, source)
            kept.append(row)
    if not kept:
        raise UserError(f"{source}: no row has a question, a context and an answer",
                        hint=f"check data.question, data.context and data.answers against the file ({len(rows)} rows read)")
    if dropped["no_answer"]:
        console.warn(f"prepare: {dropped['no_answer']} questions in {source} have no answer and were dropped "
                     "(extractive-qa predicts a span for every question)")
    features = Features({"id": Value("string"), "question": Value("string"), "context": Value("string"),
                         "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int64"))},
                         **{c: Value("string") for c in slice_columns(ds.column_names)}})
    return Dataset.from_list(kept, features=features), dropped


def _flat_rows(ds, recipe, source: str):
    from adaptctl.data.columns import check_columns

    data = recipe.data
    names = {"question": data.question, "context": data.context, "answers": data.answers}
    # bare column names only: a template would make answer offsets meaningless
    missing = {key: name for key, name in names.items() if name not in ds.column_names}
    if missing:
        check_columns(missing, ds.column_names, source)  # raises, listing the columns there are
    has_id, slices = "id" in ds.column_names, slice_columns(ds.column_names)
    for n, row in enumerate(ds):
        yield {"id": str(row["id"]) if has_id and row["id"] is not None else str(n),
               "question": (row[data.question] or "").strip(), "context": row[data.context] or "",
               "answers": _answers(row[data.answers], source), **{c: row[c] for c in slices}}


def _answers(value, source: str = "") -> dict:
    """{"text": [...], "answer_start": [...]} from that dict, a list of such records, or scalars."""
    if isinstance(value, str):  # csv/tsv: the answers cell holds JSON
        value = _json_cell(value, source)
    if not value:
        return {"text": [], "answer_start": []}
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
        texts = texts if isinstance(texts, list) else [texts]
        starts = starts if isinstance(starts, list) else [starts]
        pairs = list(zip(texts, starts))
    else:
        pairs = [(a.get("text"), a.get("answer_start")) for a in value]
    pairs = [(t, s) for t, s in pairs if t]
    return {"text": [t for t, _ in pairs], "answer_start": [s for _, s in pairs]}


def _json_cell(text: str, source: str):
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"{source}: data.answers: {text[:60]!r} is not SQuAD-style answers",
                        hint='in csv/tsv write the answers cell as JSON: {"text": ["..."], "answer_start": [0]}') from None


def _check_answers(row: dict, source: str):
    context = row["context"]
    for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
        if start is None or not isinstance(start, int) or context[start:start + len(text)] != text:
            found = context.find(text)
            where = (f"it occurs at character {found}" if found >= 0 else "the text does not occur in the context")
            raise UserError(f"{source}: question {row['id']}: answer {text!r} is not at answer_start {start} "
                            f"of its context ({where})",
                            hint="answer_start is the 0-based character offset of the answer text in context; "
                                 "fix the offset or the text")


# ---------------------------------------------------------------- splits
def split_indices(ds, validation: float, test: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split, keeping every question about one context in the same split."""
    from adaptctl.data.splits import group_split_indices

    return group_split_indices(ds["context"], validation, test, seed)


# ------------------------------------------------------------- tokenize
def tokenize(dataset, tokenizer, recipe, label2id: dict):
    from collections import Counter

    data = recipe.data
    if not getattr(tokenizer, "is_fast", True):
        raise UserError(f"extractive-qa needs a fast tokenizer (character offsets); {recipe.model.base} has none",
                        hint="use a model whose folder has tokenizer.json")
    _check_window_room(dataset, tokenizer, data)
    cls_id = tokenizer.cls_token_id
    slices = slice_columns(dataset.column_names)  # every window of a question keeps its slice values

    def encode(batch, indices):
        enc = tokenizer(batch["question"], batch["context"], truncation="only_second", max_length=data.max_length,
                        stride=data.stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                        padding=False)
        sample_of = enc["overflow_to_sample_mapping"]
        out = {key: enc[key] for key in ENCODER_INPUTS if key in enc}
        keep = {"start_positions": [], "end_positions": [], "offset_mapping": [], "example_index": [], "id": [],
                "question": [], "context": [], "answers": [], "num_tokens": [], "truncated": []}
        windows = Counter(sample_of)
        keep.update({c: [] for c in slices})
        for i, s in enumerate(sample_of):
            offsets = [o if seq == 1 else None for o, seq in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
            ids = enc["input_ids"][i]
            start, end = _positions(offsets, batch["answers"][s], ids.index(cls_id) if cls_id in ids else 0)
            first = i == 0 or sample_of[i - 1] != s
            for key, value in (("start_positions", start), ("end_positions", end), ("offset_mapping", offsets),
                               ("example_index", indices[s]), ("id", batch["id"][s]),
                               ("question", batch["question"][s]), ("context", batch["context"][s]),
                               ("answers", batch["answers"][s]["text"]), ("num_tokens", len(ids)),
                               ("truncated", first and windows[s] > 1), *((c, batch[c][s]) for c in slices)):
                keep[key].append(value)
        return {**out, **keep}

    features = dataset.map(encode, batched=True, batch_size=1000, with_indices=True,
                           remove_columns=dataset.column_names, desc="tokenize")
    split = sum(features["truncated"])
    if split:
        console.info(f"prepare: {split} of {len(dataset)} questions have contexts longer than data.max_length="
                     f"{data.max_length}; split into {len(features)} overlapping windows (stride {data.stride}), "
                     "nothing dropped")
    return features


def _positions(offsets: list, answers: dict, cls_index: int) -> tuple[int, int]:
    """Token start/end of the first gold answer, or (cls, cls) when this window does not hold it."""
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    inside = [i for i, o in enumerate(offsets) if o is not None]
    first, last = inside[0], inside[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def _check_window_room(dataset, tokenizer, data):
    """The fast tokenizer panics (not even an Exception) when the question leaves no room for the stride.

    stride < max_length is a recipe rule that `adaptctl validate` checks; the room a question leaves needs the data.
    """
    if len(dataset) == 0:
        return
    special = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(list(dataset["question"]), add_special_tokens=False)["input_ids"]]
    worst = max(range(len(lengths)), key=lengths.__getitem__)
    room = data.max_length - special - lengths[worst]
    if room <= data.stride:
        raise UserError(f"question {dataset['id'][worst]} is {lengths[worst]} tokens long, which leaves {room} context "
                        f"tokens per window of data.max_length={data.max_length}: not more than data.stride={data.stride}",
                        hint="raise data.max_length or lower data.stride")


# ------------------------------------------------------------- training
def collator(tokenizer, recipe):
    from transformers import DataCollatorWithPadding

    tokenizer.padding_side = "right"  # logits index the same positions as the stored offset mappings
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


# ------------------------------------------------------------- evaluate
def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """Best span per example over its windows; SQuAD exact match and F1 (percent)."""
    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.inference import run_batches
    from adaptctl.evaluation.metrics import squad_metrics

    rows = split.select_columns([c for c in ENCODER_INPUTS if c in split.column_names]).to_list()

    def forward(batch):
        out = model(**batch)
        lengths = batch["attention_mask"].sum(-1).tolist()
        return [(s[:n].float().tolist(), e[:n].float().tolist())
                for s, e, n in zip(out.start_logits, out.end_logits, lengths)]

    logits, speed = run_batches(rows, collator(tokenizer, recipe), forward, recipe.evaluate.batch_size,
                                recipe.train.precision, model=model)
    meta = split.select_columns(["example_index", "offset_mapping", "context"]).to_list()
    best = best_spans(meta, [s for s, _ in logits], [e for _, e in logits])
    examples: dict = {}
    for row in split.select_columns(["example_index", "id", "question", "answers"]).to_list():
        examples.setdefault(row["example_index"], row)
    predictions, golds = [], []
    for index, example in examples.items():
        text = best.get(index, ("", None))[0]
        predictions.append(text)
        golds.append(example["answers"])
    metrics = squad_metrics(predictions, golds)
    rows_out = []
    for example, text in zip(examples.values(), predictions):
        one = squad_metrics([text], [example["answers"]])
        rows_out.append({"id": example["id"], "input": example["question"], "reference": example["answers"],
                         "prediction": text, "score": round(one["f1"] / 100, 6),
                         "exact_match": one["exact_match"] == 100})
    per_example = speed * len(examples) / len(rows) if speed else None  # run_batches counts windows
    return EvalResult(metrics=metrics, predictions=rows_out, examples_per_second=per_example)


def best_spans(features: list[dict], start_logits: list, end_logits: list, n_best: int = N_BEST,
               max_answer_tokens: int = MAX_ANSWER_TOKENS) -> dict:
    """example_index -> (answer text, start + end logit) of the best span over that example's windows."""
    import numpy as np

    best: dict = {}
    for feature, start_scores, end_scores in zip(features, start_logits, end_logits):
        offsets, index = feature["offset_mapping"], feature["example_index"]
        start_scores, end_scores = np.asarray(start_scores), np.asarray(end_scores)
        starts = np.argsort(start_scores)[::-1][:n_best]
        ends = np.argsort(end_scores)[::-1][:n_best]
        for s in starts:
            for e in ends:
                if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                    continue  # the question, a special token or padding
                if e < s or e - s + 1 > max_answer_tokens:
                    continue
                score = float(start_scores[s] + end_scores[e])
                if index not in best or score > best[index][1]:
                    best[index] = (feature["context"][offsets[s][0]:offsets[e][1]], score)
    return best


def window_problems(recipe, method) -> list:
    """Long contexts are read in windows of max_length that overlap by stride; the fast tokenizer
    panics (not even an Exception) when the overlap is not below the window."""
    data = recipe.data
    if data.stride < data.max_length:
        return []
    field = "stride" if "stride" in data.model_fields_set else "max_length"  # point at what the user wrote
    return [(("data", field), f"data.stride ({data.stride}) must be below data.max_length ({data.max_length})",
             "a stride of about a third of max_length is usual, e.g. max_length 384, stride 128")]


def long_rows(recipe, name: str, split: dict) -> str:
    """prepare's line on long inputs: nothing is cut, a long context becomes overlapping windows."""
    return (f"prepare: {split['truncated']} {name} questions have a context longer than data.max_length="
            f"{recipe.data.max_length} tokens; it is read in overlapping windows (data.stride={recipe.data.stride}), "
            f"{split['rows']} in all")


SPEC = TaskSpec(
    name="extractive-qa", summary="SQuAD-style question answering: the answer is a span of the context", redacts=False,
    auto_class="AutoModelForQuestionAnswering", peft_task_type="QUESTION_ANS", pipeline_tag="question-answering",
    label_names=("start_positions", "end_positions"),
    output_names=("start_logits", "end_logits"), per_example_loss=True, generates=False, has_label_map=False,
    templates=templates, canonicalize=canonicalize, tokenize=tokenize, collator=collator, evaluate=evaluate,
    predict=None, data_problems=lambda data: [], metrics=METRICS, head_names=("qa_outputs",),
    input_field=lambda data: "question", fresh_head=lambda path: True,
    starter={"model": "sentence-transformers/all-MiniLM-L6-v2",
             "data": {"source": "data/train.json", "question": "question", "context": "context",
                      "answers": "answers", "max_length": 384, "stride": 128}},
    structured_fields=("answers",),  # SQuAD-style records ({text, answer_start}), never rendered as text
    export_formats=("onnx",), recipe_problems=window_problems, split_indices=split_indices, long_rows=long_rows,
)
