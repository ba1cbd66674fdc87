"""Token bookkeeping shared by the tasks and the evaluation loops."""

from __future__ import annotations

# The one tuple of the columns a model's forward takes, for every task: the Trainer and the
# evaluation loops keep these and drop the bookkeeping columns (num_tokens, truncated, texts).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
ENCODER_INPUTS = MODEL_INPUTS[:3]   # what an encoder reads, without the training targets


def pad_token_id(tokenizer) -> int:
    """The one pad-token rule: the tokenizer's pad token, or its end token where it has none (GPT-2
    style); padding is masked, so which token pads does not change a loss or a generation."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.pad_token_id


def encoding_stats(encoded, max_length: int) -> dict:
    """Per-row token counts and truncation flags from a fast tokenizer's output."""
    overflow = [bool(e.overflowing) for e in encoded.encodings] if encoded.encodings else None
    lengths = [len(ids) for ids in encoded["input_ids"]]
    if overflow is None:  # slow tokenizer: a row that fills max_length was probably cut
        overflow = [n >= max_length for n in lengths]
    return {"num_tokens": lengths, "truncated": overflow}


def fit(prompt: list[int], response: list[int], max_length: int, head: int = 0) -> tuple[list[int], list[int], bool]:
    """Cut a prompt/response pair to max_length tokens: the response keeps up to half of max_length (all
    of it when the prompt leaves room) and is cut at its end only beyond that; the prompt is cut from the
    left, keeping its end and its first `head` tokens (BOS, a chat-template header)."""
    if len(prompt) + len(response) <= max_length:
        return prompt, response, False
    response = response[:max(max_length - len(prompt), max_length // 2)]
    room = max_length - len(response)
    head = min(head, max(room - 1, 0))  # keep at least one prompt token after the header
    prompt = prompt[:head] + (prompt[len(prompt) - (room - head):] if room > head else [])
    return prompt, response, True
