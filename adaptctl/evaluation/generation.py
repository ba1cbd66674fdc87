"""Batched evaluation helpers for generation tasks (causal-lm, seq2seq).

Two passes over the held-out split:
- the loss of the reference tokens (labels != -100), summed per example, which
  gives perplexity = exp(sum of token losses / reference tokens);
- generation from the prompt alone (left padding for decoder-only models),
  scored against the references with ROUGE, BLEU and chrF.

Both run length-sorted under `torch.inference_mode` and bf16 autocast where the
hardware has it (adaptctl.evaluation.inference.run_batches).
"""

from __future__ import annotations

import math
import time

import torch

from adaptctl.data.tokens import pad_token_id
from adaptctl.evaluation import EvalResult
from adaptctl.evaluation.inference import run_batches

# Logits are (batch, length, vocab): cap the tokens per loss batch so that a
# 49k-vocabulary model stays near 400 MB of logits whatever evaluate.batch_size is.
LOSS_TOKENS_PER_BATCH = 4096


def pad_batch(rows: list[dict], pad_id: int, *, left: bool, multiple: int = 8) -> dict:
    """Pad input_ids (with pad_id), attention_mask (0) and labels (-100), each to a multiple of `multiple`.

    Each key gets its own width: an encoder-decoder's labels are as long as the
    target, not the source.
    """
    if "attention_mask" not in rows[0]:
        rows = [{**r, "attention_mask": [1] * len(r["input_ids"])} for r in rows]
    batch = {}
    for key, fill in (("input_ids", pad_id), ("attention_mask", 0), ("labels", -100)):
        if key not in rows[0]:
            continue
        width = -(-max(len(r[key]) for r in rows) // multiple) * multiple
        gaps = [[fill] * (width - len(r[key])) for r in rows]
        batch[key] = torch.tensor([gap + list(r[key]) if left else list(r[key]) + gap for r, gap in zip(rows, gaps)],
                                  dtype=torch.long)
    return batch


def example_losses(model, rows: list[dict], pad_id: int, *, encoder_decoder: bool, batch_size: int,
                   precision: str = "auto") -> list[tuple[float, int]]:
    """(sum of token losses, number of scored tokens) for every row, scoring the tokens whose label is not -100.

    Decoder-only: logits at position t predict token t+1, so logits and labels are
    shifted by one.  Encoder-decoder: the model builds decoder inputs from the
    labels and its logits line up with them.
    """
    longest = max((len(r["input_ids"]) + (len(r["labels"]) if encoder_decoder else 0) for r in rows), default=1)
    size = max(1, min(batch_size, LOSS_TOKENS_PER_BATCH // longest))

    def forward(batch):
        if not encoder_decoder and model.get_output_embeddings() is not None:
            return _decoder_losses(model, batch)
        labels = batch.pop("labels")
        logits = model(**batch, labels=labels).logits if encoder_decoder else model(**batch).logits
        if not encoder_decoder:
            # peft prompt tuning puts its virtual tokens first: their logits predict nothing of ours.
            logits = logits[:, logits.shape[1] - labels.shape[1]:]
            logits, labels = logits[:, :-1], labels[:, 1:]
        out = []
        for row_logits, row_labels in zip(logits, labels):  # one row at a time: fp32 logits of a batch are large
            losses = torch.nn.functional.cross_entropy(row_logits.float(), row_labels, ignore_index=-100,
                                                       reduction="sum")
            out.append((float(losses), int((row_labels != -100).sum())))
        return out

    results, _ = run_batches(rows, lambda b: pad_batch(b, pad_id, left=False), forward, size, precision,
                             desc="reference loss", model=model)
    return results


def _decoder_losses(model, batch) -> list[tuple[float, int]]:
    """Per-row loss sums of a decoder-only model, its LM head run on the scored positions only."""
    from adaptctl.training.response_logits import forward_on_trained_positions

    outputs, targets, mask = forward_on_trained_positions(model, model.get_output_embeddings(), batch)
    token_losses = torch.nn.functional.cross_entropy(outputs.logits.float(), targets, reduction="none")
    sums = torch.zeros(len(mask), device=token_losses.device).index_add_(0, mask.nonzero()[:, 0], token_losses)
    return [(float(total), int(count)) for total, count in zip(sums, mask.sum(1))]


def generate(model, prompts: list[list[int]], settings, *, pad_id: int, eos_ids: list[int], encoder_decoder: bool,
             batch_size: int, precision: str = "auto") -> tuple[list[list[int]], dict]:
    """Generated token ids (up to and without the first end token) for every prompt, and speed figures.

    Decoder-only models are padded on the left so that every row's last prompt
    token sits next to its first generated token.
    """
    kwargs = decoding_kwargs(settings, pad_id, eos_ids)
    stops = set(eos_ids) | {pad_id}

    def forward(batch):
        output = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
        new = output if encoder_decoder else output[:, batch["input_ids"].shape[1]:]
        return [until_stop(row.tolist(), stops, skip_first=encoder_decoder) for row in new]

    rows = [{"input_ids": p} for p in prompts]
    start = time.monotonic()
    outputs, examples_per_second = run_batches(
        rows, lambda b: pad_batch(b, pad_id, left=not encoder_decoder), forward, batch_size, precision,
        desc="generate", model=model)
    seconds = time.monotonic() - start
    tokens = sum(len(o) for o in outputs)
    speed = {"generated_tokens": tokens, "generation_seconds": round(seconds, 3),
             "generation_tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None,
             "generation_examples_per_second": examples_per_second}
    return outputs, speed


def decoding_kwargs(settings, pad_id: int, eos_ids: list[int]) -> dict:
    """model.generate's decoding arguments for evaluate.generation settings (recipe.Generation)."""
    kwargs = {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams,
              "do_sample": settings.do_sample, "pad_token_id": pad_id, "eos_token_id": eos_ids}
    if settings.do_sample:
        kwargs["temperature"] = settings.temperature
    return kwargs


def answer_text(tokenizer, ids: list[int]) -> str:
    """A generated answer's text, as evaluate scores it and predict prints it."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_texts(model, tokenizer, prompts: list[list[int]], recipe, *, encoder_decoder: bool,
                   batch_size: int) -> tuple[list[str], dict]:
    """The answer text for every prompt, decoded with the recipe's evaluate.generation and precision:
    evaluate's predictions and `adaptctl predict`'s are made by this one function."""
    generated, speed = generate(model, prompts, recipe.evaluate.generation, pad_id=pad_token_id(tokenizer),
                                eos_ids=eos_token_ids(model, tokenizer), encoder_decoder=encoder_decoder,
                                batch_size=batch_size, precision=recipe.train.precision)
    return [answer_text(tokenizer, ids) for ids in generated], speed


def until_stop(ids: list[int], stops: set[int], *, skip_first: bool) -> list[int]:
    if skip_first:  # the decoder start token an encoder-decoder output begins with
        ids = ids[1:]
    for i, token in enumerate(ids):
        if token in stops:
            return ids[:i]
    return ids


def evaluate_generation(model, tokenizer, rows: list[dict], prompts: list[list[int]], inputs: list[str],
                        references: list[list[str]], recipe, *, encoder_decoder: bool) -> EvalResult:
    """Perplexity of the references, then generation scored with ROUGE-1/2/L/Lsum, BLEU, chrF and exact match.

    rows: input_ids/attention_mask/labels for the loss pass; prompts: token ids to
    generate from; inputs: the prompt texts shown in predictions.jsonl;
    references: one or more reference texts per example.
    """
    from adaptctl.evaluation.metrics import generation_scores, perplexity, rouge_per_example

    ev, precision = recipe.evaluate, recipe.train.precision
    pad_id = pad_token_id(tokenizer)
    losses = example_losses(model, rows, pad_id, encoder_decoder=encoder_decoder, batch_size=ev.batch_size,
                            precision=precision)
    total, count = sum(loss for loss, _ in losses), sum(n for _, n in losses)
    texts, speed = generate_texts(model, tokenizer, prompts, recipe, encoder_decoder=encoder_decoder,
                                  batch_size=ev.batch_size)
    rouge = rouge_per_example(texts, references)  # once: the metrics' means and each prediction's score
    scores, signatures = generation_scores(texts, references, rouge)
    metrics = {"loss": total / count if count else float("nan"), "perplexity": perplexity(total, count), **scores}
    extras, per_answer = _answer_scores(metrics, texts, references, getattr(ev, "answer_pattern", None))
    per_example = [round(example["rougeL"], 6) for example in rouge]  # ROUGE-L ignores the rougeLsum line breaks
    predictions = []
    for text, refs, pred, score, (loss, n) in zip(inputs, references, texts, per_example, losses):
        row = {"input": text, "reference": refs[0], "prediction": pred, "score": score,
               "perplexity": round(math.exp(loss / n), 4) if n else None}
        if len(refs) > 1:
            row["references"] = refs
        predictions.append(row)
    for row, found in zip(predictions, per_answer or []):  # the answers the pattern found (None: no match)
        row.update(found)
    return EvalResult(metrics=metrics, predictions=predictions,
                      examples_per_second=speed["generation_examples_per_second"],
                      extras={**speed, "reference_tokens": count, "signatures": signatures, **extras})


def _answer_scores(metrics: dict, texts: list[str], references: list[list[str]], pattern: str | None):
    """Generative QA: token F1 (SQuAD) beside exact_match into `metrics`; with evaluate.answer_pattern both
    over the answers it extracts.  Returns (extras, each example's answers or None)."""
    from adaptctl.evaluation.metrics import answer_metrics, squad_metrics

    if pattern is None:
        metrics["f1"] = squad_metrics(texts, references)["f1"]
        return {}, None
    qa, per_answer = answer_metrics(texts, references, pattern)
    metrics.update(exact_match=qa["exact_match"], f1=qa["f1"])
    counts = {"pattern": pattern, "unmatched": qa["unmatched"], "unmatched_references": qa["unmatched_references"],
              "examples": len(texts)}
    return {"answers": counts}, per_answer


def evaluate_perplexity(model, tokenizer, rows: list[dict], inputs: list[str], recipe) -> EvalResult:
    """Plain text (continued pretraining): the loss and perplexity of every token, nothing to generate."""
    from adaptctl.evaluation.metrics import perplexity

    start = time.monotonic()
    losses = example_losses(model, rows, pad_token_id(tokenizer), encoder_decoder=False,
                            batch_size=recipe.evaluate.batch_size, precision=recipe.train.precision)
    seconds = time.monotonic() - start
    total, count = sum(loss for loss, _ in losses), sum(n for _, n in losses)
    # score: the geometric-mean probability of the example's tokens (1 / perplexity), so higher is better.
    predictions = [{"input": text[:500], "reference": None, "prediction": None,
                    "score": round(math.exp(-loss / n), 6) if n else 0.0,
                    "perplexity": round(math.exp(loss / n), 4) if n else None}
                   for text, (loss, n) in zip(inputs, losses)]
    return EvalResult(metrics={"loss": total / count if count else float("nan"), "perplexity": perplexity(total, count)},
                      predictions=predictions, examples_per_second=len(rows) / seconds if seconds > 0 else None,
                      extras={"reference_tokens": count})


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends an answer: the tokenizer's eos and the model's generation config's."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(i for i in ids if i is not None))
