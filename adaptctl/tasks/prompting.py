"""Prompting without training: few-shot prompts and classification by likelihood.

Few-shot: `evaluate.few_shot: k` puts k examples drawn from the train split
(the same k for every test example, chosen by `seed`, so a run is repeatable)
before each test prompt:
- plain prompts:   "{prompt_1}{response_1}\\n\\n...{prompt_k}{response_k}\\n\\n{prompt}"
- chat templates:  user/assistant turns, one pair per example, then the test prompt as the last user turn.

Classification by likelihood (`method: {name: prompting}` with `task:
classification` and a causal-LM base): every label name is scored by the
log-likelihood the model gives it after the prompt, and the best one wins.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from adaptctl.core.errors import UserError

if TYPE_CHECKING:  # annotations only: torch is imported where the scoring runs
    import torch

SHOT_SEPARATOR = "\n\n"
DEFAULT_CLASSIFICATION_PROMPT = "{text}\nAnswer ({labels}):"


# ------------------------------------------------------------------ few-shot
def draw_shots(train_split, k: int, seed: int, columns: tuple[str, str] = ("prompt", "response")) -> list[tuple[str, str]]:
    """k (input, answer) pairs from the train split, the same for a given seed."""
    if k <= 0 or train_split is None or len(train_split) == 0:
        return []
    picked = random.Random(seed).sample(range(len(train_split)), min(k, len(train_split)))
    rows = train_split.select(picked).select_columns(list(columns)).to_list()
    return [(str(r[columns[0]]), str(r[columns[1]])) for r in rows]


def plain_prompt(shots: list[tuple[str, str]], prompt: str, joiner: str = "") -> str:
    """The test prompt after the examples, each written as prompt + joiner + answer."""
    return "".join(f"{p}{joiner}{a}{SHOT_SEPARATOR}" for p, a in shots) + prompt


def chat_messages(shots: list[tuple[str, str]], prompt: str) -> list[dict]:
    messages = []
    for p, a in shots:
        messages += [{"role": "user", "content": p}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": prompt}]


def chat_prompt(tokenizer, shots: list[tuple[str, str]], prompt: str) -> str:
    """The chat template up to the assistant's turn (add_generation_prompt), as text."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("data.chat_template: the model's tokenizer has no chat template",
                        hint="set data.chat_template: false, or use a chat/instruct model")
    from adaptctl.tasks.conversation import render

    return render(tokenizer, chat_messages(shots, prompt), generation_prompt=True)


# ----------------------------------------------------- classification prompt
def classification_template(recipe) -> str:
    """data.prompt, or a default that names the labels.

    For classification by prompting, `data.prompt` is a template over two
    placeholders: `{text}` (the input as `data.text` renders it) and `{labels}`
    (the label names, comma-separated), e.g.
    "Message: {text}\\nIs this message spam or ham? Answer:".  Each label name is
    then scored as the continuation (after a space unless the prompt ends in
    whitespace; as the assistant's reply with `data.chat_template: true`).
    """
    return recipe.data.prompt or DEFAULT_CLASSIFICATION_PROMPT


def render_classification_prompt(template: str, text: str, labels: list[str]) -> str:
    from adaptctl.data.columns import TemplateRowError, is_jinja, render

    values = {"text": text, "labels": ", ".join(labels)}
    try:
        if is_jinja(template):  # either syntax, as for the data.* templates over columns
            return render(template, values)
        return template.format_map(values)
    except TemplateRowError as exc:
        reason = exc.message
    except (KeyError, IndexError, ValueError) as exc:
        reason = f"cannot fill {template!r} ({type(exc).__name__}: {exc})"
    raise UserError(f"data.prompt: {reason}", hint="for classification by prompting the prompt may use {text} and "
                    "{labels} only (in a Jinja template {{ text }} and {{ labels }})")


def _contexts(texts, labels, recipe, tokenizer, shots) -> tuple[list[str], list[str]]:
    """The text before the answer for every input, and each label's continuation."""
    template = classification_template(recipe)
    rendered_shots = [(render_classification_prompt(template, t, labels), a) for t, a in shots]
    prompts = [render_classification_prompt(template, t, labels) for t in texts]
    if recipe.data.chat_template:
        return [chat_prompt(tokenizer, rendered_shots, p) for p in prompts], list(labels)
    space = "" if template[-1:].isspace() else " "
    contexts = [plain_prompt(rendered_shots, p, joiner=space) for p in prompts]
    return contexts, [space + name for name in labels]


# ------------------------------------------------------------------- scoring
def continuation_logprob(logits: torch.Tensor, input_ids: torch.Tensor, start: int, length: int) -> float:
    """Sum of log p(input_ids[t] | input_ids[:t]) for t in [start, start + length).

    `logits` is (sequence, vocab) for one row; the logits at position t - 1 predict token t.
    """
    import torch

    positions = torch.arange(start - 1, start - 1 + length)
    logprobs = torch.log_softmax(logits[positions].float(), dim=-1)
    return float(logprobs.gather(1, input_ids[positions + 1].unsqueeze(1)).sum())


def pick_labels(scores: list[list[float]]) -> tuple[list[int], list[list[float]]]:
    """The best label per row and the scores turned into probabilities over the label set."""
    import torch

    tensor = torch.tensor(scores, dtype=torch.float64)
    probabilities = tensor.softmax(-1)
    return tensor.argmax(-1).tolist(), probabilities.tolist()


def label_scores(model, tokenizer, contexts: list[str], continuations: list[str], recipe) -> list[list[float]]:
    """log p(label | context) for every context and label, batched and length-sorted."""
    import torch

    from adaptctl.data.tokens import pad_token_id
    from adaptctl.evaluation.generation import LOSS_TOKENS_PER_BATCH, pad_batch
    from adaptctl.evaluation.inference import run_batches

    plain = not recipe.data.chat_template
    ctx_ids = tokenizer(contexts, add_special_tokens=plain)["input_ids"]
    cont_ids = tokenizer(continuations, add_special_tokens=False)["input_ids"]
    if any(len(c) == 0 for c in cont_ids):
        raise UserError("classification by prompting: a label name is empty after tokenization",
                        hint="give every label a non-empty name")
    room = max(recipe.data.max_length - max(len(c) for c in cont_ids), 1)
    ctx_ids = [ids[-room:] for ids in ctx_ids]  # keep the end: the question sits next to the answer
    single = all(len(c) == 1 for c in cont_ids)
    # One forward per input when every label is one token: the last context position scores them all.
    pairs = [(i, None) for i in range(len(ctx_ids))] if single else \
        [(i, j) for i in range(len(ctx_ids)) for j in range(len(cont_ids))]
    rows = [{"input_ids": ctx_ids[i] + ([] if j is None else cont_ids[j]), "start": len(ctx_ids[i]), "pair": n}
            for n, (i, j) in enumerate(pairs)]
    longest = max(len(r["input_ids"]) for r in rows)
    size = max(1, min(recipe.evaluate.batch_size, LOSS_TOKENS_PER_BATCH // longest))
    pad_id = pad_token_id(tokenizer)

    def collate(batch):
        padded = pad_batch([{"input_ids": r["input_ids"]} for r in batch], pad_id, left=False)
        padded["meta"] = torch.tensor([[r["start"], r["pair"]] for r in batch])
        return padded

    def forward(batch):
        meta = batch.pop("meta").tolist()
        logits = model(**batch).logits
        out = []
        for row_logits, row_ids, (start, n) in zip(logits, batch["input_ids"], meta):
            i, j = pairs[n]
            if j is None:
                last = torch.log_softmax(row_logits[start - 1].float(), dim=-1)
                out.append([float(last[c[0]]) for c in cont_ids])
            else:
                out.append(continuation_logprob(row_logits, row_ids, start, len(cont_ids[j])))
        return out

    results, _ = run_batches(rows, collate, forward, size, recipe.train.precision, desc="score labels",
                             model=model)
    if single:
        return results
    width = len(cont_ids)
    return [results[i * width:(i + 1) * width] for i in range(len(ctx_ids))]


def classify_by_likelihood(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """Classification with a causal LM and no training: the label whose name is most likely after the prompt.

    The prompt comes from `data.prompt` (see classification_template), rendered
    from the split's `text` column; with `evaluate.few_shot: k`, k labelled
    training examples come first.  Returns the same EvalResult as
    tasks.classification.evaluate (accuracy, precision, recall, f1, mcc; the
    per-class report; probabilities per example, a softmax over the label scores).
    """
    import time

    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.metrics import classification_metrics

    labels = sorted(label2id, key=label2id.__getitem__)
    shots = draw_shots(train_split, recipe.evaluate.few_shot, recipe.seed, columns=("text", "label"))
    texts = list(split["text"])
    contexts, continuations = _contexts(texts, labels, recipe, tokenizer, shots)
    start = time.monotonic()
    scores = label_scores(model, tokenizer, contexts, continuations, recipe)
    seconds = time.monotonic() - start
    predicted, probabilities = pick_labels(scores)
    gold = [label2id[name] for name in split["label"]]
    metrics, extras = classification_metrics(gold, predicted, labels, recipe.evaluate.average,
                                             recipe.evaluate.positive_label, probabilities)
    predictions = [{"input": text, "reference": name, "prediction": labels[pred], "score": max(probs),
                    "probabilities": dict(zip(labels, (round(p, 6) for p in probs)))}
                   for text, name, pred, probs in zip(texts, split["label"], predicted, probabilities)]
    extras["few_shot"] = len(shots)
    return EvalResult(metrics=metrics, predictions=predictions,
                      examples_per_second=len(texts) / seconds if seconds > 0 else None, extras=extras)
