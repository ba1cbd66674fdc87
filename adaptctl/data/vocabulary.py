"""Domain vocabulary (model.add_tokens): words added to the tokenizer as whole tokens, their embeddings
started at the mean of the pieces the base tokenizer cut them into, and fertility (tokens per word)
to show what it changed.

`{from_data: N}` mines the N words of the training text that save the most tokens: frequency x
(pieces - 1), the tokens a corpus spends on the word beyond one.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

VOCABULARY_FILE = "vocabulary.json"   # in prepare/: the added words, their old pieces, fertility before/after
TOKENIZER_FOLDER = "tokenizer"        # in prepare/: the extended tokenizer that train and evaluate load
MIN_WORD_LENGTH = 4                   # shorter words are common enough to have tokens of their own, or noise


def words_of(text: str, tokenizer) -> list[str]:
    """The words of a text as the tokenizer sees them: its normalizer (lower-casing for uncased BERT) and
    pre-tokenizer (whitespace and punctuation), without any byte-level markers."""
    backend = tokenizer.backend_tokenizer
    normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
    pieces = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [(w, None) for w in normalized.split()]
    return [w.replace("Ġ", "").replace("▁", "") for w, _ in pieces if w.replace("Ġ", "").replace("▁", "").strip()]


def pieces(word: str, tokenizer) -> list[int]:
    return tokenizer(word, add_special_tokens=False)["input_ids"]


def mine(texts: list[str], tokenizer, count: int) -> list[str]:
    """The `count` alphabetic words that save the most tokens if each became one token."""
    frequency = Counter(w for text in texts for w in words_of(text, tokenizer)
                        if len(w) >= MIN_WORD_LENGTH and w.isalpha())
    saved = {w: n * (len(pieces(w, tokenizer)) - 1) for w, n in frequency.items()}
    ranked = sorted((w for w, s in saved.items() if s > 0), key=lambda w: (-saved[w], w))
    return ranked[:count]


def fertility(texts: list[str], tokenizer) -> float:
    """Tokens per word over the texts (special tokens not counted)."""
    words = sum(len(words_of(t, tokenizer)) for t in texts)
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else 0
    return round(tokens / words, 4) if words else 0.0


def extend(tokenizer, words: list[str]) -> dict[str, list[int]]:
    """Adds the words the tokenizer does not already keep whole; -> {word: its pieces before}."""
    new = {w: pieces(w, tokenizer) for w in dict.fromkeys(words) if len(pieces(w, tokenizer)) > 1}
    tokenizer.add_tokens(list(new))
    return new


def write(folder: Path, tokenizer, added: dict, before: float, after: float) -> dict:
    """prepare/tokenizer/ and prepare/vocabulary.json; -> the stats.json entry."""
    tokenizer.save_pretrained(str(folder / TOKENIZER_FOLDER))
    record = {"added": added, "fertility_before": before, "fertility_after": after}
    (folder / VOCABULARY_FILE).write_text(json.dumps(record, indent=2))
    return {"added_tokens": len(added), "fertility_before": before, "fertility_after": after,
            "words": list(added)[:50]}


def grow_embeddings(model, tokenizer, added: dict[str, list[int]]):
    """The model's embeddings resized to the extended tokenizer, each new row (input, and output where
    untied) the mean of the word's old piece rows.  Raises ValueError where the model cannot be resized."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    try:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    except (NotImplementedError, AttributeError) as exc:
        raise ValueError(f"{type(model).__name__} cannot resize its token embeddings ({exc})") from None
    tables = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != tables[0].data_ptr():
        tables.append(output.weight)
    # a masked-LM decoder's bias grows too, with uninitialised (possibly non-finite) entries: set them as well
    bias = getattr(output, "bias", None) if output is not None else None
    with torch.no_grad():
        for word, ids in added.items():
            new_id = tokenizer.convert_tokens_to_ids(word)
            if new_id >= old:  # a word kept whole before needs no new row
                for table in tables:
                    table[new_id] = table[ids].mean(dim=0)
                if bias is not None and bias.shape[0] > new_id:
                    bias[new_id] = bias[ids].mean()
    return model


def read_added(prepare_folder: Path) -> dict[str, list[int]]:
    try:
        return json.loads((Path(prepare_folder) / VOCABULARY_FILE).read_text())["added"]
    except (OSError, ValueError, KeyError):
        return {}


def tokenizer_path(prepare_folder: Path, model_path: Path) -> Path:
    """Where a run's tokenizer is: prepare's extended one (model.add_tokens), else the base model's."""
    extended = Path(prepare_folder) / TOKENIZER_FOLDER
    return extended if extended.is_dir() else Path(model_path)
