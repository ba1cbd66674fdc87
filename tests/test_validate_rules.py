"""Recipe-only rules that `adaptctl validate` checks, so that no stage starts on a recipe it would refuse
(issues 15 and 23): one bad recipe per rule through the real command line, exit 1, the field located at
FILE:LINE:COL with a hint, no traceback; and the good neighbours of each rule still validate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Line numbers below refer to this text: keep them in step with it.
BASE = """\
name: t
task: classification
model:
  base: sentence-transformers/all-MiniLM-L6-v2
data:
  source: data.csv
  text: text
  label: label
method:
  name: lora
train:
  epochs: 1
evaluate:
  split: test
export:
  merge_adapter: true
"""
CAUSAL = BASE.replace("task: classification", "task: causal-lm").replace(
    "  text: text\n  label: label\n", "  prompt: '{question}'\n  response: '{answer}'\n")
PLAIN_TEXT = CAUSAL.replace("  prompt: '{question}'\n  response: '{answer}'\n", "  text: text\n  label: null\n")
QA = BASE.replace("task: classification", "task: extractive-qa").replace("  text: text\n  label: label\n", "")
MINILM = "  base: sentence-transformers/all-MiniLM-L6-v2\n"
WITH_DECODER = MINILM + "  decoder: sentence-transformers/all-MiniLM-L6-v2\n"
BERT2BERT = CAUSAL.replace("task: causal-lm", "task: seq2seq").replace(MINILM, WITH_DECODER).replace(
    "  name: lora\n", "  name: full\n")


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# id: (recipe text, field, where (line:col), words in the message, words in the hint)
BAD = {
    "seq2seq cannot be distilled": (
        edit(CAUSAL, "task: causal-lm", "task: seq2seq") + "distill:\n  teacher: runs/teacher\n",
        "distill", "17:1", "task seq2seq cannot be distilled yet (only classification and causal-lm)", "adaptctl train"),
    "extractive-qa stride not below max_length": (
        edit(QA, "  source: data.csv\n", "  source: data.csv\n  max_length: 128\n  stride: 128\n"),
        "data.stride", "8:3", "data.stride (128) must be below data.max_length (128)", "max_length 384, stride 128"),
    "extractive-qa max_length not above the default stride": (
        edit(QA, "  source: data.csv\n", "  source: data.csv\n  max_length: 64\n"),
        "data.max_length", "7:3", "data.stride (128) must be below data.max_length (64)", "stride"),
    "deepspeed without its config": (
        edit(BASE, "  epochs: 1\n", "  epochs: 1\n  distributed:\n    strategy: deepspeed\n"),
        "train.distributed.deepspeed_config", "13:3", "strategy deepspeed needs its JSON config", "deepspeed_config:"),
    "ia3 feed-forward modules outside target_modules": (
        edit(BASE, "  name: lora\n", "  name: ia3\n  target_modules: [query, value]\n  feedforward_modules: [output]\n"),
        "method.feedforward_modules", "12:3", "peft refuses these ia3 settings",
        "`feedforward_modules` should be a subset of `target_modules`"),
    "causal-lm with nothing to train on": (
        edit(CAUSAL, "  prompt: '{question}'\n  response: '{answer}'\n", ""),
        "data", "5:1", "task causal-lm needs data.text (continued pretraining) or data.prompt and data.response",
        "text: '{text}'"),
    "a classification metric on causal-lm": (
        edit(CAUSAL, "  split: test\n", "  split: test\n  metrics: [rouge1, accuracy]\n"),
        "evaluate.metrics.1", "15:21", "task causal-lm does not compute accuracy",
        "it computes: perplexity, rouge1, rouge2, rougeL, rougeLsum, bleu, chrf, exact_match"),
    "a generation metric on plain text": (
        edit(PLAIN_TEXT, "  split: test\n", "  split: test\n  metrics: [rouge1]\n"),
        "evaluate.metrics.0", "15:13", "task causal-lm on plain text (data.text without data.response) does not compute rouge1",
        "it computes: perplexity"),
    "a generation metric on classification": (
        edit(BASE, "  split: test\n", "  split: test\n  metrics: [accuracy, bleu]\n"),
        "evaluate.metrics.1", "15:23", "task classification does not compute bleu", "accuracy, precision, recall, f1, mcc"),
    "a shard size that is no size": (
        edit(BASE, "  merge_adapter: true\n", "  merge_adapter: true\n  max_shard_size: abc\n"),
        "export.max_shard_size", "17:3", "'abc' is not a size", "'2GB', '500MB', '1GiB'"),
    "a shard size without a unit": (
        edit(BASE, "  merge_adapter: true\n", "  merge_adapter: true\n  max_shard_size: '500'\n"),
        "export.max_shard_size", "17:3", "'500' is not a size", "'2GB'"),
    "a decoder for a task of one model": (
        edit(CAUSAL, MINILM, WITH_DECODER), "model.decoder", "5:3",
        "model.decoder composes an encoder-decoder, and task causal-lm trains one model", "use task seq2seq"),
    "a decoder under an adapter method": (
        edit(BERT2BERT, "  name: full\n", "  name: lora\n"), "model.decoder", "5:3",
        "the decoder's cross-attention starts random and must be trained, and method lora leaves most weights frozen",
        "use method full"),
    "a decoder with added tokens": (
        edit(BERT2BERT, WITH_DECODER, WITH_DECODER + "  add_tokens: [foo]\n"), "model.decoder", "5:3",
        "model.add_tokens would grow the encoder's and the decoder's embeddings apart", "remove model.add_tokens"),
    "a shard size of zero bytes": (
        edit(BASE, "  merge_adapter: true\n", "  merge_adapter: true\n  max_shard_size: 0\n"),
        "export.max_shard_size", "17:3", "0 is not a size", "bytes"),
}

GOOD = {
    "classification can be distilled": BASE + "distill:\n  teacher: runs/teacher\n",
    "causal-lm can be distilled": CAUSAL + "distill:\n  teacher: runs/teacher\n",
    "classification ignores the QA stride": edit(BASE, "  source: data.csv\n", "  source: data.csv\n  max_length: 64\n"),
    "extractive-qa stride below max_length": edit(QA, "  source: data.csv\n", "  source: data.csv\n  max_length: 384\n"),
    "deepspeed with its config": edit(BASE, "  epochs: 1\n", "  epochs: 1\n  distributed: {strategy: deepspeed, deepspeed_config: ds.json}\n"),
    "ia3 feed-forward modules among target_modules": edit(
        BASE, "  name: lora\n", "  name: ia3\n  target_modules: [query, output]\n  feedforward_modules: [output]\n"),
    "ia3 feed-forward modules with peft's default targets": edit(BASE, "  name: lora\n", "  name: ia3\n  feedforward_modules: [output]\n"),
    "prompt tuning from a text": edit(BASE, "  name: lora\n", "  name: prompt-tuning\n  init_text: 'Classify the ticket:'\n"),
    "causal-lm plain text": PLAIN_TEXT,
    "a decoder warm-starting a seq2seq model, trained in full": BERT2BERT,
    "causal-lm response only": edit(CAUSAL, "  prompt: '{question}'\n", ""),
    "exact_match on causal-lm": edit(CAUSAL, "  split: test\n", "  split: test\n  metrics: [exact_match, rougeL]\n"),
    "perplexity on plain text": edit(PLAIN_TEXT, "  split: test\n", "  split: test\n  metrics: [perplexity]\n"),
    **{f"shard size {size}": edit(BASE, "  merge_adapter: true\n", f"  merge_adapter: true\n  max_shard_size: {size}\n")
       for size in ("2GB", "500MB", "1GiB", "'100 KB'", "1000000")},
}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))  # peft's verdicts are remembered there


def write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    # validate reads the data's columns too: one file with every column the recipes above name
    (folder / "data.csv").write_text("text,label,question,answer,context,answers\nt,a,q,a,c,a\n")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_a_recipe_only_rule_is_a_located_validation_error(case, run_cli, tmp_path):
    text, field, where, message, hint = BAD[case]
    recipe = write(tmp_path, text)
    code, out, err = run_cli(["validate", recipe])
    assert code == 1, err
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    located = [i for i, line in enumerate(lines) if line.startswith(f"{recipe}:{where}: {field}: ")]
    assert located, f"no '{recipe}:{where}: {field}:' in:\n{err}"
    assert message in lines[located[0]], err
    assert lines[located[0] + 1].startswith("    hint: ") and hint in lines[located[0] + 1], err


@pytest.mark.parametrize("case", list(GOOD))
def test_the_good_neighbour_of_each_rule_validates(case, run_cli, tmp_path):
    code, _, err = run_cli(["validate", write(tmp_path, GOOD[case])])
    assert code == 0, err


def test_peft_is_asked_once_per_method_section(run_cli, tmp_path):
    """peft's verdict is remembered (importing peft costs seconds) and gives the same answer from the cache."""
    text, field, where, _, hint = BAD["ia3 feed-forward modules outside target_modules"]
    recipe = write(tmp_path, text)
    first = run_cli(["validate", recipe])
    assert list((tmp_path / "cache" / "peft-checks").glob("*.json"))
    assert run_cli(["validate", recipe]) == first
    assert hint in first[2]


def test_every_shard_size_validate_accepts_is_one_transformers_reads():
    from pydantic import ValidationError
    from transformers.utils.hub import convert_file_size_to_int

    from adaptctl.recipe.schema import Export

    def transformers_reads(size) -> bool:
        try:
            return convert_file_size_to_int(size) > 0
        except ValueError:
            return False

    for size in ("2GB", "500MB", "1GiB", "100 KB", "7mib", 1_000_000):
        assert transformers_reads(Export(max_shard_size=size).max_shard_size), size
    for size in ("abc", "500", "2.5GB", "GB", "-1GB", "2TB", 0):
        assert not transformers_reads(size), size
        with pytest.raises(ValidationError):
            Export(max_shard_size=size)


def test_the_schema_accepts_extends_and_the_resolved_recipe_has_none(run_cli, tmp_path):
    code, out, _ = run_cli(["schema"])
    assert code == 0
    extends = json.loads(out)["properties"]["extends"]
    assert extends["type"] == "string" and extends["description"]
    write(tmp_path, BASE, "base.yaml")
    code, out, err = run_cli(["validate", write(tmp_path, "extends: base.yaml\nname: child\n"), "--json"])
    assert code == 0, err
    resolved = json.loads(out)["recipe"]
    assert resolved["name"] == "child" and "extends" not in resolved


def test_generation_computes_a_normalised_exact_match():
    from adaptctl.evaluation.metrics import generation_metrics

    metrics = generation_metrics(["The answer is 42.", "Paris", "a dog"],
                                 [["the answer is 42"], ["Lyon", "paris!"], ["cat"]])
    assert metrics["exact_match"] == pytest.approx(200 / 3)  # case, punctuation and articles do not count
