"""Preference alignment of causal LMs (DPO, IPO, ORPO, KTO, SimPO) through TRL's trainers.

Data: `data.prompt`, `data.chosen`, `data.rejected` templates over a file's columns; or, without
`data.prompt`, whole transcripts in `chosen` and `rejected` that share every turn but the last
assistant reply (Anthropic HH-RLHF: "\\n\\nHuman: ...\\n\\nAssistant: ..."), split at their last
"\\n\\nAssistant:" into the prompt and the two replies.  A pair whose transcripts differ before that
point, that has no assistant turn, or whose replies are empty or identical is refused at its line.

With `data.chat_template: true` the prompt becomes chat messages (a transcript's Human/Assistant
turns, or one user turn) rendered with the tokenizer's template and its generation prompt, and each
reply ends with the end-of-turn token; otherwise the texts are used as they are, each reply followed
by the eos token.

The losses are TRL's (`preference.loss`): dpo and ipo are DPOTrainer's `loss_type` sigmoid and ipo,
orpo is ORPOTrainer, simpo CPOTrainer's `loss_type="simpo"` (with cpo_alpha 0), kto KTOTrainer on
the pairs unpaired.  The reference (`preference.reference: base`) is the base model: with an adapter
method it is the policy with its adapter switched off (no second copy; TRL would otherwise add a
"ref" copy of the adapter, which is removed), with full fine-tuning a frozen copy loaded once.

Evaluation on held-out pairs: the sum of log-probabilities of each reply's tokens given the prompt,
`preference_accuracy` (the share of pairs whose chosen reply is the more likely) and `mean_margin`
(mean log p(chosen) - log p(rejected)); with an adapter, also DPO's implicit reward
beta * (margin - the reference's margin): `reward_accuracy` and `reward_margin`.  The baseline (the
base model) gets the same figures.  The model also replies to the first REPLIES held-out prompts
(generation is the slow part); `reply_tokens` is their mean length (DPO tends to lengthen replies).
"""

from __future__ import annotations

import re

from adaptctl.data.columns import RowError, without_slices
from adaptctl.data.tokens import pad_token_id
from adaptctl.tasks.spec import TaskSpec, TrainerPlan, ZeroShot
from adaptctl.training.reference import base_as_reference

ASSISTANT = "\n\nAssistant:"   # where an HH-RLHF transcript's assistant turn begins
TURN = re.compile(r"\n\n(Human|Assistant):")
METRICS = ("preference_accuracy", "mean_margin", "reward_accuracy", "reward_margin", "reply_tokens")
TEXT = ("prompt", "chosen", "rejected")   # the columns TRL's trainers read
REPLIES = 16   # held-out prompts the model replies to (report.md shows them; reply_tokens is their mean length)


def templates(data, columns=()) -> dict:
    return {"prompt": data.prompt, "chosen": data.chosen, "rejected": data.rejected}


# ------------------------------------------------------------ canonical columns
def canonicalize(ds, recipe, source: str):
    """Rows with prompt, chosen, rejected (the raw texts); a bad pair raises RowError (prepare locates it)."""
    from adaptctl.data.columns import check_columns, render

    wanted = {k: v for k, v in templates(recipe.data).items() if v is not None}
    check_columns(wanted, ds.column_names, source)

    def to_canonical(batch, indices):
        out = {"prompt": [], "chosen": [], "rejected": []}
        for values, index in zip(zip(*batch.values()), indices):
            row = dict(zip(batch, values))
            texts = {col: render(t, row) for col, t in wanted.items()}
            prompt, chosen, rejected = split_pair(texts, index)
            out["prompt"].append(prompt)
            out["chosen"].append(chosen)
            out["rejected"].append(rejected)
        return out

    ds = ds.map(to_canonical, batched=True, with_indices=True, remove_columns=without_slices(ds.column_names),
                desc="read pairs")
    return ds, {}


def split_pair(texts: dict, index: int) -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) of one row; whole transcripts split at their last assistant turn."""
    chosen, rejected = texts["chosen"], texts["rejected"]
    if "prompt" in texts:
        prompt = texts["prompt"]
    else:
        cut_chosen, cut_rejected = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
        if min(cut_chosen, cut_rejected) < 0:
            which = "chosen" if cut_chosen < 0 else "rejected"
            raise RowError(index, f"data.{which}: the transcript has no assistant turn ({ASSISTANT.strip()!r})",
                           "give whole transcripts of Human:/Assistant: turns, or set data.prompt")
        prompt = chosen[:cut_chosen + len(ASSISTANT)]
        if rejected[:cut_rejected + len(ASSISTANT)] != prompt:
            raise RowError(index, "data.chosen and data.rejected do not share the conversation before their last "
                                  "assistant reply", "a preference pair compares two replies to one conversation")
        chosen, rejected = chosen[len(prompt):], rejected[cut_rejected + len(ASSISTANT):]
    if not chosen.strip() or not rejected.strip():
        raise RowError(index, f"data.{'chosen' if not chosen.strip() else 'rejected'}: the reply is empty",
                       "drop the pair: an empty reply teaches nothing")
    if chosen.strip() == rejected.strip():
        raise RowError(index, "data.chosen and data.rejected are the same reply",
                       "drop the pair: identical replies express no preference")
    return prompt, chosen, rejected


def transcript_messages(prompt: str) -> list[dict]:
    """A prompt as chat messages: an HH transcript's Human/Assistant turns (the open last assistant turn
    dropped), or the whole text as one user turn."""
    parts = TURN.split(prompt)
    if len(parts) < 3:
        return [{"role": "user", "content": prompt.strip()}]
    roles = {"Human": "user", "Assistant": "assistant"}
    messages = [{"role": roles[who], "content": text.strip()} for who, text in zip(parts[1::2], parts[2::2])]
    return messages[:-1] if messages[-1]["role"] == "assistant" and not messages[-1]["content"] else messages


# ----------------------------------------------------------------- tokenizing
def model_texts(prompts: list[str], replies: list[list[str]], tokenizer, data) -> tuple[list[str], list[list[str]]]:
    """The prompt and reply texts the model reads: chat-rendered with data.chat_template, else as they are;
    each reply ends with the end-of-turn (eos) token."""
    eos = tokenizer.eos_token or ""
    if data.chat_template:
        from adaptctl.tasks.conversation import render, use_template

        use_template(tokenizer, data)
        prompts = [render(tokenizer, transcript_messages(p), generation_prompt=True) for p in prompts]
        return prompts, [[r.strip() + eos for r in pair] for pair in replies]
    return prompts, [[r if r.endswith(eos) else r + eos for r in pair] for pair in replies]


def tokenize(dataset, tokenizer, recipe, label2id: dict):
    """TRL's text columns (prompt, chosen, rejected as the model reads them), `input` (the raw prompt, for
    reports), and the token ids evaluate scores, cut as TRL's collator cuts them (keep the start).  Pairs
    whose prompt alone fills data.max_length are dropped, as TRL drops them, and counted."""
    pad_token_id(tokenizer)
    max_length = recipe.data.max_length

    def encode(batch):
        prompts, pairs = model_texts(batch["prompt"], list(zip(batch["chosen"], batch["rejected"])), tokenizer,
                                     recipe.data)
        out = {"input": batch["prompt"], "prompt": prompts, "chosen": [c for c, _ in pairs],
               "rejected": [r for _, r in pairs], "prompt_ids": [], "chosen_ids": [], "rejected_ids": [],
               "num_tokens": [], "truncated": []}
        for prompt, (chosen, rejected) in zip(prompts, pairs):
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = [tokenizer(prompt + reply)["input_ids"][len(prompt_ids):] for reply in (chosen, rejected)]
            longest = len(prompt_ids) + max(len(i) for i in ids)
            out["prompt_ids"].append(prompt_ids)
            out["chosen_ids"].append(ids[0][:max(max_length - len(prompt_ids), 0)])
            out["rejected_ids"].append(ids[1][:max(max_length - len(prompt_ids), 0)])
            out["num_tokens"].append(min(longest, max_length))
            out["truncated"].append(longest > max_length)
        return out

    encoded = dataset.map(encode, batched=True, batch_size=1000, desc="tokenize pairs")
    kept = encoded.filter(lambda row: len(row["prompt_ids"]) < max_length, desc="drop prompts over max_length")
    if len(kept) < len(encoded):
        from adaptctl.core import console

        console.warn(f"prepare: {len(encoded) - len(kept)} pairs dropped: their prompt alone fills "
                     f"data.max_length={max_length} tokens (TRL's trainers drop them too)")
    return kept


def collator(tokenizer, recipe):
    return None  # TRL's trainers pad their own (chosen and rejected in one batch)


# ----------------------------------------------------------------- the trainer
def trainer(recipe, model) -> TrainerPlan:
    """TRL's trainer and config for preference.loss."""
    settings = recipe.preference
    common = {"beta": settings.beta, "max_length": recipe.data.max_length}
    if settings.loss in ("dpo", "ipo"):
        from trl import DPOConfig, DPOTrainer

        loss_type = ["sigmoid" if settings.loss == "dpo" else "ipo"]
        return TrainerPlan(base_as_reference(DPOTrainer), DPOConfig, {**common, "loss_type": loss_type}, TEXT)
    if settings.loss == "kto":
        from trl import KTOConfig, KTOTrainer

        return TrainerPlan(base_as_reference(KTOTrainer), KTOConfig, common, TEXT)
    if settings.loss == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return TrainerPlan(ORPOTrainer, ORPOConfig, common, TEXT)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    return TrainerPlan(CPOTrainer, CPOConfig, {**common, "loss_type": "simpo", "cpo_alpha": 0.0}, TEXT)


# ------------------------------------------------------------------ evaluation
def reply_logps(model, tokenizer, split, recipe) -> tuple[list[float], list[float]]:
    """Sum of log-probabilities of the chosen and of the rejected reply's tokens, given the prompt."""
    from adaptctl.evaluation.generation import example_losses

    out = []
    for column in ("chosen_ids", "rejected_ids"):
        rows = [{"input_ids": p + r, "labels": [-100] * len(p) + r} for p, r in zip(split["prompt_ids"], split[column])]
        losses = example_losses(model, rows, pad_token_id(tokenizer), encoder_decoder=False,
                                batch_size=recipe.evaluate.batch_size, precision=recipe.train.precision)
        out.append([-total for total, _ in losses])
    return out[0], out[1]


def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """Preference accuracy and margin of the model (and its implicit reward against the adapter-free base,
    for an adapter model), and a generated reply to every held-out prompt."""
    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.generation import generate_texts

    chosen, rejected = reply_logps(model, tokenizer, split, recipe)
    margins = [c - r for c, r in zip(chosen, rejected)]
    metrics = {"preference_accuracy": _share(m > 0 for m in margins), "mean_margin": _mean(margins)}
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            ref_chosen, ref_rejected = reply_logps(model, tokenizer, split, recipe)
        beta = recipe.preference.beta
        rewards = [beta * (m - (c - r)) for m, c, r in zip(margins, ref_chosen, ref_rejected)]
        metrics.update(reward_accuracy=_share(x > 0 for x in rewards), reward_margin=_mean(rewards))
    shown = list(split["prompt_ids"])[:REPLIES]
    replies, speed = generate_texts(model, tokenizer, shown, recipe, encoder_decoder=False,
                                    batch_size=recipe.evaluate.batch_size)
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in replies]
    metrics["reply_tokens"] = _mean(lengths)
    replies += [""] * (len(margins) - len(replies))
    predictions = [{"input": prompt, "reference": _plain(c, tokenizer), "rejected": _plain(r, tokenizer),
                    "prediction": reply, "score": round(m, 4)}
                   for prompt, c, r, reply, m in zip(split["input"], split["chosen"], split["rejected"], replies, margins)]
    return EvalResult(metrics=metrics, predictions=predictions, examples_per_second=speed["generation_examples_per_second"], extras={"margins": [round(m, 4) for m in margins]})


def _plain(text: str, tokenizer) -> str:
    return text.removesuffix(tokenizer.eos_token or "").strip()


def _share(flags) -> float:
    flags = list(flags)
    return round(sum(flags) / len(flags), 6) if flags else 0.0


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 6) if values else 0.0


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """A reply to each prompt (a transcript or plain text), rendered as training rendered prompts."""
    from adaptctl.evaluation.generation import generate_texts

    outputs, _ = generate_texts(model, tokenizer, prompt_ids(tokenizer, texts, recipe), recipe, encoder_decoder=False,
                                batch_size=batch_size)
    return [{"prediction": text} for text in outputs]


def prompt_ids(tokenizer, texts: list[str], recipe) -> list[list[int]]:
    """The token ids of each prompt (a transcript or plain text) as training rendered and cut prompts."""
    from adaptctl.data.tokens import fit

    prompts, _ = model_texts(texts, [[] for _ in texts], tokenizer, recipe.data)
    return [fit(tokenizer(p)["input_ids"], [], recipe.data.max_length)[0] for p in prompts]


def data_problems(data: dict) -> list:
    return [(("data", key), f"task preference needs data.{key}",
             f"name the column of the {key} replies, e.g. '{{{key}}}' (HH-RLHF transcripts: chosen and rejected)")
            for key in ("chosen", "rejected") if data.get(key) is None]


SPEC = TaskSpec(
    name="preference", summary="preference alignment of a causal LM on chosen/rejected replies "
                               "(DPO, IPO, ORPO, KTO, SimPO through TRL)",
    auto_class="AutoModelForCausalLM", peft_task_type="CAUSAL_LM", pipeline_tag="text-generation",
    label_names=(), output_names=("logits",), per_example_loss=True, generates=True, has_label_map=False,
    templates=templates, canonicalize=canonicalize, tokenize=tokenize, collator=collator, evaluate=evaluate,
    predict=predict, prompt_ids=prompt_ids, data_problems=data_problems, metrics=METRICS, input_field=lambda data: "prompt",
    head_names=("lm_head",), fresh_head=lambda path: False,  # the language-model head is the checkpoint's own
    starter={"model": "HuggingFaceTB/SmolLM2-135M-Instruct",
             "data": {"source": "data/pairs.jsonl", "chosen": "{chosen}", "rejected": "{rejected}",
                      "chat_template": True, "max_length": 512}},
    zero_shot=ZeroShot(evaluate, model_task="preference", words=" (log-probabilities of the same replies)"),
    trainer=trainer,
)
