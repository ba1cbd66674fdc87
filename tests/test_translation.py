"""Translation (issue 39): line-aligned text files as columns (`data.source.columns`), an encoder-decoder
warm-started from two encoders (`model.decoder`, BERT2BERT) trained, exported, reloaded with plain
Transformers and predicted, and sacrebleu's signatures in metrics.json.  Tiny random BERTs with
MiniLM's tokenizer; the real measurements are in bench/RESULTS-translation.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptctl.core.errors import UserError

EN = ["a red apple", "the green river", "", "a quick stone\u2028on the table", "seven clouds"]
DE = ["ein roter apfel", "der grüne fluss", "", "ein schneller stein\u2028auf dem tisch", "sieben wolken"]
WORDS = {"apple": "apfel", "river": "fluss", "stone": "stein", "cloud": "wolke", "table": "tisch", "green": "grün",
         "quick": "schnell", "seven": "sieben", "paper": "papier", "window": "fenster", "music": "musik"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_line_aligned_files_are_columns_row_for_line(tmp_path):
    from adaptctl.data.readers import peek, read_table
    from adaptctl.recipe.schema import Source

    write_lines(tmp_path / "train.en", EN)
    (tmp_path / "train.de").write_text("\n".join(DE), encoding="utf-8")  # no newline at the end: a line too
    source = Source(path=".", columns={"en": "train.en", "de": "train.de"})
    table = read_table(source, tmp_path)
    assert table.ds.column_names == ["en", "de"] and len(table.ds) == len(EN)
    # a blank line is a row (the task drops it, counted), and U+2028 inside a line splits nothing
    assert table.ds[2] == {"en": "", "de": ""} and table.ds[3] == {"en": EN[3], "de": DE[3]}
    assert table.where(4) == f"{tmp_path / 'train.en'}:5"
    sample = peek(source, tmp_path)
    assert sample.columns == ["en", "de"] and sample.rows[1] == {"en": EN[1], "de": DE[1]}

    write_lines(tmp_path / "short.de", DE[:-1])
    with pytest.raises(UserError) as err:
        read_table(Source(path=".", columns={"en": "train.en", "de": "short.de"}), tmp_path)
    assert err.value.message == f"{tmp_path / 'short.de'} has 4 lines and {tmp_path / 'train.en'} has 5"
    assert "line-aligned" in err.value.hint


def test_validate_reads_the_columns_of_aligned_files(run_cli, tmp_path):
    write_lines(tmp_path / "train.en", EN)
    write_lines(tmp_path / "train.de", DE)
    recipe = tmp_path / "recipe.yaml"
    text = ("name: t\ntask: seq2seq\nmodel: {base: google-t5/t5-small}\n"
            "data:\n  source: {path: ., columns: {en: train.en, de: train.de}}\n"
            "  prompt: 'translate: {eng}'\n  response: '{de}'\n")
    recipe.write_text(text)
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and f"{recipe}:6:3: data.prompt: column 'eng' is not in" in err, err
    assert "the columns there are: en, de" in err
    recipe.write_text(text.replace("{eng}", "{en}").replace("}}\n", "}, format: csv}\n", 1))
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and f"{recipe}:5:21: data.source.columns: columns reads plain-text files" in err, err


def test_unknown_targets_are_counted_apart_from_the_inputs():
    from datasets import Dataset, DatasetDict
    from transformers import BertTokenizer

    from adaptctl.stages.prepare import _unknown_fraction

    class Vocabulary(BertTokenizer):
        def __init__(self):  # only unk_token_id is read
            pass

        unk_token_id = 1

    rows = DatasetDict({"train": Dataset.from_dict({"input_ids": [[5, 6, 7, 8]], "labels": [[-100, 1, 1, 9]]})})
    assert _unknown_fraction(rows, Vocabulary()) == 0.0
    assert _unknown_fraction(rows, Vocabulary(), "labels") == round(2 / 3, 6)  # the -100 position is no token


# ------------------------------------------------------------------ BERT2BERT
def save_tiny_bert(folder: Path, vocabulary: list[str] | None = None) -> Path:
    """A 2-layer random BertModel with MiniLM's tokenizer (or a WordPiece tokenizer over `vocabulary`)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    from adaptctl.models.resolve import resolve_model

    if vocabulary is None:
        tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    else:
        folder.mkdir(parents=True, exist_ok=True)
        write_lines(folder / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *vocabulary])
        tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "bert")


def bert2bert_recipe(folder: Path, bert: Path, **model) -> Path:
    words = list(WORDS)
    en = [" ".join(words[(i + k) % len(words)] for k in range(3)) for i in range(30)]
    write_lines(folder / "train.en", en[:24] + [""])
    write_lines(folder / "train.de", [" ".join(WORDS[w] for w in line.split()) for line in en[:24]] + [""])
    write_lines(folder / "test.en", en[24:])
    write_lines(folder / "test.de", [" ".join(WORDS[w] for w in line.split()) for line in en[24:]])
    recipe = folder / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "tiny-bert2bert", "task": "seq2seq", "seed": 3,
        "model": {"base": str(bert), "decoder": str(bert), **model},
        "data": {"source": {"path": ".", "columns": {"en": "train.en", "de": "train.de"}},
                 "test": {"path": ".", "columns": {"en": "test.en", "de": "test.de"}},
                 "prompt": "{en}", "response": "{de}", "splits": {"validation": 0.0, "test": 0.0}, "max_length": 16},
        "method": {"name": "full"},
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32", "validate": False},
        "evaluate": {"batch_size": 8, "generation": {"max_new_tokens": 4}}}))
    return recipe


def test_tiny_bert2bert_trains_exports_reloads_and_predicts_as_evaluate(run_cli, tmp_path, tiny_bert):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    recipe, run_dir = bert2bert_recipe(tmp_path, tiny_bert), tmp_path / "run"
    code, _, err = run_cli(["run", recipe, "--run-dir", run_dir, "-q"])
    assert code == 0, err
    stats = json.loads((run_dir / "prepare" / "stats.json").read_text())
    assert stats["dropped"]["train"]["empty"] == 1  # the blank line pair
    assert stats["unknown_token_fraction_targets"] == 0.0  # the German targets' tokens, counted (uncased: grün is grun)
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert document["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.")
    assert document["signatures"]["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.")
    assert "## First 3 examples" in (run_dir / "evaluate" / "report.md").read_text()

    export = run_dir / "export" / "model"
    card = (export / "README.md").read_text()
    assert f"- Decoder: `{tiny_bert}` (an EncoderDecoderModel" in card
    assert f"- source, column `de`: `{tmp_path}/train.de` (sha256 `" in card
    assert not list(export.glob("*.py")) and not list(export.glob("*.bin"))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(export), trust_remote_code=False, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(export))
    assert isinstance(model, EncoderDecoderModel)
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id == tokenizer.bos_token_id
    assert model.generation_config.eos_token_id == tokenizer.sep_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id

    evaluated = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    inputs = write_lines(tmp_path / "inputs.jsonl", [json.dumps({"id": i, "en": row["input"]})
                                                     for i, row in enumerate(evaluated)])
    code, out, err = run_cli(["predict", export, "--input", inputs])
    assert code == 0, err
    predicted = [json.loads(line) for line in out.splitlines()]
    assert [row["prediction"] for row in predicted] == [row["prediction"] for row in evaluated]
    assert_served_as_predicted(export, [row["input"] for row in evaluated])


def assert_served_as_predicted(export: Path, texts: list[str]):
    """adaptctl serve's worker (in-process, no HTTP) answers the BERT2BERT export as the task's predict hook."""
    import asyncio

    from adaptctl.predict import Predictor
    from adaptctl.serve.decoding import Decoding
    from adaptctl.serve.engine import Engine
    from adaptctl.serve.jobs import Job

    predictor = Predictor.resolve(export).load()
    loop = asyncio.new_event_loop()
    try:
        job = Job("complete", texts, loop, decoding=Decoding(predictor.recipe.evaluate.generation))
        engine = Engine(predictor, batch_size=4)
        with engine.worker_context():
            engine.run([job])
        answers, _ = loop.run_until_complete(job.done)
    finally:
        loop.close()
    assert [a.text for a in answers] == [r["prediction"] for r in predictor.predict(texts)]


def test_seq2seq_on_an_encoder_points_at_model_decoder(run_cli, tmp_path, tiny_bert):
    recipe = bert2bert_recipe(tmp_path, tiny_bert)
    document = json.loads(recipe.read_text())
    del document["model"]["decoder"]
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err
    assert "task seq2seq needs an encoder-decoder model (T5, BART), and this one is not (BertModel)" in err, err
    assert "name its decoder with model.decoder" in err


def test_a_decoder_with_another_vocabulary_is_refused_at_model_decoder(run_cli, tmp_path, tiny_bert):
    other = save_tiny_bert(tmp_path / "other", vocabulary=sorted(WORDS.values()))
    recipe = bert2bert_recipe(tmp_path, tiny_bert)
    document = json.loads(recipe.read_text())
    document["model"]["decoder"] = str(other)
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err
    assert f"model.decoder: the tokenizer of {other} differs from model.base's" in err, err
    assert "same vocabulary" in err
