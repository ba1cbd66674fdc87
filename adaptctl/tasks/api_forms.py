"""How an API model is asked a task and how its answers are read (spec.ApiForm), for the tasks that can be.

- classification: the recipe's classification prompt (data.prompt over {text} and {labels}, as method
  prompting uses it); the answer is matched to a label name (tolerant of case, punctuation and words
  around it; the first one named, when it names several).  An answer that names no label is unreadable:
  counted, located, and wrong.
- causal-lm / seq2seq with prompt and response data: the rendered prompt is the user's message; the answer
  is the generated text, scored with the same metrics, answer pattern and normalisation as the adapted model.
"""

from __future__ import annotations

import re

from adaptctl.tasks.spec import ApiForm


# ------------------------------------------------------------------ classification
def classification_prompt(text: str, recipe, labels: list[str]) -> str:
    from adaptctl.tasks.prompting import (
        classification_template,
        render_classification_prompt,
    )

    return render_classification_prompt(classification_template(recipe), text, labels)


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def read_label(answer: str, labels: list[str]) -> str | None:
    """The label an answer names: the whole answer, else the one label whose name occurs in it as words
    (the first to occur when the answer says more than one: "spam. It is not ham" is spam)."""
    said = _words(answer)
    by_words = {_words(name): name for name in labels}
    if said in by_words:
        return by_words[said]
    found = [(m.start(), name) for words, name in by_words.items() if words
             for m in [re.search(rf"(?<!\w){re.escape(words)}(?!\w)", said)] if m]
    if not found:
        return None
    found.sort()
    return found[0][1]


def score_labels(split, outputs: list[str | None], recipe, label2id: dict):
    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.metrics import classification_metrics

    labels = sorted(label2id, key=label2id.__getitem__)
    gold = [label2id[name] for name in split["label"]]
    predicted = [label2id[o] if o is not None else _wrong(g, len(labels)) for o, g in zip(outputs, gold)]
    metrics, extras = classification_metrics(gold, predicted, labels, recipe.evaluate.average,
                                             recipe.evaluate.positive_label)
    predictions = [{"input": text, "reference": name, "prediction": output}
                   for text, name, output in zip(split["text"], split["label"], outputs)]
    unread = [i for i, o in enumerate(outputs) if o is None]
    extras["unparsed"] = {"count": len(unread), "rows": unread[:20]}
    return EvalResult(metrics=metrics, predictions=predictions, extras=extras)


def _wrong(gold: int, classes: int) -> int:
    """What an unreadable answer counts as: wrong.  With two classes that is the other one (binary precision and
    recall know no third value); with more, -1, which is no class (each class's figures stay its own)."""
    return 1 - gold if classes == 2 else -1


CLASSIFICATION = ApiForm(columns=("text", "label"), prompt=classification_prompt, read=read_label,
                         score=score_labels)


# ---------------------------------------------------------------------- generation
def generation_prompt(prompt: str, recipe, labels: list[str]) -> str:
    return prompt


def read_text(answer: str, labels: list[str]) -> str:
    return answer.strip()


def score_texts(split, outputs: list[str | None], recipe, label2id: dict):
    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.generation import score_texts as scored

    if "references" in split.column_names:
        references = [refs or [r] for refs, r in zip(split["references"], split["response"])]
    else:
        references = [[r] for r in split["response"]]
    texts = [o or "" for o in outputs]  # a refused request answered nothing
    metrics, predictions, extras = scored(texts, list(split["prompt"]), references, recipe)
    return EvalResult(metrics=metrics, predictions=predictions, extras=extras)


GENERATION = ApiForm(columns=("prompt", "response"), prompt=generation_prompt, read=read_text, score=score_texts)


def generation_form(data) -> ApiForm | None:
    """Prompt and response data only: plain text has no question to ask, conversations are their own format."""
    chats = getattr(data, "messages", None) or getattr(data, "conversations", None)
    return GENERATION if data.response is not None and not chats else None
