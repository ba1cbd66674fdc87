"""SQuAD v1.1's nested JSON (data[].title, paragraphs[].context, paragraphs[].qas[]) as flat rows.

Read with `source.field: data`, each row of such a file is an article.  prepare flattens it into one
row per question before anything else sees it, so that every task reads SQuAD-style files the same
way: extractive-qa through data.question / data.context / data.answers, and a generative task
through templates such as `Context: {context}\nQuestion: {question}\nAnswer:` and `{answer}`.
The article's `title` stays a column, so `evaluate.slices: ["{title}"]` scores each article.

Columns: id, title, question, context, answers ({text: [...], answer_start: [...]}, as SQuAD), and
answer1, answer2, ... (every answer text, empty where a question has fewer), which a response
template `{answer}` reads as the training answer and the references (tasks/causal_lm.py).
"""

from __future__ import annotations

NESTED_KEY = "paragraphs"


def is_nested(columns) -> bool:
    """Rows that are SQuAD articles, not questions."""
    return NESTED_KEY in columns and "question" not in columns


def flatten(ds):
    """One row per question (see the module docstring) as a Dataset."""
    from datasets import Dataset, Features, Sequence, Value

    rows = flatten_records(ds)
    numbered = [c for c in (rows[0] if rows else {}) if c.startswith("answer") and c != "answers"]
    features = Features({"id": Value("string"), "title": Value("string"), "question": Value("string"),
                         "context": Value("string"),
                         "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int64"))},
                         **{c: Value("string") for c in numbered}})
    return Dataset.from_list(rows, features=features)


def flatten_records(articles) -> list[dict]:
    """One dict per question, with answer1..answerN (N: the most answers any question has, at least 1)."""
    rows = list(_questions(articles))
    most = max([1, *(len(row["answers"]["text"]) for row in rows)])
    for row in rows:
        texts = row["answers"]["text"]
        row.update({f"answer{n + 1}": texts[n] if n < len(texts) else "" for n in range(most)})
    return rows


def _questions(articles):
    for article in articles:
        title = str(article.get("title") or "")
        for paragraph in article[NESTED_KEY] or []:
            for qa in paragraph.get("qas") or []:
                answers = [a for a in qa.get("answers") or [] if a.get("text")]
                yield {"id": str(qa.get("id", "")), "title": title, "question": (qa.get("question") or "").strip(),
                       "context": paragraph.get("context") or "",
                       "answers": {"text": [a["text"] for a in answers],
                                   "answer_start": [a.get("answer_start") for a in answers]}}
