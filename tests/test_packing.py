"""data.packing (issue 17): causal-LM continued pretraining on documents concatenated and cut into
max_length blocks (run_clm's group_texts), so no token is padding; held-out perplexity beside the base."""

from __future__ import annotations

import json

import pytest

from tests.tiny_generation import save_tiny_llama, smol_tokenizer

DOCS = [f"Document {i}: " + " ".join(["the river", "a stone", "seven clouds", "green paper"][i % 4] for _ in range(i % 7 + 1))
        for i in range(40)]


def test_blocks_are_full_and_keep_every_token_in_order():
    from adaptctl.tasks.causal_lm import pack_text

    tokenizer = smol_tokenizer()
    packed = pack_text(DOCS, tokenizer, 16)
    stream = [t for ids in tokenizer(DOCS, add_special_tokens=True)["input_ids"] for t in ids + [tokenizer.eos_token_id]]
    assert all(len(block) == 16 for block in packed["input_ids"])
    assert len(packed["input_ids"]) == len(stream) // 16
    joined = [t for block in packed["input_ids"] for t in block]
    assert joined == stream[:len(joined)] and packed["tail_dropped"][-1] == len(stream) - len(joined) < 16
    assert packed["labels"] == packed["input_ids"] and all(all(m) for m in packed["attention_mask"])
    assert sum(packed["documents"]) == sum(1 for s in _starts(tokenizer) if s < len(joined))
    # a split shorter than one block is that one block, not nothing
    short = pack_text(DOCS[:1], tokenizer, 512)
    assert len(short["input_ids"]) == 1 and short["tail_dropped"] == [0]


def _one_batch_pack(texts, tokenizer, max_length: int) -> dict:
    """pack_text as it was when it mapped the whole split as one batch (main before issue 38): the oracle."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream, starts = [], []
    for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]:
        starts.append(len(stream))
        stream += ids + eos
    count = max(len(stream) // max_length, 1 if len(stream) >= 2 else 0)
    blocks = [stream[i * max_length:(i + 1) * max_length] for i in range(count)]
    documents = [0] * count
    for start in starts:
        if start // max_length < count:
            documents[start // max_length] += 1
    out = {"text": [tokenizer.decode(block) for block in blocks], "input_ids": blocks,
           "attention_mask": [[1] * len(block) for block in blocks], "labels": [list(block) for block in blocks],
           "num_tokens": [len(block) for block in blocks], "truncated": [False] * count, "documents": documents,
           "tail_dropped": [0] * count}
    if count:
        out["tail_dropped"][-1] = len(stream) - sum(out["num_tokens"])
    return out


@pytest.mark.parametrize("max_length", [5, 97, 4096])
def test_streamed_packing_gives_the_one_batch_blocks(max_length, monkeypatch):
    """The split read a few documents at a time, the tail carried from batch to batch, gives exactly the blocks
    of the whole split packed at once: a block spanning batches, a block longer than a batch's tokens, a split
    shorter than one block; through Dataset.from_generator as prepare writes it."""
    from datasets import Dataset

    from adaptctl.tasks import causal_lm

    tokenizer = smol_tokenizer()
    docs = DOCS + ["x"] + DOCS[::-3]
    expected = _one_batch_pack(docs, tokenizer, max_length)
    monkeypatch.setattr(causal_lm, "PACK_BATCH", 3)
    written = causal_lm.packed(Dataset.from_dict({"text": docs}), tokenizer, max_length)
    assert written.to_dict() == expected
    assert [list(causal_lm.pack_blocks([docs[i:i + 7] for i in range(0, len(docs), 7)], tokenizer, max_length))] == \
        [[dict(zip(expected, values)) for values in zip(*expected.values())]]


def _starts(tokenizer) -> list[int]:
    starts, at = [], 0
    for ids in tokenizer(DOCS, add_special_tokens=True)["input_ids"]:
        starts.append(at)
        at += len(ids) + 1
    return starts


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory):
    from adaptctl.core import console
    from adaptctl.cli import main

    root = tmp_path_factory.mktemp("packing")
    save_tiny_llama(root / "llama")
    (root / "docs.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in DOCS))
    (root / "recipe.yaml").write_text(json.dumps({
        "name": "packed", "task": "causal-lm", "seed": 1, "model": {"base": str(root / "llama")},
        "data": {"source": "docs.jsonl", "text": "{body}", "packing": True, "max_length": 20,
                 "splits": {"validation": 0.1, "test": 0.2}},
        "method": {"name": "full"},
        "train": {"max_steps": 8, "batch_size": 4, "learning_rate": 3e-3, "precision": "fp32", "validate": False}}))
    code = main(["run", str(root / "recipe.yaml"), "--run-dir", str(root / "run"), "--stages", "prepare,train,evaluate", "-q"])
    console.set_quiet(False)
    return code, root


def test_packed_run_trains_on_full_blocks_and_reports_perplexity_against_the_base(packed_run):
    from datasets import load_from_disk

    from adaptctl.recipe.loader import load_recipe
    from adaptctl.tasks.causal_lm import collator

    code, root = packed_run
    assert code == 0
    stats = json.loads((root / "run/prepare/stats.json").read_text())
    train = stats["splits"]["train"]
    assert train["packing"]["blocks"] == train["rows"] > 0 and train["packing"]["block_length"] == 20
    assert train["length_percentiles"]["p50"] == train["length_percentiles"]["p100"] == 20
    data = load_from_disk(str(root / "run/prepare/data"))
    rows = data["train"].select_columns(["input_ids", "attention_mask", "labels"]).to_list()[:4]
    batch = collator(smol_tokenizer(), load_recipe(root / "recipe.yaml").recipe)(rows)
    assert batch["input_ids"].shape == (4, 20)  # no padding at all: every position is a trained token
    assert batch["attention_mask"].all() and (batch["labels"] != -100).all()
    metrics = json.loads((root / "run/evaluate/metrics.json").read_text())
    ours, base = metrics["metrics"]["perplexity"], metrics["baseline"]["metrics"]["perplexity"]
    assert ours < base  # 8 steps on repetitive text beat the random base


def test_packing_refused_where_rows_must_stay_apart(tmp_path, run_cli):
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "a", "a": "b", "t": "c"}) + "\n")
    for task, data in (("causal-lm", {"prompt": "{q}", "response": "{a}"}), ("masked-lm", {"text": "{t}"})):
        recipe = tmp_path / f"{task}.yaml"
        recipe.write_text(json.dumps({"name": "p", "task": task, "model": {"base": "x"},
                                      "data": {"source": "d.jsonl", "packing": True, **data}}))
        code, _, err = run_cli(["validate", recipe])
        assert code == 1 and "data.packing" in err and "Traceback" not in err, err
