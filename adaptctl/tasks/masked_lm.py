"""Masked language modelling (AutoModelForMaskedLM): continued pretraining of an encoder (BERT, MiniLM)
on the plain text of a domain, the DAPT/TAPT step before fine-tuning it on a task.

- Data: `data.text` only; every row is one document.  A document longer than `data.max_length` is cut
  into consecutive windows (each with the encoder's [CLS]/[SEP]), so no text is lost.
- Masking: whole words (transformers' DataCollatorForLanguageModeling with whole_word_mask, which finds
  word boundaries from the tokenizer's character offsets: prepare keeps them as `offset_mapping`); a
  word is picked with probability `data.mlm_probability` and all its pieces become [MASK].
- A base without a masked-LM head (all-MiniLM-L6-v2 is a bare BertModel) gets a fresh head, its
  decoder tied to the input embeddings; the log says so (on_load below).
- Evaluation: masked perplexity, exp(mean cross-entropy over the masked tokens) on held-out rows with a
  FIXED mask drawn from the recipe's seed, one row at a time, so the base model (the baseline) and the
  adapted model are scored on the same masked positions.
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.models.config import architectures, is_causal_lm, model_config
from adaptctl.tasks.spec import TaskSpec, required_fields

METRICS = ("perplexity", "loss")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LOSS_TOKENS_PER_BATCH = 2048   # a batch's logits are tokens x vocabulary floats: 2048 x 30522 x 4 B = 250 MB
HEAD_PREFIXES = ("cls.", "lm_head.", "vocab_", "generator_", "pred_layer")   # masked-LM head weights in a checkpoint


def templates(data, columns=()) -> dict:
    return {"text": data.text}


# ----------------------------------------------------------------- tokenizing
def tokenize(dataset, tokenizer, recipe, label2id: dict):
    return dataset.map(lambda b: encode(b["text"], tokenizer, recipe.data.max_length), batched=True,
                       batch_size=1000, remove_columns=dataset.column_names, desc="tokenize")


def encode(texts: list[str], tokenizer, max_length: int) -> dict:
    """Windows of max_length tokens (special tokens included) with their character offsets, which
    whole-word masking reads to keep a word's pieces together."""
    if not tokenizer.is_fast:
        raise UserError("task masked-lm: whole-word masking needs a fast tokenizer (tokenizer.json), and this "
                        "model has a slow one", hint="use a model folder with tokenizer.json")
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
    out = {key: encoded[key] for key in encoded.keys() if key in INPUTS or key == "offset_mapping"}
    out["offset_mapping"] = [[list(pair) for pair in row] for row in out["offset_mapping"]]
    out["text"] = tokenizer.batch_decode(encoded["input_ids"], skip_special_tokens=True)
    out["num_tokens"] = [len(ids) for ids in encoded["input_ids"]]
    out["truncated"] = [False] * len(encoded["input_ids"])   # windows keep every token
    return out


# -------------------------------------------------------------------- masking
class WholeWordMasking:
    """Pads a batch and masks whole words in it (transformers' masking, given the offsets it needs:
    tokenizer.pad cannot pad offset_mapping, so it is padded here).  `seed` fixes the masks."""

    def __init__(self, tokenizer, probability: float, seed: int | None = None, pad_to_multiple_of: int | None = 8):
        import warnings

        from transformers import DataCollatorForLanguageModeling

        with warnings.catch_warnings():  # "random replacement not supported": whole words are always [MASK]ed
            warnings.simplefilter("ignore")
            self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, whole_word_mask=True,
                                                          mlm_probability=probability, seed=seed)
        self.tokenizer, self.pad_to_multiple_of, self.seed = tokenizer, pad_to_multiple_of, seed

    def __call__(self, rows: list[dict]) -> dict:
        import numpy as np
        import torch

        features = [{k: row[k] for k in INPUTS if k in row} for row in rows]
        batch = self.tokenizer.pad(features, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt")
        width = batch["input_ids"].shape[1]
        offsets = np.zeros((len(rows), width, 2), dtype=np.int64)
        for i, row in enumerate(rows):
            found = np.asarray(row["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            offsets[i, :len(found)] = found
        special = torch.tensor([self.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                                for ids in batch["input_ids"].tolist()])
        if self.seed is not None and self.masker.generator is None:
            self.masker.create_rng("pt")
        batch["input_ids"], batch["labels"] = self.masker.torch_mask_tokens(
            batch["input_ids"].clone(), special_tokens_mask=special, offset_mapping=offsets)
        if not (batch["labels"] != -100).any():
            self._mask_one(batch, special)
        return dict(batch)

    def _mask_one(self, batch, special):
        """A batch of short rows (length bucketing groups them) can draw no word at all; its loss would be
        0/0 = nan, so one ordinary token, drawn from the same generator, is masked instead."""
        import torch

        candidates = (special == 0).nonzero()
        if len(candidates) == 0:
            return
        row, col = candidates[torch.randint(len(candidates), (1,), generator=self.masker.generator).item()].tolist()
        batch["labels"][row, col] = batch["input_ids"][row, col]
        batch["input_ids"][row, col] = self.tokenizer.mask_token_id


def collator(tokenizer, recipe):
    # unseeded: the Trainer's seeded global generator draws new masks every epoch
    return WholeWordMasking(tokenizer, recipe.data.mlm_probability)


def fixed_masks(split, tokenizer, recipe) -> list[dict]:
    """Every held-out row masked once with a generator seeded by the recipe's seed, row by row, so a
    row's mask depends on neither the batch it is scored in nor the model that scores it."""
    masking = WholeWordMasking(tokenizer, recipe.data.mlm_probability, seed=recipe.seed, pad_to_multiple_of=None)
    rows = split.select_columns([c for c in (*INPUTS, "offset_mapping") if c in split.column_names]).to_list()
    return [{k: v[0].tolist() for k, v in masking([row]).items()} for row in rows]


# ----------------------------------------------------------------- evaluation
def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """Masked perplexity over the fixed masks: exp(sum of masked-token losses / masked tokens)."""
    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.inference import run_batches
    from adaptctl.evaluation.metrics import perplexity

    rows = fixed_masks(split, tokenizer, recipe)
    longest = max((len(r["input_ids"]) for r in rows), default=1)
    size = max(1, min(recipe.evaluate.batch_size, LOSS_TOKENS_PER_BATCH // longest))
    losses, speed = run_batches(rows, lambda b: _pad(b, tokenizer), lambda b: _masked_losses(model, b), size,
                                recipe.train.precision, desc="masked loss", model=model)
    total, count = sum(loss for loss, _ in losses), sum(n for _, n in losses)
    # score: the geometric-mean probability of the row's masked tokens (1 / its perplexity): higher is better;
    # a row too short to have a word masked has nothing mispredicted (1.0), so it is not among the worst
    predictions = [{"input": text[:500], "reference": None, "prediction": None, "masked_tokens": n,
                    "score": round(_exp(-loss / n), 6) if n else 1.0,
                    "perplexity": round(_exp(loss / n), 4) if n else None}
                   for text, (loss, n) in zip(split["text"], losses)]
    metrics = {"loss": total / count if count else float("nan"), "perplexity": perplexity(total, count)}
    extras = {"masking": {"masked_tokens": count, "mlm_probability": recipe.data.mlm_probability,
                          "seed": recipe.seed, "whole_word": True}}
    return EvalResult(metrics=metrics, predictions=predictions, examples_per_second=speed, extras=extras)


def _exp(value: float) -> float:
    import math

    return math.exp(min(value, 700.0))  # a fresh head's losses can overflow exp


def _pad(rows: list[dict], tokenizer) -> dict:
    import torch

    batch = tokenizer.pad([{k: r[k] for k in INPUTS if k in r} for r in rows], return_tensors="pt")
    width = batch["input_ids"].shape[1]
    batch["labels"] = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in rows])
    return dict(batch)


def _masked_losses(model, batch) -> list[tuple[float, int]]:
    import torch

    labels = batch.pop("labels")
    logits = model(**batch).logits
    out = []
    for row_logits, row_labels in zip(logits, labels):
        scored = row_labels != -100
        loss = torch.nn.functional.cross_entropy(row_logits[scored].float(), row_labels[scored], reduction="sum")
        out.append((float(loss), int(scored.sum())))
    return out


# -------------------------------------------------------------------- predict
FILLS = 5   # candidates shown for each mask


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """`adaptctl predict`: fill-mask.  Each mask token in a text gets its FILLS likeliest tokens; the
    prediction is the text with every mask replaced by its likeliest token."""
    from transformers import DataCollatorWithPadding

    from adaptctl.evaluation.inference import run_batches

    encoded = tokenizer(texts, truncation=True, max_length=recipe.data.max_length)
    rows = [dict(zip(encoded.keys(), values)) for values in zip(*encoded.values())]
    mask_id = tokenizer.mask_token_id

    def forward(batch):
        probabilities = model(**batch).logits.float().softmax(-1)
        found = []
        for ids, probs in zip(batch["input_ids"], probabilities):
            top = probs[ids == mask_id].topk(FILLS, dim=-1)
            found.append([list(zip(tokenizer.convert_ids_to_tokens(i.tolist()), p.tolist()))
                          for p, i in zip(top.values, top.indices)])
        return found

    fills, _ = run_batches(rows, DataCollatorWithPadding(tokenizer), forward, batch_size, recipe.train.precision,
                           desc="predict", model=model)
    return [{"prediction": _filled(text, masks, tokenizer.mask_token),
             "fills": [[{"token": t, "score": round(p, 6)} for t, p in mask] for mask in masks]}
            for text, masks in zip(texts, fills)]


def _filled(text: str, masks: list, mask_token: str) -> str:
    for candidates in masks:
        text = text.replace(mask_token, candidates[0][0].removeprefix("##"), 1)
    return text


# ------------------------------------------------------------ the base model
def on_load(model, path: Path):
    """A base checkpoint without masked-LM head weights gets a fresh head: said, and its decoder tied to
    the input embeddings (the word vectors the encoder already knows, instead of a random vocabulary)."""
    if _has_head(Path(path)):
        return model
    console.info(f"masked-lm: the base model ({path}) has no masked-LM head; a fresh one is initialised, its decoder "
                 "tied to the input embeddings")
    model.config.tie_word_embeddings = True
    model.tie_weights()
    return model


def _has_head(path: Path) -> bool:
    import json

    from safetensors import safe_open

    names: list[str] = []
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = list(json.loads(index.read_text()).get("weight_map", {}))
    elif (path / "model.safetensors").is_file():
        with safe_open(str(path / "model.safetensors"), framework="pt") as weights:
            names = list(weights.keys())
    else:
        return True  # an adapter or a pickle folder: from_pretrained reports missing weights itself
    return any(name.split(".", 1)[-1].startswith(HEAD_PREFIXES) or name.startswith(HEAD_PREFIXES) for name in names)


def model_problem(path: Path) -> str | None:
    """Why the model folder cannot be trained as a masked LM (None: it can)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = model_config(path)
    model_type = config.get("model_type")
    if is_causal_lm(path) or (model_type and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES):
        kind = ", ".join(architectures(path)) or model_type
        return (f"task masked-lm needs an encoder (BERT-style) model, and this one is a {kind} "
                "(decoder-only, or a type transformers has no masked-LM class for)")
    return None


def method_problems(recipe, method) -> list:
    """An adapter saves neither the masked-LM head nor, on a bare encoder, the fresh head it was trained
    with: evaluate and export would reload the base with another random head."""
    if method.is_peft:
        return [(("method", "name"), f"task masked-lm trains the masked-LM head (fresh where the base has none), "
                                     f"and method {method.name} saves an adapter without it",
                 "use method full, or freeze (the last layers and the head)")]
    return []


def data_problems(data: dict) -> list:
    found = required_fields("masked-lm", ("text",), data)
    for key in ("prompt", "response", "label"):
        if data.get(key) is not None:
            found.append((("data", key), f"task masked-lm trains on data.text only; data.{key} is not used",
                          f"remove data.{key}"))
    return found


SPEC = TaskSpec(
    name="masked-lm", summary="encoder masked-language-model continued pretraining on plain domain text "
                              "(whole-word masking)",
    auto_class="AutoModelForMaskedLM", peft_task_type="FEATURE_EXTRACTION", pipeline_tag="fill-mask",
    label_names=("labels",), output_names=("logits",), per_example_loss=False, generates=False, has_label_map=False,
    templates=templates, canonicalize=None, tokenize=tokenize, collator=collator, evaluate=evaluate,
    predict=predict, data_problems=data_problems, metrics=METRICS, input_field=lambda data: "text",
    keeps_slices=lambda data: False,  # documents are cut into windows that keep no row columns
    starter={"model": "sentence-transformers/all-MiniLM-L6-v2", "method": {"name": "full"},
             "data": {"source": "data/domain.txt", "text": "{text}", "max_length": 128, "mlm_probability": 0.15}},
    collator_columns=("offset_mapping",), on_load=on_load, model_problem=model_problem,
    baseline_by_default=lambda data: True, recipe_problems=method_problems,  # the point of continued pretraining is its gain over the base
    general_text=lambda data: True, fresh_head=lambda path: not _has_head(Path(path)),
    head_names=("cls",),  # BERT's masked-LM head (cls.predictions): fresh on a bare encoder, it must train
)
