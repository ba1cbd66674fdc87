"""Token classification (named-entity recognition): a tag for every word, AutoModelForTokenClassification.

Rows.  A row is a sentence: `data.tokens` names the column of its words and `data.tags` the column of their
tags, two lists of one length (a CoNLL file read with `source.format: conll` has exactly these columns,
data/conll.py).  Tags are BIO (IOB2) entity tags, `B-person`, `I-person`, `O` (IOB1 and IOBES spellings read
too).  The canonical columns are `tokens` and `label` (the tag list); a row whose lists differ in length or
hold a tag that is not of that form is refused at its file and line; an empty sentence is dropped and counted.

Alignment.  A word the tokenizer cuts into pieces is labelled on its first piece, and the other pieces get
-100 (the loss ignores them): transformers' run_ner.py with label_all_tokens=False.  Evaluation and predict
read the tag of a word from its first piece too; a word beyond data.max_length (cut off) is tagged O.

Metrics.  seqeval's entity-level precision, recall and F1 (an entity counts when its type and its words
match exactly; micro-averaged over entity types, conlleval's default mode), and the accuracy over words.

Predict.  An input is text: it is split at whitespace into words, as a CoNLL file is, and every entity is
given as {type, start, end, text, score} with character offsets into that text (text[start:end] is its
text) and the mean probability of its words' tags.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from adaptctl.data.columns import RowError, slice_columns
from adaptctl.core.errors import UserError
from adaptctl.tasks.spec import TaskSpec

METRICS = ("precision", "recall", "f1", "accuracy")
IGNORED = -100            # the label the loss skips: a word's later pieces, special tokens, padding
TAG = re.compile(r"O|[BIES]-\S+")
TAG_HINT = "tags are BIO entity tags such as B-person, I-person and O (one per word)"
WORD = re.compile(r"\S+")

DATA_FIELDS = {
    "tokens": (str, Field("tokens", description=(
        "token-classification: the column holding each row's words (a list of strings; a CoNLL file's words "
        "are `tokens`)."))),
    "tags": (str, Field("tags", description=(
        "token-classification: the column holding each word's tag, a list as long as the words (BIO tags such "
        "as B-person, I-person, O; a CoNLL file's last column is `tags`)."))),
}


def templates(data, columns=()) -> dict:
    """The columns canonicalize reads (validate checks that the file has them; they are never rendered)."""
    return {"tokens": data.tokens, "tags": data.tags}


# ------------------------------------------------------------------ rows
def canonicalize(ds, recipe, source: str):
    """(Dataset with `tokens` and `label`, {reason: rows dropped}); a bad row is a RowError at its line."""
    from datasets import Dataset, Features, Sequence, Value

    data = recipe.data
    missing = [f"data.{key} ({column!r})" for key, column in templates(data).items() if column not in ds.column_names]
    if missing:
        raise UserError(f"{source}: no column {' or '.join(missing)}",
                        hint=f"the file has columns {', '.join(ds.column_names)}; set data.tokens and data.tags to "
                             "the columns of words and tags (or read a CoNLL file with source.format: conll)")
    kept_columns = slice_columns(ds.column_names)
    rows, empty = [], 0
    for index, row in enumerate(ds.select_columns([data.tokens, data.tags, *kept_columns])):
        words, tags = _checked(index, row[data.tokens], row[data.tags], data)
        if not words:
            empty += 1
            continue
        rows.append({"tokens": words, "label": tags, **{c: row[c] for c in kept_columns}})
    if not rows:
        raise UserError(f"{source}: every sentence is empty", hint=f"check data.tokens ({data.tokens!r})")
    features = Features({"tokens": Sequence(Value("string")), "label": Sequence(Value("string")),
                         **{c: Value("string") for c in kept_columns}})
    return Dataset.from_list(rows, features=features), {"empty": empty}


def _checked(index: int, words, tags, data) -> tuple[list[str], list[str]]:
    for key, value in (("tokens", words), ("tags", tags)):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise RowError(index, f"data.{key} ({getattr(data, key)!r}) is not a list of strings: {str(value)[:80]}",
                           hint="each row needs a list of words and a list of their tags, as strings"
                                + ("; integer tags need their names (B-person, ...)" if key == "tags" else ""))
    if len(words) != len(tags):
        raise RowError(index, f"{len(words)} words and {len(tags)} tags", hint="give every word one tag")
    for position, tag in enumerate(tags):
        if not TAG.fullmatch(tag):
            raise RowError(index, f"word {position + 1} ({words[position]!r}) has the tag {tag!r}", hint=TAG_HINT)
    return words, tags


# ------------------------------------------------------------------ alignment
def first_piece_labels(word_ids: list, word_labels: list[int]) -> list[int]:
    """A label per token: the word's label on its first piece, IGNORED on its other pieces and on special
    tokens (transformers' run_ner.py, label_all_tokens=False)."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORED if word is None or word == previous else word_labels[word])
        previous = word
    return labels


def first_pieces(word_ids: list, words: int) -> list[int | None]:
    """The position of each word's first piece (None: the word was cut off, or has no piece)."""
    positions: list[int | None] = [None] * words
    for position, word in enumerate(word_ids):
        if word is not None and positions[word] is None:
            positions[word] = position
    return positions


def _encode(tokenizer, sentences: list[list[str]], max_length: int):
    if not tokenizer.is_fast:
        raise UserError("token-classification needs a fast tokenizer (tokenizer.json): it maps pieces back to words",
                        hint="use a model folder with tokenizer.json")
    return tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)


def tokenize(dataset, tokenizer, recipe, label2id: dict):
    from adaptctl.data.tokens import encoding_stats

    max_length = recipe.data.max_length

    def encode(batch):
        encoded = _encode(tokenizer, batch["tokens"], max_length)
        labels = [first_piece_labels(encoded.word_ids(i), [label2id[tag] for tag in tags])
                  for i, tags in enumerate(batch["label"])]
        return {**{key: encoded[key] for key in encoded}, "labels": labels, **encoding_stats(encoded, max_length)}

    return dataset.map(encode, batched=True, batch_size=1000, desc="tokenize")


def collator(tokenizer, recipe):
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)  # pads labels with -100


# ------------------------------------------------------------------ tagging
def tag_words(model, tokenizer, sentences: list[list[str]], recipe, batch_size: int, names: list[str],
              desc: str = "evaluate") -> tuple[list[list[str]], list[list[float]], float | None]:
    """(each word's tag, its probability, sentences per second): the tag of a word's first piece."""
    from transformers import DataCollatorWithPadding

    from adaptctl.evaluation.inference import run_batches

    encoded = _encode(tokenizer, sentences, recipe.data.max_length)
    rows = [{key: encoded[key][i] for key in encoded} for i in range(len(sentences))]

    def forward(batch):
        best = model(**batch).logits.float().softmax(-1).max(-1)
        return list(zip(best.indices.tolist(), best.values.tolist()))

    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    outputs, speed = run_batches(rows, collate, forward, batch_size, recipe.train.precision, desc=desc, model=model)
    tags, probabilities = [], []
    for i, (words, (ids, probs)) in enumerate(zip(sentences, outputs)):
        positions = first_pieces(encoded.word_ids(i), len(words))
        tags.append([names[ids[p]] if p is not None else "O" for p in positions])
        probabilities.append([round(probs[p], 6) if p is not None else 0.0 for p in positions])
    return tags, probabilities, speed


def entities(tags: list[str], spans: list[tuple[int, int]], text: str, probabilities: list[float] | None = None):
    """The entities of a tag sequence (seqeval's reading of it) with character offsets into `text`, given
    each word's (start, end) there."""
    from seqeval.metrics.sequence_labeling import get_entities

    found = []
    for kind, first, last in get_entities(tags):
        start, end = spans[first][0], spans[last][1]
        entity = {"type": kind, "start": start, "end": end, "text": text[start:end]}
        if probabilities is not None:
            entity["score"] = round(sum(probabilities[first:last + 1]) / (last - first + 1), 6)
        found.append(entity)
    return found


def joined(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words as one text, a space between each, and each word's (start, end) in it."""
    spans, start = [], 0
    for word in words:
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), spans


def summary(found: list[dict]) -> str:
    """The entities as one line for the report's tables: `Paris (location); Obama (person)`."""
    return "; ".join(f"{e['text']} ({e['type']})" for e in found) or "(none)"


# ------------------------------------------------------------------ evaluate and predict
def label_names(model, label2id: dict) -> list[str]:
    """The tag of each label id: the run's label map (an adapter's base config has LABEL_0...)."""
    count = model.config.num_labels
    if len(label2id) == count:
        return sorted(label2id, key=label2id.__getitem__)
    return [model.config.id2label[i] for i in range(count)]


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> tuple[dict, dict]:
    """seqeval's entity-level precision, recall and F1 (micro over types) and word accuracy; and per type."""
    from seqeval.metrics import (
        accuracy_score,
        classification_report,
        f1_score,
        precision_score,
        recall_score,
    )

    metrics = {"precision": precision_score(gold, predicted, zero_division=0),
               "recall": recall_score(gold, predicted, zero_division=0),
               "f1": f1_score(gold, predicted, zero_division=0), "accuracy": accuracy_score(gold, predicted)}
    per_type = classification_report(gold, predicted, output_dict=True, zero_division=0)
    return {k: float(v) for k, v in metrics.items()}, per_type


def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    from adaptctl.core import console
    from adaptctl.evaluation import EvalResult

    sentences, gold = list(split["tokens"]), list(split["label"])  # datasets gives a lazy Column
    predicted, probabilities, speed = tag_words(model, tokenizer, sentences, recipe, recipe.evaluate.batch_size,
                                                label_names(model, label2id))
    metrics, per_type = entity_metrics(gold, predicted)
    types = [name for name in per_type if "avg" not in name]
    console.info("evaluate: entity F1 by type: " + ", ".join(
        f"{name} {per_type[name]['f1-score']:.3f} ({per_type[name]['support']})" for name in types))
    predictions = []
    for words, reference, tags, probs in zip(sentences, gold, predicted, probabilities):
        text, spans = joined(words)
        expected, found = entities(reference, spans, text), entities(tags, spans, text, probs)
        predictions.append({"input": text, "reference": summary(expected), "prediction": summary(found),
                            "score": _sentence_f1(expected, found), "reference_entities": expected,
                            "entities": found, "tags": tags})
    return EvalResult(metrics=metrics, predictions=predictions, examples_per_second=speed,
                      extras={"per_type": {name: per_type[name] for name in types}})


def _sentence_f1(expected: list[dict], found: list[dict]) -> float:
    """The row's own entity F1, which orders the report's worst and best examples (1 where both have none)."""
    if not expected and not found:
        return 1.0
    def key(entity: dict) -> tuple:
        return entity["type"], entity["start"], entity["end"]

    hits = len({key(e) for e in expected} & {key(e) for e in found})
    return round(2 * hits / (len(expected) + len(found)), 6)


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """`adaptctl predict`: each text split at whitespace into words, tagged as evaluate tags them; the
    entities under `entities` (character offsets into the text), a one-line summary under `prediction`."""
    words = [[(m.group(), m.start(), m.end()) for m in WORD.finditer(text)] for text in texts]
    names = label_names(model, info.get("label2id") or {})
    tags, probabilities, _ = tag_words(model, tokenizer, [[w for w, _, _ in ws] for ws in words], recipe,
                                       batch_size, names, desc="predict")
    results = []
    for text, ws, row_tags, probs in zip(texts, words, tags, probabilities):
        found = entities(row_tags, [(start, end) for _, start, end in ws], text, probs)
        results.append({"prediction": summary(found), "entities": found, "tags": row_tags})
    return results


# ------------------------------------------------------------------ the recipe and the model
def recipe_problems(recipe, method) -> list:
    """Settings of classification's metrics that would be ignored here."""
    return [(("evaluate", name), (f"evaluate.{name} is for classification; token-classification reports "
             "seqeval's entity-level precision, recall and F1 (micro over entity types)"), f"remove evaluate.{name}")
            for name in ("average", "positive_label") if getattr(recipe.evaluate, name) is not None]


def model_kwargs(label2id: dict) -> dict:
    # a checkpoint that is a token classifier of other tags differs in its head alone: that head starts fresh
    return {"label2id": dict(label2id), "id2label": {i: name for name, i in label2id.items()},
            "ignore_mismatched_sizes": True}


def _is_token_classifier(path: Path) -> bool:
    from adaptctl.models.config import architectures

    return any(name.endswith("ForTokenClassification") for name in architectures(path))


SPEC = TaskSpec(
    name="token-classification", summary="a tag for every word: named-entity recognition (BIO tags, CoNLL files)",
    auto_class="AutoModelForTokenClassification", peft_task_type="TOKEN_CLS", pipeline_tag="token-classification",
    label_names=("labels",), output_names=("logits",), per_example_loss=False, generates=False, has_label_map=True,
    labels_of=lambda tags: tags, model_kwargs=model_kwargs, data_fields=DATA_FIELDS,
    head_names=("classifier", "score"),  # peft's TOKEN_CLS heads: BERT's classifier, Llama's score
    templates=templates, canonicalize=canonicalize, tokenize=tokenize, collator=collator, evaluate=evaluate,
    predict=predict, data_problems=lambda data: [], metrics=METRICS, recipe_problems=recipe_problems,
    structured_fields=("tokens", "tags"),  # lists, read as they are, never rendered as text
    input_field=lambda data: "text", fresh_head=lambda path: not _is_token_classifier(path),
    starter={"model": "sentence-transformers/all-MiniLM-L6-v2",
             "data": {"source": "data/train.conll", "validation": "data/dev.conll", "test": "data/test.conll",
                      "tokens": "tokens", "tags": "tags", "max_length": 128}},
)
