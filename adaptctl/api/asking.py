"""A task's rows put to an API model and its answers read as the task's outputs (spec.ApiForm), for the
baseline (evaluate.baseline: {api: ...}), the teacher's evaluation on the test split and the teacher's
labelling of the training inputs (distill.teacher: {api: ...})."""

from __future__ import annotations

from adaptctl.api.client import ApiCaller


def shots(form, train_split, recipe, labels: list[str]) -> list[tuple[str, str]]:
    """evaluate.few_shot (input, answer) pairs from the train split, drawn as the prompting baseline draws them."""
    from adaptctl.tasks.prompting import draw_shots

    if not recipe.evaluate.few_shot or train_split is None:
        return []
    drawn = draw_shots(train_split, recipe.evaluate.few_shot, recipe.seed, columns=form.columns)
    return [(form.prompt(text, recipe, labels), answer) for text, answer in drawn]


def conversations(form, inputs: list[str], recipe, labels: list[str], examples=()) -> list[list[dict]]:
    """One chat per input: the examples as user/assistant turns, then the input as the last user turn."""
    head = [turn for prompt, answer in examples
            for turn in ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})]
    return [head + [{"role": "user", "content": form.prompt(text, recipe, labels)}] for text in inputs]


def ask(caller: ApiCaller, form, split, recipe, label2id: dict, what: str, examples=()) -> tuple[list, list]:
    """(each row's output as the task reads it, None where unreadable or refused; each raw answer)."""
    labels = sorted(label2id, key=label2id.__getitem__) if label2id else []
    chats = conversations(form, list(split[form.columns[0]]), recipe, labels, examples)
    answers = caller.ask_all(chats, what)
    outputs = [form.read(a.text, labels) if a.text is not None else None for a in answers]
    return outputs, answers


def evaluate(caller: ApiCaller, form, split, recipe, label2id: dict, train_split=None, what: str = "evaluate"):
    """The API model on a held-out split, scored by the task as the adapted model is: an EvalResult whose
    extras carry the calls' figures (`api`), the shots shown and each raw answer in its prediction row."""
    import time

    labels = sorted(label2id, key=label2id.__getitem__) if label2id else []
    examples = shots(form, train_split, recipe, labels)
    start = time.monotonic()
    outputs, answers = ask(caller, form, split, recipe, label2id, what, examples)
    seconds = time.monotonic() - start
    result = form.score(split, outputs, recipe, label2id)
    for row, answer in zip(result.predictions, answers):
        row["answer"] = answer.text
        if answer.error:
            row["error"] = answer.error
    result.extras.update(few_shot=len(examples), api=describe(caller))
    result.examples_per_second = len(outputs) / seconds if seconds > 0 and caller.stats.made == len(outputs) else None
    return result


def describe(caller: ApiCaller) -> dict:
    """The model, where it was called and what the calls cost, for metrics.json, the manifest and --json."""
    settings = caller.settings
    return {"model": settings.model, "base_url": settings.base_url,
            **caller.stats.document(settings.cost_per_1k_tokens)}
