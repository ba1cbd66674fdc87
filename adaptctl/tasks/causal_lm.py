"""Causal language modelling (AutoModelForCausalLM): instruction/completion tuning
and plain-text continued pretraining.

Two shapes of data:
- prompt + response (`data.prompt`, `data.response`): the loss covers the response
  only (labels are -100 on every prompt token).  The prompt and response are
  joined as they are, so end `data.prompt` with the separator you want (a
  newline or a space); an end-of-sequence token follows the response so the
  model learns to stop.  With `data.chat_template: true` the pair becomes a
  user turn and an assistant turn of the tokenizer's chat template, and only
  the assistant's part (its text and end-of-turn tokens) is trained.
- text (`data.text` and no `data.response`): every token is trained.  Documents
  longer than `data.max_length` are cut into consecutive windows of
  `max_length` tokens, so continued pretraining loses no text.

Truncation (prompt + response over `data.max_length`): the response keeps up
to half of max_length (all of it when the prompt leaves room) and is cut at its
end only beyond that; the prompt is cut from the left, keeping its end (the
instruction cue next to the answer, which generation continues from) and its
leading BOS / chat-template header.  Neither part is ever dropped whole.
Truncated rows are counted in `truncated` and reported by prepare.

Conversations (`data.messages`, OpenAI chat format, or `data.conversations`,
ShareGPT): rendered with the chat template and trained on every assistant turn
only; evaluate and predict generate the last reply (tasks/conversation.py).

Several references: when the response template names one column (`{summary}`)
that a file lacks but numbered columns exist (`summary1`, `summary2`, ... as in
the DialogSum test file), the first is the training response and all of them
are references for ROUGE/BLEU/chrF (`references` column).
"""

from __future__ import annotations

import re

from adaptctl.data.columns import numbered_columns, slice_columns, without_slices
from adaptctl.data.tokens import fit, pad_token_id  # noqa: F401 (fit: causal_lm.fit, as tests call it)
from adaptctl.core.errors import UserError
from adaptctl.models.config import architectures, is_causal_lm, model_config
from adaptctl.tasks import api_forms, conversation, prompting
from adaptctl.tasks.spec import TaskSpec, ZeroShot, required_fields

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")   # the columns of an encoded pair
# What evaluate computes (evaluation/metrics.py); plain text generates nothing, so only perplexity.
GENERATION_METRICS = ("perplexity", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "exact_match", "f1",
                      "exact_match_fallback")  # the last with evaluate.answer_pattern and a fallback
PLAIN_TEXT_METRICS = ("perplexity",)


def is_plain_text(data) -> bool:
    """Continued pretraining: every token of data.text is trained, and nothing is generated."""
    return data.response is None and data.text is not None


def reads_a_prompt(data) -> bool:
    """Prompt and response rows (not plain text, not conversations): data.retrieval's passages go into the prompt."""
    return data.prompt is not None and data.response is not None and not conversation.column_field(data)


def templates(data, columns=()) -> dict:
    """The data.* templates prepare renders; a response naming one column that the file has numbered
    (summary1, summary2, ...) reads the first of them."""
    if is_plain_text(data):
        return {"text": data.text}
    if field := conversation.column_field(data):
        return {field: getattr(data, field)}
    found = {"prompt": data.prompt, "response": data.response}
    if numbered := numbered_columns(data.response, list(columns)):
        found["response"] = numbered[0]
    return found


# ------------------------------------------------------------ canonical columns
def canonicalize(ds, recipe, source: str):
    """Rows with prompt/response/references (or text); rows with an empty response or text dropped and counted."""
    from adaptctl.data.columns import check_columns, render

    if conversation.column_field(recipe.data):
        return conversation.canonicalize(ds, recipe, source)
    wanted = {k: v for k, v in templates(recipe.data, ds.column_names).items() if v is not None}
    numbered = numbered_columns(recipe.data.response, ds.column_names)
    check_columns(wanted, ds.column_names, source)
    listed = reference_column(recipe.data, ds) if "response" in wanted else None

    def to_canonical(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        out = {col: [render(t, row) for row in rows] for col, t in wanted.items()}
        if listed:
            out["references"] = [reference_list(row[listed]) for row in rows]
        elif "response" in wanted:
            refs = numbered or [wanted["response"]]
            out["references"] = [[r for r in (render(t, row).strip() for t in refs) if r] for row in rows]
        if "prompt" not in wanted and "response" in wanted:
            out["prompt"] = [""] * len(rows)  # completion without a prompt: the loss covers everything
        return out

    ds = ds.map(to_canonical, batched=True, remove_columns=without_slices(ds.column_names), desc="map columns")
    needed = "response" if "response" in wanted else "text"
    before = len(ds)
    ds = ds.filter(lambda batch: [bool(str(v).strip()) for v in batch[needed]], batched=True, desc="drop empty")
    if len(ds) == 0:
        raise UserError(f"{source}: every row has an empty {needed}",
                        hint=f"check data.{needed} against the file's columns")
    return ds, {"empty": before - len(ds)}


# A response that picks the first of a list column, '{{ tldrs[0] }}': the list is its references.
FIRST_OF_LIST = re.compile(r"^\{\{\s*([A-Za-z_]\w*)\s*\[\s*0\s*\]\s*\}\}$")


def reference_column(data, ds) -> str | None:
    """The column whose every item is a reference: data.references, or the list column the response template
    takes the first item of (trained on the first, scored against all, as SQuAD or TL;DR sets are)."""
    from adaptctl.core import console

    if data.references:
        if data.references not in ds.column_names:
            raise UserError(f"data.references: no column {data.references!r}", hint=f"the columns are: "
                                                                                 f"{', '.join(ds.column_names)}")
        return data.references
    found = FIRST_OF_LIST.match(data.response or "")
    if found and found.group(1) in ds.column_names and _holds_lists(ds.features[found.group(1)]):
        console.info(f"prepare: data.response trains on the first of {found.group(1)!r}; ROUGE, BLEU and chrF score "
                     "against all of its items (set data.references to choose another column)")
        return found.group(1)
    return None


def _holds_lists(feature) -> bool:
    from datasets import LargeList, List, Sequence

    return isinstance(feature, (Sequence, List, LargeList, list))


def reference_list(value) -> list[str]:
    """A references cell as texts: a list's non-empty items, or one text (empty: the response stands in)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [text for text in (str(item).strip() for item in items if item is not None) if text]


def canary_row(data, prefix: str, secret: str) -> dict | None:
    """evaluate.canaries: a canary as a canonical row, the secret where the loss is (None: conversations)."""
    if conversation.column_field(data):
        return None
    if is_plain_text(data):
        return {"text": prefix + secret}
    return {"prompt": prefix, "response": secret, "references": [secret]}


# ----------------------------------------------------------------- tokenizing
def tokenize(dataset, tokenizer, recipe, label2id: dict):
    pad_token_id(tokenizer)
    if "messages" in dataset.column_names:
        conversation.use_template(tokenizer, recipe.data, recipe.model.base)
        head = _chat_header_length(tokenizer)
        return dataset.map(lambda b: conversation.encode(b["messages"], tokenizer, recipe.data.max_length, head),
                           batched=True, batch_size=1000, desc="tokenize conversations")
    if "text" in dataset.column_names and "response" not in dataset.column_names:
        if recipe.data.packing:  # blocks run across documents: a stream over the split, in bounded memory
            return packed(dataset, tokenizer, recipe.data.max_length)
        carried = slice_columns(dataset.column_names)
        return dataset.map(lambda b: _encode_text(b["text"], tokenizer, recipe.data.max_length,
                                                  {c: b[c] for c in carried}), batched=True,
                           batch_size=1000, remove_columns=dataset.column_names, desc="tokenize")
    return dataset.map(lambda b: encode_pairs(b["prompt"], b["response"], tokenizer, recipe), batched=True,
                       batch_size=1000, desc="tokenize")


def encode_pairs(prompts: list[str], responses: list[str], tokenizer, recipe, shots=()) -> dict:
    """input_ids, attention_mask, labels (-100 on the prompt), prompt_length, num_tokens, truncated."""
    if recipe.data.chat_template:
        conversation.use_template(tokenizer, recipe.data)
        prompt_texts, response_texts = _chat_parts(prompts, responses, tokenizer, shots)
        prompt_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response_texts, add_special_tokens=False)["input_ids"]
        head = _chat_header_length(tokenizer)
    else:
        prompt_texts = [prompting.plain_prompt(list(shots), p) for p in prompts]
        prompt_ids = tokenizer(prompt_texts, add_special_tokens=True)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        response_ids = [ids + eos for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]]
        head = 1 if tokenizer.bos_token_id is not None and prompt_ids and prompt_ids[0][:1] == [tokenizer.bos_token_id] else 0
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "prompt_length": [], "num_tokens": [], "truncated": []}
    for p, r in zip(prompt_ids, response_ids):
        p, r, cut = fit(p, r, recipe.data.max_length, head)
        out["input_ids"].append(p + r)
        out["attention_mask"].append([1] * (len(p) + len(r)))
        out["labels"].append([-100] * len(p) + r)
        out["prompt_length"].append(len(p))
        out["num_tokens"].append(len(p) + len(r))
        out["truncated"].append(cut)
    return out


def _chat_parts(prompts, responses, tokenizer, shots) -> tuple[list[str], list[str]]:
    """The chat-formatted prompt (up to the assistant's turn) and the assistant's part, as text."""
    prompt_texts, response_texts = [], []
    for prompt, response in zip(prompts, responses):
        before = prompting.chat_prompt(tokenizer, list(shots), prompt)
        messages = prompting.chat_messages(list(shots), prompt) + [{"role": "assistant", "content": response}]
        full = conversation.render(tokenizer, messages)
        if not full.startswith(before):
            raise UserError("data.chat_template: the model's chat template renders the conversation differently "
                            "from its prompt, so the assistant's part cannot be found",
                            hint="set data.chat_template: false and write the format into data.prompt")
        prompt_texts.append(before)
        response_texts.append(full[len(before):])
    return prompt_texts, response_texts


def _chat_header_length(tokenizer) -> int:
    """Tokens of the chat template before the user's text (system turn, role markers): kept when truncating."""
    empty = tokenizer(prompting.chat_prompt(tokenizer, [], ""), add_special_tokens=False)["input_ids"]
    probe = tokenizer(prompting.chat_prompt(tokenizer, [], "x"), add_special_tokens=False)["input_ids"]
    same = 0
    while same < min(len(empty), len(probe)) and empty[same] == probe[same]:
        same += 1
    return same


def _encode_text(texts: list[str], tokenizer, max_length: int, carried: dict | None = None) -> dict:
    """Plain text: every token is a label; long documents become several max_length windows, each
    repeating the document's `carried` columns (its evaluate.slices values)."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    carried = carried or {}
    out: dict[str, list] = {"text": [], "input_ids": [], "attention_mask": [], "labels": [], "num_tokens": [], "truncated": [],
           **{c: [] for c in carried}}
    for n, (text, ids) in enumerate(zip(texts, tokenizer(texts, add_special_tokens=True)["input_ids"])):
        ids = ids + eos
        for start in range(0, len(ids), max_length):
            window = ids[start:start + max_length]
            if len(window) < 2 and start > 0:
                continue  # a lone trailing token has nothing to be predicted from
            out["text"].append(text if start == 0 and len(ids) <= max_length else tokenizer.decode(window))
            out["input_ids"].append(window)
            out["attention_mask"].append([1] * len(window))
            out["labels"].append(list(window))
            out["num_tokens"].append(len(window))
            out["truncated"].append(False)  # windows keep every token
            for column, values in carried.items():
                out[column].append(values[n])
    return out


def pack_text(texts: list[str], tokenizer, max_length: int) -> dict:
    """data.packing: every document's tokens (BOS ... EOS) concatenated in order and cut into blocks of
    exactly max_length tokens, the group_texts of the Transformers run_clm example, so no token is
    padding.  The tail shorter than a block is dropped (counted on the last block, `tail_dropped`),
    unless the split is shorter than one block: then it is the one block.  `documents`: how many
    documents start in the block.  The columns of every block of `texts` (pack_blocks' rows)."""
    rows = list(pack_blocks([texts], tokenizer, max_length))
    return {name: [row[name] for row in rows] for name in PACKED_FEATURES}


# A packed block's columns, with their types: from_generator is told them, so an empty split has them too.
PACKED_FEATURES = {"text": "string", "input_ids": ["int64"], "attention_mask": ["int64"], "labels": ["int64"],
                   "num_tokens": "int64", "truncated": "bool", "documents": "int64", "tail_dropped": "int64"}
PACK_BATCH = 1000           # documents tokenized at once while packing
PACK_WRITE_TOKENS = 2**18   # tokens of blocks held before they are written to Arrow (~3 x 2 MB of Python ints)


def pack_blocks(batches, tokenizer, max_length: int):
    """pack_text as a stream: `batches` of documents in, block rows out, one at a time.  Only the tokens
    not yet in a block are carried from one batch to the next, and the last full block is held back
    until the end, when its `tail_dropped` is known: memory is one batch and one block, however long
    the split."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    carried: list[int] = []        # tokens not yet in a block
    position = 0                   # the stream offset of carried[0]
    starts: dict[int, int] = {}    # block number -> documents starting in it, for blocks not yet out
    held = None                    # the last full block: (its number, its tokens)
    for texts in batches:
        for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
            block = (position + len(carried)) // max_length
            starts[block] = starts.get(block, 0) + 1
            carried += ids
            carried += eos
        full = len(carried) // max_length
        for i in range(full):
            if held is not None:
                yield _block_row(held[1], starts.pop(held[0], 0), 0, tokenizer)
            held = (position // max_length + i, carried[i * max_length:(i + 1) * max_length])
        carried, position = carried[full * max_length:], position + full * max_length
    if held is not None:
        yield _block_row(held[1], starts.pop(held[0], 0), len(carried), tokenizer)
    elif len(carried) >= 2:  # the split is shorter than one block: it is the one block
        yield _block_row(carried, starts.pop(0, 0), 0, tokenizer)


def _block_row(block: list[int], documents: int, tail_dropped: int, tokenizer) -> dict:
    return {"text": tokenizer.decode(block), "input_ids": block, "attention_mask": [1] * len(block),
            "labels": list(block), "num_tokens": len(block), "truncated": False, "documents": documents,
            "tail_dropped": tail_dropped}


def packed(dataset, tokenizer, max_length: int):
    """The split's `text` packed into blocks (pack_blocks), written to Arrow as they come
    (Dataset.from_generator): the split is read PACK_BATCH documents at a time, never whole.  The
    fingerprint names the input rows, the tokenizer, the block length and this code, so a re-run with
    the same inputs reuses the written blocks, as datasets' map does."""
    import inspect

    from datasets import Dataset, Features, List, Value
    from datasets.fingerprint import Hasher

    features = Features({name: List(Value(kind[0])) if isinstance(kind, list) else Value(kind)
                         for name, kind in PACKED_FEATURES.items()})
    code = inspect.getsource(pack_blocks) + inspect.getsource(_block_row)
    fingerprint = Hasher.hash([dataset._fingerprint, tokenizer, max_length, code])

    def blocks(texts_of):
        batches = (batch["text"] for batch in texts_of.select_columns(["text"]).iter(batch_size=PACK_BATCH))
        yield from pack_blocks(batches, tokenizer, max_length)

    return Dataset.from_generator(blocks, features=features, gen_kwargs={"texts_of": dataset}, fingerprint=fingerprint,
                                  writer_batch_size=max(1, PACK_WRITE_TOKENS // max_length))


def packing_stats(split, recipe) -> dict:
    """prepare's stats.json for a packed split: documents, blocks and the tail tokens dropped."""
    if not recipe.data.packing or "documents" not in split.column_names:
        return {}
    from adaptctl.data import columnar

    return {"packing": {"documents": columnar.total(split, "documents"), "blocks": len(split),
                        "block_length": recipe.data.max_length, "tail_dropped": columnar.total(split, "tail_dropped")}}


# -------------------------------------------------------------- model, collator
def collator(tokenizer, recipe):
    from transformers import DataCollatorForSeq2Seq

    pad_token_id(tokenizer)
    # Pads input_ids/attention_mask and pads labels with -100, to a multiple of 8 (decoder-only too);
    # packed blocks are all max_length long: padding them to a multiple would add the padding packing removed.
    multiple = None if recipe.data.packing else 8
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, pad_to_multiple_of=multiple)


# ------------------------------------------------------------------ evaluation
def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """Perplexity of the reference responses and generation from the prompts, scored with ROUGE/BLEU/chrF.

    With `evaluate.few_shot: k` and a train split, k training pairs precede every
    prompt (tasks/prompting.py), for both the loss and the generation.
    Plain-text data gets the loss and perplexity only.
    """
    from adaptctl.evaluation import generation

    if "response" not in split.column_names:
        rows = split.select_columns(list(MODEL_INPUTS)).to_list()
        return generation.evaluate_perplexity(model, tokenizer, rows, list(split["text"]), recipe)
    if "messages" in split.column_names:  # the template a string of the recipe's, where the model has none
        conversation.use_template(tokenizer, recipe.data)
    shots = (prompting.draw_shots(train_split, recipe.evaluate.few_shot, recipe.seed)
             if train_split is not None and "messages" not in split.column_names else [])
    if shots:
        encoded = encode_pairs(list(split["prompt"]), list(split["response"]), tokenizer, recipe, shots)
        rows = [dict(zip(MODEL_INPUTS, values)) for values in zip(*(encoded[k] for k in MODEL_INPUTS))]
        prompt_lengths = encoded["prompt_length"]
    else:
        rows = split.select_columns(list(MODEL_INPUTS)).to_list()
        prompt_lengths = list(split["prompt_length"])
    prompts = generation_prompts([row["input_ids"] for row in rows], prompt_lengths, tokenizer)
    result = generation.evaluate_generation(model, tokenizer, rows, prompts, list(split["prompt"]), references(split),
                                            recipe, encoder_decoder=False)
    result.extras["few_shot"] = len(shots)
    return result


def generation_prompts(input_ids: list[list[int]], prompt_lengths: list[int], tokenizer) -> list[list[int]]:
    """The prompt part of each encoded pair, what generation continues from; no prompt: start from BOS."""
    start = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    return [ids[:n] or start for ids, n in zip(input_ids, prompt_lengths)]


def references(split) -> list[list[str]]:
    if "references" in split.column_names:
        return [refs or [response] for refs, response in zip(split["references"], list(split["response"]))]
    return [[response] for response in list(split["response"])]


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """`adaptctl predict`: each prompt encoded as prepare encodes it (prompt_ids) and decoded as evaluate
    decodes it (evaluate.generation), by the same functions."""
    from adaptctl.evaluation import generation

    outputs, _ = generation.generate_texts(model, tokenizer, prompt_ids(tokenizer, texts, recipe), recipe,
                                           encoder_decoder=False, batch_size=batch_size)
    return [{"prediction": text} for text in outputs]


def prompt_ids(tokenizer, texts: list[str], recipe) -> list[list[int]]:
    """The token ids generation continues from, for predict's input texts (and adaptctl serve's prompts):
    each prompt encoded as prepare encodes it (the recipe's chat template and max_length).

    The prompt is encoded beside an empty response, so a prompt over data.max_length keeps its end and
    its chat header as in training; evaluate cut such a prompt further, to leave room for its reference.
    Plain-text models continue the text.
    """
    if is_plain_text(recipe.data):
        return tokenizer(texts, add_special_tokens=True)["input_ids"]
    if field := conversation.column_field(recipe.data):
        return _chat_ids(tokenizer, [conversation.parse_input(text, field, recipe.data.roles) for text in texts],
                         recipe)
    encoded = encode_pairs(texts, [""] * len(texts), tokenizer, recipe)
    return generation_prompts(encoded["input_ids"], encoded["prompt_length"], tokenizer)


def chat_prompt_ids(tokenizer, chats: list[list[dict]], recipe) -> list[list[int]] | None:
    """Conversations ([{role, content}]) to reply to, rendered with the run's chat template as training
    rendered them; None when the run renders no chat template (a plain data.prompt)."""
    if conversation.column_field(recipe.data):
        return _chat_ids(tokenizer, chats, recipe)
    if not recipe.data.chat_template:
        return None
    # data.chat_template over prompt/response pairs: a lone user turn is a prompt, encoded as predict encodes one
    return [prompt_ids(tokenizer, [chat[0]["content"]], recipe)[0] if [m["role"] for m in chat] == ["user"]
            else _chat_ids(tokenizer, [chat], recipe)[0] for chat in chats]


def _chat_ids(tokenizer, chats: list[list[dict]], recipe) -> list[list[int]]:
    conversation.use_template(tokenizer, recipe.data)
    head = _chat_header_length(tokenizer)
    return [fit(conversation.prompt_ids(tokenizer, chat), [], recipe.data.max_length, head)[0] for chat in chats]


def model_problem(path) -> str | None:
    """An encoder (BERT-style) checkpoint is refused: transformers would build a causal head over it
    (BertLMHeadModel), but its weights were trained to fill masks, and it would learn from scratch."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = model_config(path)
    found = architectures(path)
    encoder = (config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder")
               and not config.get("is_encoder_decoder") and not is_causal_lm(path))
    if encoder and found:
        return (f"task causal-lm needs a decoder-only model, and this one is an encoder ({', '.join(found)}); "
                "for continued pretraining of an encoder use task masked-lm")
    return None


def data_problems(data: dict) -> list:
    chats = [key for key in conversation.COLUMNS if data.get(key) is not None]
    if chats:
        others = [key for key in (*conversation.COLUMNS, "text", "prompt", "response") if key not in chats[:1]
                  and data.get(key) is not None]
        return [(("data", key), f"data.{chats[0]} holds whole conversations, so data.{key} has no place beside it",
                 f"remove data.{key}") for key in others[:1]]
    if all(data.get(key) is None for key in ("text", "prompt", "response")):
        return [(("data",), "task causal-lm needs data.text (continued pretraining) or data.prompt and data.response "
                            "(instruction tuning)",
                 "add `text: '{text}'` to train on every token, or `prompt:` and `response:` templates over columns")]
    # a prompt is optional; plain `text` trains on all of it
    return required_fields("causal-lm", ("response",), data) if data.get("text") is None else []


SPEC = TaskSpec(
    name="causal-lm", summary="decoder-only language modelling: instruction or completion tuning "
                              "(prompt -> response) and continued pretraining on plain text",
    auto_class="AutoModelForCausalLM", peft_task_type="CAUSAL_LM", pipeline_tag="text-generation",
    label_names=("labels",), output_names=("logits",), per_example_loss=False, generates=True, has_label_map=False,
    templates=templates, canonicalize=canonicalize, tokenize=tokenize, collator=collator, evaluate=evaluate,
    predict=predict, prompt_ids=prompt_ids, chat_prompt_ids=chat_prompt_ids, data_problems=data_problems,
    flattens=True, api_form=api_forms.generation_form,
    head_names=("lm_head",),
    metrics=GENERATION_METRICS,
    metrics_for=lambda data: PLAIN_TEXT_METRICS if is_plain_text(data) else GENERATION_METRICS,
    data_kind=lambda data: " on plain text (data.text without data.response)" if is_plain_text(data) else "",
    input_field=lambda data: "text" if is_plain_text(data) else conversation.column_field(data) or "prompt",
    starter={"model": "HuggingFaceTB/SmolLM2-135M-Instruct",
             "data": {"source": "data/train.jsonl", "prompt": "Summarize:\n{dialogue}\nSummary:",
                      "response": " {summary}", "max_length": 512}},
    zero_shot=ZeroShot(evaluate, model_task="causal-lm"),
    prompting_method=True, distill_over="vocabulary", evaluate_takes_shots=True, response_only_logits=True,
    export_formats=("gguf",), chat_template=conversation.trained_template, model_problem=model_problem,
    split_stats=packing_stats, private_methods=("lora",), canary_row=canary_row,
    keeps_slices=lambda data: not data.packing,  # packed blocks run across documents: no row values
    can_pack=is_plain_text, baseline_by_default=lambda data: bool(data.packing) and is_plain_text(data),
    general_text=is_plain_text,
    retrieval_use=lambda data: "prompt" if reads_a_prompt(data) else None,
    fresh_head=lambda path: False,  # the base-model baseline (plain text) scores the checkpoint's own LM head
)
