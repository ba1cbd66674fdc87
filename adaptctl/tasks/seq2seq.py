"""Sequence to sequence (AutoModelForSeq2SeqLM, e.g. T5, BART): the rendered
`data.prompt` is the encoder input, the rendered `data.response` the target.

Truncation at `data.max_length` applies to the source and the target
separately, each cut at its end (the tokenizer's truncation side); a row with
either cut is counted in `truncated`.  Targets end with the end-of-sequence
token (added when the tokenizer does not add it itself) so the model learns to
stop.  Several references per example work as in causal-lm (numbered
`summary1`, `summary2`, ... columns; see tasks/causal_lm.py).  `model.decoder` makes the model from two
checkpoints (an encoder and a decoder, BERT2BERT): adaptctl/models/encoder_decoder.py, docs/translation.md.
"""

from __future__ import annotations

from adaptctl.data.tokens import encoding_stats, pad_token_id
from adaptctl.tasks import api_forms, causal_lm, prompting
from adaptctl.tasks.causal_lm import MODEL_INPUTS
from adaptctl.tasks.spec import TaskSpec, ZeroShot, required_fields


def tokenize(dataset, tokenizer, recipe, label2id: dict):
    return dataset.map(lambda b: encode_pairs(b["prompt"], b["response"], tokenizer, recipe), batched=True,
                       batch_size=1000, desc="tokenize")


def encode_pairs(prompts: list[str], responses: list[str], tokenizer, recipe, shots=()) -> dict:
    """input_ids/attention_mask from the prompt, labels from the response; num_tokens, truncated."""
    max_length = recipe.data.max_length
    sources = [prompting.plain_prompt(list(shots), p) for p in prompts]
    encoded = tokenizer(sources, truncation=True, max_length=max_length)
    eos = tokenizer.eos_token_id
    labels, cut_targets = [], []
    for ids in tokenizer(text_target=responses)["input_ids"]:
        if eos is not None and (not ids or ids[-1] != eos):
            ids = ids + [eos]
        cut_targets.append(len(ids) > max_length)
        labels.append(ids[:max_length - 1] + ids[-1:] if len(ids) > max_length else ids)  # keep the end token
    cut_sources = encoding_stats(encoded, max_length)["truncated"]
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels,
            "num_tokens": [len(ids) + len(target) for ids, target in zip(encoded["input_ids"], labels)],
            "truncated": [a or b for a, b in zip(cut_sources, cut_targets)]}


def collator(tokenizer, recipe):
    from transformers import DataCollatorForSeq2Seq

    pad_token_id(tokenizer)
    # Pads the source and, separately, the labels with -100; the model shifts labels into decoder inputs.
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=8)


def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """Perplexity of the reference targets and generation from the sources, scored with ROUGE/BLEU/chrF."""
    from adaptctl.evaluation import generation

    shots = prompting.draw_shots(train_split, recipe.evaluate.few_shot, recipe.seed) if train_split is not None else []
    if shots:
        encoded = encode_pairs(list(split["prompt"]), list(split["response"]), tokenizer, recipe, shots)
        rows = [dict(zip(MODEL_INPUTS, values)) for values in zip(*(encoded[k] for k in MODEL_INPUTS))]
    else:
        rows = split.select_columns(list(MODEL_INPUTS)).to_list()
    prompts = [row["input_ids"] for row in rows]
    result = generation.evaluate_generation(model, tokenizer, rows, prompts, list(split["prompt"]),
                                            causal_lm.references(split), recipe, encoder_decoder=True)
    result.extras["few_shot"] = len(shots)
    return result


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """`adaptctl predict`: each source encoded as prepare encodes it and decoded as evaluate decodes it."""
    from adaptctl.evaluation import generation

    outputs, _ = generation.generate_texts(model, tokenizer, prompt_ids(tokenizer, texts, recipe), recipe,
                                           encoder_decoder=True, batch_size=batch_size)
    return [{"prediction": text} for text in outputs]


def prompt_ids(tokenizer, texts: list[str], recipe) -> list[list[int]]:
    """The encoder inputs for predict's texts (and adaptctl serve's prompts), as prepare encodes sources."""
    return encode_pairs(texts, [""] * len(texts), tokenizer, recipe)["input_ids"]
def model_problem(path) -> str | None:
    """A model that is no encoder-decoder (an encoder such as BERT, a decoder-only LM) cannot be trained as
    one, but an encoder (or two) can warm-start one: say so, rather than transformers' class-mapping error."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    from adaptctl.models.config import architectures, model_config

    config = model_config(path)
    if not config or config.get("is_encoder_decoder") or config.get("model_type") in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return None
    found = ", ".join(architectures(path)) or config.get("model_type") or "no architectures"
    return (f"task seq2seq needs an encoder-decoder model (T5, BART), and this one is not ({found}); to warm-start "
            "one from pretrained checkpoints, name its decoder with model.decoder (e.g. the same model: BERT2BERT)")


SPEC = TaskSpec(
    name="seq2seq", summary="encoder-decoder generation with T5, BART, or two encoders joined by model.decoder: the prompt is "
            "the source, the response the target",
    auto_class="AutoModelForSeq2SeqLM", peft_task_type="SEQ_2_SEQ_LM", pipeline_tag="text2text-generation",
    label_names=("labels",), output_names=("logits",), per_example_loss=False, generates=True, has_label_map=False,
    # data.prompt/response (required) and numbered reference columns read as in causal-lm
    templates=causal_lm.templates,
    canonicalize=causal_lm.canonicalize, tokenize=tokenize, collator=collator, evaluate=evaluate, predict=predict,
    prompt_ids=prompt_ids, api_form=api_forms.generation_form,
    data_problems=lambda data: required_fields("seq2seq", ("prompt", "response"), data),
    metrics=causal_lm.GENERATION_METRICS, input_field=lambda data: "prompt",
    head_names=("lm_head",), fresh_head=lambda path: False,  # the language-model head is the checkpoint's own
    starter={"model": "google-t5/t5-small",
             "data": {"source": "data/train.jsonl", "prompt": "summarize: {document}", "response": "{summary}",
                      "max_length": 512}},
    zero_shot=ZeroShot(evaluate, model_task="seq2seq"), evaluate_takes_shots=True,
    warm_starts_decoder=True, model_problem=model_problem,
    retrieval_use=lambda data: "prompt" if causal_lm.reads_a_prompt(data) else None,
)
