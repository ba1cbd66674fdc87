"""Text classification: text -> label id, AutoModelForSequenceClassification."""

from __future__ import annotations

from pathlib import Path

from adaptctl.data.tokens import ENCODER_INPUTS, encoding_stats
from adaptctl.tasks import api_forms, majority, pooling, prompting
from adaptctl.tasks.spec import TaskSpec, ZeroShot, required_fields

METRICS = ("accuracy", "precision", "recall", "f1", "mcc", "ece")


def templates(data, columns=()) -> dict:
    return {"text": data.text, "label": data.label}


def tokenize(dataset, tokenizer, recipe, label2id: dict):
    max_length = recipe.data.max_length

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        out = {key: encoded[key] for key in encoded.keys()}
        out["labels"] = [label2id[label] for label in batch["label"]]
        return {**out, **encoding_stats(encoded, max_length)}

    return dataset.map(encode, batched=True, batch_size=1000, desc="tokenize")


def model_kwargs(label2id: dict) -> dict:
    id2label = {i: name for name, i in label2id.items()}
    # A checkpoint that is already a classifier with another number of labels (an SST-2 model taught
    # 3 classes) differs from the recipe's model in its head alone: that head starts fresh (on_load
    # says so) instead of ending in transformers' size-mismatch error.
    # (num_labels follows from id2label; naming it too makes transformers warn against the checkpoint's map)
    return {"label2id": dict(label2id), "id2label": id2label, "ignore_mismatched_sizes": True}


def on_load(model, path: Path):
    """Say when the checkpoint's own classifier head was replaced because its label count differs."""
    from adaptctl.core import console
    from adaptctl.core.rundir import read_json_object

    config = read_json_object(Path(path) / "config.json")
    own = config.get("id2label") or {"0": "LABEL_0", "1": "LABEL_1"}  # transformers leaves its default map out
    was_classifier = any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or [])
    if was_classifier and len(own) != model.config.num_labels:
        names = ", ".join(own[key] for key in sorted(own, key=int))
        console.info(f"classification: the base model's {len(own)}-label head ({names}) does not fit the data's "
                     f"{model.config.num_labels} labels; a fresh {model.config.num_labels}-label head is trained")
    return model


def collator(tokenizer, recipe):
    from transformers import DataCollatorWithPadding

    # Dynamic padding to a multiple of 8: 2.3x over max_length padding on SST-2 (docs/performance.md).
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None, temperature: float = 1.0):
    """Predicted label and class probabilities (softmax(logits / temperature)) for every row, and the
    metrics; extras["logits"] for fitting a temperature, and the uncalibrated ECE when one is given."""
    from transformers import DataCollatorWithPadding

    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.calibration import expected_calibration_error, reliability, softmax
    from adaptctl.evaluation.inference import run_batches
    from adaptctl.evaluation.metrics import classification_metrics

    labels = sorted(label2id, key=label2id.__getitem__)
    inputs = [c for c in ENCODER_INPUTS if c in split.column_names]
    rows = split.select_columns(inputs).to_list()
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def forward(batch):
        return model(**batch).logits.float().tolist()

    logits, speed = run_batches(rows, collate, forward, recipe.evaluate.batch_size, recipe.train.precision,
                                model=model)
    probabilities = softmax(logits, temperature)
    predicted = [max(range(len(p)), key=p.__getitem__) for p in probabilities]
    gold_ids = split["labels"]
    metrics, extras = classification_metrics(gold_ids, predicted, labels, recipe.evaluate.average,
                                             recipe.evaluate.positive_label, probabilities)
    extras["logits"] = logits
    if temperature != 1.0:
        uncalibrated = softmax(logits)
        extras.update(ece_before=expected_calibration_error(uncalibrated, gold_ids),
                      reliability_before=reliability(uncalibrated, gold_ids), temperature=temperature)
    predictions = [{"input": text, "reference": gold, "prediction": labels[pred], "score": max(probs),
                    "probabilities": dict(zip(labels, (round(p, 6) for p in probs)))}
                   for text, gold, pred, probs in zip(split["text"], split["label"], predicted, probabilities)]
    return EvalResult(metrics=metrics, predictions=predictions, examples_per_second=speed, extras=extras)


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """`adaptctl predict`: the same tokenization, batching and precision as evaluate.  The label is under
    `prediction`, evaluate's key (never `label`, which is the user's own column more often than not)."""
    from transformers import DataCollatorWithPadding

    from adaptctl.evaluation.inference import run_batches

    encoded = tokenizer(texts, truncation=True, max_length=recipe.data.max_length)
    rows = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    from adaptctl.evaluation.calibration import softmax

    logits, _ = run_batches(rows, collate, lambda b: model(**b).logits.float().tolist(), batch_size,
                            recipe.train.precision, desc="predict", model=model)
    probabilities = softmax(logits, info.get("temperature") or 1.0)  # evaluate.calibrate's fitted temperature
    names = _label_names(model, info, len(probabilities[0]))
    results = []
    for p in probabilities:
        label = names[max(range(len(p)), key=p.__getitem__)]
        results.append({"prediction": label, "probabilities": dict(zip(names, (round(x, 6) for x in p)))})
    return results


def explain(model, tokenizer, texts: list[str], targets: list[int], recipe) -> list[dict]:
    """Token attributions of each text towards its target class (evaluation/explain.py, Captum)."""
    from adaptctl.evaluation.explain import token_attributions

    return token_attributions(model, tokenizer, texts, targets, recipe.data.max_length)


def _label_names(model, info: dict, count: int) -> list[str]:
    """The data's label names: the run's label map, which an adapter's base config lacks (LABEL_0...)."""
    label2id = info.get("label2id") or {}
    if len(label2id) == count:
        return sorted(label2id, key=label2id.__getitem__)
    return [model.config.id2label[i] for i in range(count)]


SPEC = TaskSpec(
    name="classification", summary="text -> one of a set of labels (binary or multi-class)",
    auto_class="AutoModelForSequenceClassification", peft_task_type="SEQ_CLS", pipeline_tag="text-classification",
    label_names=("labels",), output_names=("logits",), per_example_loss=True, generates=False, has_label_map=True,
    templates=templates, canonicalize=None, tokenize=tokenize, collator=collator, evaluate=evaluate, predict=predict,
    data_problems=lambda data: required_fields("classification", ("text", "label"), data),
    metrics=METRICS, model_kwargs=model_kwargs, on_load=on_load, input_field=lambda data: "text",
    api_form=lambda data: api_forms.CLASSIFICATION,
    head_names=("classifier", "score"), labels_of=lambda label: [label],
    majority=majority.majority_class, fresh_head=lambda path: True,
    starter={"model": "sentence-transformers/all-MiniLM-L6-v2",
             "data": {"source": "data/train.csv", "text": "{text}", "label": "label",
                      "splits": {"validation": 0.1, "test": 0.1, "stratify": True}, "max_length": 128}},
    # Untrained, a causal LM classifies by the likelihood of each label name after the prompt.
    zero_shot=ZeroShot(prompting.classify_by_likelihood, model_task="causal-lm",
                       words=", each label name scored by its likelihood after the prompt"),
    prompting_method=True, distill_over="labels", export_formats=("onnx",), calibrates=True, explain=explain,
    model_class_for=pooling.model_class, register_models=pooling.register,
    private_methods=("full", "freeze", "lora"),
)
