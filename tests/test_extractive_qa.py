"""extractive-qa: SQuAD rows, context-grouped splits, stride windows, span post-processing,
SQuAD metrics, and a whole `adaptctl run` with a tiny random BERT and the packaged MiniLM tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptctl.data import squad
from adaptctl.core.errors import UserError
from adaptctl.evaluation.metrics import normalize_answer, squad_metrics
from adaptctl.recipe.schema import Recipe
from adaptctl.tasks import extractive_qa as qa

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

PEOPLE = [("Ada Lovelace", "London", "1815", "mathematics"), ("Alan Turing", "Maida Vale", "1912", "logic"),
          ("Marie Curie", "Warsaw", "1867", "physics"), ("Niels Bohr", "Copenhagen", "1885", "physics"),
          ("Emmy Noether", "Erlangen", "1882", "algebra"), ("Srinivasa Ramanujan", "Erode", "1887", "number theory"),
          ("Grace Hopper", "New York City", "1906", "compilers"), ("Kurt Godel", "Brno", "1906", "logic"),
          ("Lise Meitner", "Vienna", "1878", "nuclear physics"), ("John von Neumann", "Budapest", "1903", "game theory")]


def squad_document(people=PEOPLE) -> dict:
    """A SQuAD v1.1 document: one article per person, one paragraph, three questions."""
    data = []
    for n, (name, city, year, field) in enumerate(people):
        context = (f"{name} was born in {city} in {year}. Early on, {name.split()[-1]} showed a gift for "
                   f"{field}, which became the work of a lifetime.")
        qas = [{"id": f"q{n}-{k}", "question": question,
                "answers": [{"text": answer, "answer_start": context.index(answer)}]}
               for k, (question, answer) in enumerate([(f"Where was {name} born?", city),
                                                       (f"In what year was {name} born?", year),
                                                       (f"What was {name} gifted for?", field)])]
        data.append({"title": name.replace(" ", "_"), "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "1.1", "data": data}


def make_recipe(method=None, **data) -> Recipe:
    source = data.pop("source", {"path": "squad.json", "field": "data"})
    return Recipe(name="qa", task="extractive-qa", model={"base": MINILM}, data={"source": source, **data},
                  method=method or {"name": "full"})


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(MINILM).path)


def read(path: Path, **source):
    from adaptctl.data.readers import read_source
    from adaptctl.recipe.schema import Source

    return read_source(Source(path=str(path), **source), path.parent)


def canonical(tmp_path, document=None, **data):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(document or squad_document()))
    recipe = make_recipe(**data)
    return qa.canonicalize(squad.flatten(read(path, field="data")), recipe, str(path))


# ------------------------------------------------------------------ rows
def test_nested_squad_json_flattens_to_one_row_per_question(tmp_path):
    ds, dropped = canonical(tmp_path)
    assert len(ds) == 3 * len(PEOPLE) and dropped == {"empty": 0, "no_answer": 0}
    assert ds.column_names == list(qa.COLUMNS)
    row = ds[1]
    assert row["id"] == "q0-1" and row["question"] == "In what year was Ada Lovelace born?"
    assert row["answers"] == {"text": ["1815"], "answer_start": [row["context"].index("1815")]}


def test_flat_rows_with_renamed_columns_and_answer_records(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"q": "  Where is the Louvre?", "passage": "The Louvre is in Paris.",
             "gold": [{"text": "Paris", "answer_start": 17}, {"text": "Paris.", "answer_start": 17}]},
            {"q": "", "passage": "Nothing to ask.", "gold": [{"text": "Nothing", "answer_start": 0}]},
            {"q": "Who knows?", "passage": "Nobody does.", "gold": []}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = make_recipe(source=str(path), question="q", context="passage", answers="gold")
    ds, dropped = qa.canonicalize(read(path), recipe, str(path))
    assert dropped == {"empty": 1, "no_answer": 1}
    assert ds[0] == {"id": "0", "question": "Where is the Louvre?", "context": "The Louvre is in Paris.",
                     "answers": {"text": ["Paris", "Paris."], "answer_start": [17, 17]}}


def test_a_missing_column_lists_the_columns_there_are(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "q?", "passage": "c", "answers": []}) + "\n")
    with pytest.raises(UserError) as info:
        qa.canonicalize(read(path), make_recipe(source=str(path)), str(path))
    assert "data.context" in info.value.message and "'context'" in info.value.message
    assert "passage" in info.value.hint


def test_an_answer_not_in_its_context_names_the_file_and_question_id(tmp_path):
    document = squad_document()
    answer = document["data"][2]["paragraphs"][0]["qas"][1]["answers"][0]
    right = answer["answer_start"]
    answer["answer_start"] = right + 3
    with pytest.raises(UserError) as info:
        canonical(tmp_path, document)
    message = info.value.message
    assert "squad.json" in message and "q2-1" in message and "'1867'" in message
    assert f"it occurs at character {right}" in message and "answer_start" in info.value.hint


def test_every_question_empty_is_an_error(tmp_path):
    document = squad_document(PEOPLE[:1])
    for item in document["data"][0]["paragraphs"][0]["qas"]:
        item["question"] = "   "
    with pytest.raises(UserError, match="no row has a question"):
        canonical(tmp_path, document)


# ---------------------------------------------------------------- splits
def test_split_keeps_every_question_about_a_context_together(tmp_path):
    ds, _ = canonical(tmp_path)
    parts = qa.split_indices(ds, 0.2, 0.2, seed=7)
    contexts = {name: {ds[i]["context"] for i in idx} for name, idx in parts.items()}
    assert len(contexts["validation"]) == 2 and len(contexts["test"]) == 2 and len(contexts["train"]) == 6
    assert not (contexts["train"] & contexts["test"]) and not (contexts["train"] & contexts["validation"])
    assert sorted(i for idx in parts.values() for i in idx) == list(range(len(ds)))
    assert qa.split_indices(ds, 0.2, 0.2, seed=7) == parts  # deterministic under the seed
    assert qa.split_indices(ds, 0.2, 0.2, seed=8) != parts


# ------------------------------------------------------------- tokenize
def long_document() -> dict:
    """One long paragraph (about 400 tokens) with answers early, in the middle and at the end."""
    filler = " ".join(f"Sentence {n} says nothing in particular about the river or the hills." for n in range(30))
    context = f"The bridge was opened in 1932. {filler} The mayor was Anna Berg. {filler} The toll was ten cents."
    qas = [{"id": f"long-{k}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
           for k, (q, a) in enumerate([("When did the bridge open?", "1932"), ("Who was the mayor?", "Anna Berg"),
                                       ("What was the toll?", "ten cents")])]
    short = squad_document(PEOPLE[:2])["data"]
    return {"data": [{"title": "Bridge", "paragraphs": [{"context": context, "qas": qas}]}, *short]}


def test_start_end_positions_map_back_to_the_answer_in_every_window(tmp_path, tokenizer):
    ds, _ = canonical(tmp_path, long_document())
    recipe = make_recipe(max_length=96, stride=32)
    features = qa.tokenize(ds, tokenizer, recipe, {})
    holding = set()
    for f in features:
        start, end = f["start_positions"], f["end_positions"]
        gold = f["answers"][0]
        if start == 0:  # CLS: the answer must really be outside this window's context
            inside = [o for o in f["offset_mapping"] if o is not None]
            answer_at = f["context"].index(gold)
            assert not (inside[0][0] <= answer_at and answer_at + len(gold) <= inside[-1][1])
            continue
        holding.add(f["example_index"])
        decoded = tokenizer.decode(f["input_ids"][start:end + 1])
        assert normalize_answer(decoded).replace(" ", "") == normalize_answer(gold).replace(" ", "")
        span = f["context"][f["offset_mapping"][start][0]:f["offset_mapping"][end][1]]
        assert span == gold
    assert holding == set(range(len(ds)))  # with stride, every answer lies whole in some window


def test_long_contexts_are_split_with_stride_and_counted(tmp_path, tokenizer):
    ds, _ = canonical(tmp_path, long_document())
    features = qa.tokenize(ds, tokenizer, make_recipe(max_length=96, stride=32), {})
    long_rows = [f for f in features if f["id"].startswith("long")]
    per_question = len(long_rows) // 3
    assert per_question >= 4 and len(features) == 3 * per_question + 6
    assert sum(features["truncated"]) == 3  # once per question that needed more than one window
    assert max(features["num_tokens"]) <= 96
    first, second = long_rows[0], long_rows[1]
    ctx1 = [tuple(o) for o in first["offset_mapping"] if o is not None]
    ctx2 = [tuple(o) for o in second["offset_mapping"] if o is not None]
    assert ctx1[-32:] == ctx2[:32]  # consecutive windows overlap by `stride` tokens
    assert ctx2[-1][1] > ctx1[-1][1]


def test_a_question_that_leaves_no_room_for_the_stride_is_a_user_error(tmp_path, tokenizer):
    document = squad_document(PEOPLE[:2])
    document["data"][1]["paragraphs"][0]["qas"][0]["question"] = "Where " + "really " * 60 + "was he born?"
    ds, _ = canonical(tmp_path, document)
    with pytest.raises(UserError) as info:
        qa.tokenize(ds, tokenizer, make_recipe(max_length=96, stride=32), {})
    assert "q1-0" in info.value.message and "data.stride" in info.value.hint
    with pytest.raises(UserError, match="data.stride"):
        qa.tokenize(ds, tokenizer, make_recipe(max_length=64, stride=64), {})


# --------------------------------------------------------- postprocess
def test_best_span_on_hand_built_logits():
    context = "Paris is the capital of France."
    offsets = [None, None, [0, 5], [6, 8], [9, 12], [13, 20], [21, 23], [24, 30], [30, 31], None]
    f1 = {"example_index": 0, "offset_mapping": offsets, "context": context}
    start, end = [0.0] * 10, [0.0] * 10
    start[1], end[1] = 9.0, 9.0          # the question token: highest, but not in the context
    start[2], end[2] = 5.0, 4.0          # "Paris"
    start[7], end[7] = 6.0, 1.0          # "France" starts well ...
    end[5] = 3.5                         # ... and 6 + 3.5 would win, but that end lies before it
    best = qa.best_spans([f1], [start], [end])
    assert best[0][0] == "Paris" and best[0][1] == pytest.approx(9.0)
    # a second window of the same example with a better span wins; a window of another example does not interfere
    f2 = {"example_index": 0, "offset_mapping": offsets, "context": context}
    s2, e2 = [0.0] * 10, [0.0] * 10
    s2[5], e2[7] = 6.0, 6.0              # "capital of France"
    f3 = {"example_index": 1, "offset_mapping": offsets, "context": context}
    best = qa.best_spans([f1, f2, f3], [start, s2, start], [end, e2, end])
    assert best[0][0] == "capital of France" and best[1][0] == "Paris"
    # spans longer than max_answer_tokens are ruled out
    best = qa.best_spans([f2], [s2], [e2], max_answer_tokens=2)
    assert best[0][0] != "capital of France"


def test_squad_metrics_normalise_articles_punctuation_and_case():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    metrics = squad_metrics(["The Cat.", "a big dog", "Paris", "nothing"],
                            [["cat"], ["the big dog barked"], ["London", "paris!"], ["something else"]])
    # exact: yes, no, yes (second gold), no; F1: 1, P=1 R=2/3 -> 0.8, 1, 0
    assert metrics["exact_match"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * (1 + 0.8 + 1 + 0) / 4)


# ------------------------------------------------------------------ peft
def test_lora_keeps_the_qa_head_trainable(tmp_path):
    from transformers import BertConfig, BertForQuestionAnswering

    from adaptctl import methods

    model = BertForQuestionAnswering(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, intermediate_size=37))
    recipe = make_recipe(method={"name": "lora", "r": 4, "target_modules": ["query", "value"]})
    peft_model = methods.apply(model, recipe)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("qa_outputs" in n and "modules_to_save" in n for n in trainable)
    assert any("lora_A" in n for n in trainable)
    assert not any("word_embeddings" in n for n in trainable)


# ------------------------------------------------------------- end to end
def save_tiny_qa_model(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    from adaptctl.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MINILM).path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    BertForQuestionAnswering(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", ["full", "lora"])
def test_adaptctl_run_trains_and_scores_a_tiny_qa_model(tmp_path, monkeypatch, run_cli, method):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))  # prepare from scratch, not a cached copy
    save_tiny_qa_model(tmp_path / "tiny-qa")
    document = long_document()
    document["data"] += squad_document()["data"][2:]
    (tmp_path / "squad.json").write_text(json.dumps(document))
    method_yaml = "{name: full}" if method == "full" else "{name: lora, r: 4, alpha: 8, target_modules: [query, value]}"
    (tmp_path / "qa.yaml").write_text(f"""
name: tiny-qa
task: extractive-qa
model: {{base: tiny-qa}}
data:
  source: {{path: squad.json, field: data}}
  splits: {{validation: 0.2, test: 0.2}}
  max_length: 96
  stride: 32
method: {method_yaml}
train: {{epochs: 1, batch_size: 8, learning_rate: 1.0e-3, precision: fp32}}
evaluate: {{split: test, batch_size: 4, slices: ["{{title}}"]}}
export: {{verify: false}}
""")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(["run", tmp_path / "qa.yaml", "--run-dir", run_dir, "--json"])
    assert code == 0, err
    # long contexts are read in windows, not cut: prepare says so, and does not warn of truncation
    assert "read in overlapping windows (data.stride=32)" in err and "truncated" not in err
    payload = json.loads(out)
    assert set(payload["metrics"]) >= {"exact_match", "f1"}
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert document["task"] == "extractive-qa" and document["split"] == "test"
    assert 0 <= document["metrics"]["f1"] <= 100 and document["metrics"]["exact_match"] <= document["metrics"]["f1"]
    predictions = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == document["num_examples"] > 0
    # slices by article: every window of a question carries its title, and a slice counts questions, not windows
    by_title = document["slices"]["{title}"]["values"]
    assert sum(row["count"] for row in by_title.values()) == document["num_examples"] and len(by_title) >= 1
    assert all(set(row["metrics"]) >= {"exact_match", "f1"} for row in by_title.values())
    assert {"id", "input", "reference", "prediction", "score"} <= set(predictions[0])
    stats = json.loads((run_dir / "prepare" / "stats.json").read_text())
    assert stats["dropped"]["train"] == {"empty": 0, "no_answer": 0}
    train_manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert train_manifest["status"] == "complete"

    # evaluate.max_examples counts questions, each with every window of its context
    from datasets import load_from_disk

    windows = load_from_disk(str(run_dir / "prepare" / "data"))["test"]["example_index"]
    first_two = list(dict.fromkeys(windows))[:2]
    assert sum(w in first_two for w in windows) > 2, "the first two test questions should span several windows"
    code, _, err = run_cli(["evaluate", tmp_path / "qa.yaml", "--run-dir", run_dir, "--set", "evaluate.max_examples=2"])
    assert code == 0, err
    assert json.loads((run_dir / "evaluate" / "metrics.json").read_text())["num_examples"] == 2
    few = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert few == predictions[:2]
    assert "eval_loss" in train_manifest.get("metrics", {}) or "eval_loss" in (run_dir / "train" / "metrics.jsonl").read_text()
