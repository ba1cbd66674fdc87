"""Knowledge-base QA (docs/kbqa.md): data.retrieval's index, its BM25 hybrid, RAFT rows, evaluate's retrieval figures and
closed-book baseline, predict and export retrieving as prepare did, a resumed embedding, and task embedding
chained into a later recipe as its embedder; on a tiny random Llama and a tiny random BERT embedder."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tiny_generation as tg

from adaptctl.core.errors import UserError

CITIES = {"Arland": "Norvik", "Belmar": "Ostra", "Calden": "Pirin", "Dovia": "Quell", "Estra": "Rumo",
          "Farol": "Sidra", "Galen": "Tovik", "Hesta": "Umber", "Ivel": "Vanta", "Jorra": "Wexel"}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> Path:
    """A tiny random BERT with MiniLM's tokenizer, as a plain folder (sentence-transformers: mean pooling)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from adaptctl.models.resolve import resolve_model

    folder = tmp_path_factory.mktemp("tiny-embedder")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> Path:
    """corpus.jsonl (one passage per country, and a duplicate row) and questions.jsonl naming each gold passage."""
    root = tmp_path_factory.mktemp("kb")
    passages = [{"doc": f"d{i}", "body": f"The capital of {country} is {city}."}
                for i, (country, city) in enumerate(CITIES.items())]
    (root / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages + passages[:1]))
    rows = [{"question": f"{ask} {country}?", "answer": city, "doc": f"d{i}"}
            for i, (country, city) in enumerate(CITIES.items())
            for ask in ("What is the capital of", "Which city is the capital of", "Name the capital of")]
    random.Random(0).shuffle(rows)
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tg.save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tied=False)   # answers vary with the prompt


def rag_recipe(kb: Path, model: Path, embedder, **retrieval) -> dict:
    return {"name": "tiny-kbqa", "task": "causal-lm", "seed": 3, "model": {"base": str(model)},
            "data": {"source": str(kb / "questions.jsonl"), "response": "{answer}", "max_length": 160,
                     "prompt": "Passages:\n{passages}\n\nQuestion: {question}\nAnswer: ",
                     "splits": {"validation": 0.1, "test": 0.25},
                     "retrieval": {"corpus": {"path": str(kb / "corpus.jsonl"), "text": "body", "id": "doc"},
                                   "gold": "{doc}", "k": 2, "embedder": str(embedder),
                                   "closed_book_prompt": "Question: {question}\nAnswer: ", **retrieval}},
            "method": {"name": "lora", "r": 4, "alpha": 8},
            "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 5e-3, "precision": "fp32", "validate": False},
            "evaluate": {"batch_size": 8, "compare_with_base": True, "generation": {"max_new_tokens": 4}},
            "export": {"merge_adapter": True}}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ the parts
def test_exact_search_is_the_argsort_and_hnsw_agrees_on_the_top_passage(monkeypatch):
    from adaptctl.retrieval import index

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:40] + 0.05 * rng.standard_normal((40, 16)).astype(np.float32)
    monkeypatch.setattr(index, "EXACT_BLOCK", 64)  # several blocks: the running top-k is merged across them
    monkeypatch.setattr(index, "QUERY_BLOCK", 16)
    found = index.exact_search(vectors, queries, 5)
    assert found == np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :5].tolist()
    import faiss

    graph = faiss.IndexHNSWFlat(16, index.HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    graph.add(vectors)
    assert [row[0] for row in graph.search(queries, 5)[1].tolist()] == [row[0] for row in found]


def test_raft_rows_mix_the_gold_passage_with_distractors_at_the_oracle_fraction():
    from adaptctl.retrieval.rows import raft_passages

    ranked = [[(i + j) % 50 for j in range(12)] for i in range(400)]
    gold = [(i + 3) % 50 for i in range(400)]
    mixed = raft_passages(ranked, gold, 0.7, 2, seed=1)
    assert mixed == raft_passages(ranked, gold, 0.7, 2, seed=1)  # seeded
    assert all(len(row) == 3 and len(set(row)) == 3 for row in mixed)  # as many passages with the oracle as without
    with_gold = [g in row for row, g in zip(mixed, gold)]
    assert 0.63 < sum(with_gold) / len(mixed) < 0.77
    for row, g, found, has in zip(mixed, gold, ranked, with_gold):  # distractors: the best-ranked others
        assert sorted(n for n in row if n != g) == sorted([n for n in found if n != g][:2 if has else 3])
    assert {row.index(g) for row, g, has in zip(mixed, gold, with_gold) if has} == {0, 1, 2}  # not always first
    unknown = raft_passages(ranked, [None] * 400, 1.0, 2, seed=1)  # no gold passage named: distractors only
    assert all(sorted(row) == sorted(found[:3]) for row, found in zip(unknown, ranked))


def test_recall_and_mrr_against_the_gold_passage():
    from adaptctl.retrieval.quality import retrieval_metrics

    ranked = [["a", "b", "c"], ["b", "a", "c"], ["c", "b", "a"], ["x", "y", "z"]]
    found = retrieval_metrics(ranked, ["a", "a", "a", ""], k=2)
    assert found["with_gold"] == 3 and found["questions"] == 4
    assert found["recall_at_1"] == pytest.approx(1 / 3) and found["recall_at_2"] == pytest.approx(2 / 3)
    assert found["recall_at_3"] == 1.0 and found["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_the_hybrid_puts_the_passage_sharing_the_questions_rare_words_first(monkeypatch, tmp_path):
    """Dense alone ranks p1 first; BM25 finds p3 alone (it shares 'zebra' and 'quasar'), and the fusion puts it
    first, the same after the BM25 index is saved and loaded as predict loads it."""
    from adaptctl.retrieval import embedder, lexical
    from adaptctl.retrieval.index import Index
    from adaptctl.retrieval.rows import Retriever

    texts = ["The river floods every spring.", "Farmers plant rice in the valley.", "A zebra named Quasar lives in Tovik."]
    vectors = np.eye(3, dtype=np.float32)
    monkeypatch.setattr(embedder, "encode", lambda model, queries, batch: np.tile([0.9, 0.5, 0.1], (len(queries), 1)).astype(np.float32))
    dense = Retriever(Index(tmp_path, ["p1", "p2", "p3"], texts, "exact", vectors), None, 2, "[{id}] {text}", 8)
    question = ["Where does the quasar zebra live?"]
    assert dense.rank(question, 3) == [[0, 1, 2]]
    assert lexical.lexical_ranking(lexical.build(texts), question, 3) == [[2]]  # no shared word, no rank
    assert lexical.hybrid(dense, lexical.build(texts), 60).rank(question, 2) == [[2, 0]]
    lexical.save(lexical.build(texts), tmp_path)
    assert lexical.hybrid(dense, lexical.load(tmp_path), 60).rank(question, 3) == [[2, 0, 1]]
    assert lexical.fuse([[5, 6], [6, 5]], 60) == [5, 6]  # a tie: the earlier passage


def test_a_recipe_without_hybrid_keys_prepare_as_before(kb, embedder):
    """Prepare's key reads the data section as dumped and the retrieval's content keys: without hybrid neither
    mentions it (the key of every existing recipe is unchanged); with it, both do."""
    from adaptctl.recipe.schema import Data
    from adaptctl.retrieval.prepared import content_keys

    before = Data(**rag_recipe(kb, Path("model"), embedder)["data"])
    dumped = before.model_dump(mode="json")["retrieval"]
    assert "hybrid" not in dumped and set(dumped) == set(type(before.retrieval).model_fields) - {"hybrid"}
    assert set(content_keys(before.retrieval, kb, ".".join)) == {"data.retrieval.corpus", "data.retrieval.embedder"}
    hybrid = Data(**rag_recipe(kb, Path("model"), embedder, hybrid="bm25")["data"])
    assert hybrid.model_dump(mode="json")["retrieval"]["hybrid"] == {"lexical": "bm25", "rrf_k": 60}
    assert "data.retrieval.hybrid" in content_keys(hybrid.retrieval, kb, ".".join)


def test_the_corpus_merges_repeated_passages_and_refuses_an_id_with_two_texts(kb, tmp_path):
    from adaptctl.recipe.schema import Corpus
    from adaptctl.retrieval.corpus import read_corpus

    passages = read_corpus(Corpus(path=str(kb / "corpus.jsonl"), text="body", id="doc"), kb)
    assert passages.ids == [f"d{i}" for i in range(len(CITIES))]  # the repeated first row is one passage
    numbered = read_corpus(Corpus(path=str(kb / "corpus.jsonl"), text="body"), kb)
    assert numbered.ids[:2] == ["p1", "p2"] and len(numbered) == len(CITIES)
    (tmp_path / "bad.jsonl").write_text('{"doc": "a", "body": "one"}\n{"doc": "a", "body": "two"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: .*'a' names two different texts"):
        read_corpus(Corpus(path=str(tmp_path / "bad.jsonl"), text="body", id="doc"), tmp_path)


def test_a_killed_embedding_resumes_at_its_last_chunk_and_equals_an_unbroken_one(embedder, tmp_path, monkeypatch):
    from adaptctl.retrieval import embedder as embedding
    from adaptctl.retrieval import index
    from adaptctl.retrieval.corpus import Passages

    passages = Passages([f"p{i}" for i in range(40)], [f"passage number {i} about {w}" for i, w in
                                                       enumerate(tg.WORDS * 4)][:40])
    found = embedding.resolve_embedder(str(embedder))
    monkeypatch.setattr(index, "CHUNK_BATCHES", 1)
    calls, real = [], embedding.encode

    def dies_on_the_third_chunk(model, texts, batch_size):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill between two chunks
        return real(model, texts, batch_size)

    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedding, "encode", dies_on_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        index.build(passages, found, "exact", batch_size=8)
    partial = next((tmp_path / "cache" / "retrieval").glob("*.partial"))
    assert json.loads((partial / "progress.json").read_text())["done"] == 16
    calls.clear()
    monkeypatch.setattr(embedding, "encode", real)
    resumed = np.load(index.build(passages, found, "exact", batch_size=8) / "embeddings.npy")
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "other-cache"))
    unbroken = np.load(index.build(passages, found, "exact", batch_size=8) / "embeddings.npy")
    np.testing.assert_allclose(resumed, unbroken, atol=1e-6)
    assert not list((tmp_path / "cache" / "retrieval").glob("*.partial"))
    graph = index.Index.load(index.build(passages, found, "hnsw", batch_size=8))  # FAISS HNSW over the same vectors
    assert graph.kind == "hnsw" and (graph.folder / "index.faiss").is_file()
    assert [row[0] for row in graph.search(unbroken[:10], 3)] == [row[0] for row in index.exact_search(unbroken, unbroken[:10], 3)]


# ------------------------------------------------------------------ the whole run
@pytest.fixture(scope="module")
def rag(tmp_path_factory, kb, llama, embedder):
    """The RAFT run (prepare, train, evaluate, export) with the BM25 hybrid, with an index cache of its own, and `adaptctl serve` of
    its export, started at once so that it imports and loads while the whole-run test runs predict."""
    from serving import start

    from adaptctl.cli import main
    from adaptctl.core import console

    root = tmp_path_factory.mktemp("rag-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTCTL_CACHE", str(root / "cache"))
        recipe = tg.write_recipe(root / "recipe.yaml", rag_recipe(kb, llama, embedder, oracle_fraction=0.5, hybrid="bm25"))
        assert main(["run", str(recipe), "--run-dir", str(root / "run"), "-q"]) == 0
        console.set_quiet(False)
        server = start(root / "run" / "export" / "model", "--threads", "1")
        try:
            yield SimpleNamespace(run_dir=root / "run", server=server)
        finally:
            server.stop()


def test_rag_raft_run_evaluates_three_ways_and_predict_retrieves_as_prepare_did(run_cli, tmp_path, kb, rag):
    run_dir = rag.run_dir
    from datasets import load_from_disk

    data = load_from_disk(str(run_dir / "prepare" / "data"))
    train, test = data["train"], data["test"]
    assert not set(train["retrieval:query"]) & set(test["retrieval:query"])
    for row in train:  # RAFT: 2 passages in every training row, the gold one in about half of them
        assert len(row["retrieval:shown"]) == 2 and all(f"[{i}]" in row["prompt"] for i in row["retrieval:shown"])
    oracle = sum(row["retrieval:gold"] in row["retrieval:shown"] for row in train) / len(train)
    assert 0.25 < oracle < 0.75
    for row in test:  # evaluation rows: the top k as ranked
        assert row["retrieval:shown"] == row["retrieval:ranked"][:2] and row["prompt"].startswith("Passages:\n[")

    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["retrieval"]["k"] == 2 and metrics["retrieval"]["with_gold"] == len(test)
    assert 0 <= metrics["retrieval"]["recall_at_1"] <= metrics["retrieval"]["recall_at_2"] <= 1
    assert metrics["baseline"]["kind"] == "zero-shot-prompting" and metrics["closed_book"]["kind"] == "closed-book"
    slices = metrics["retrieval_slices"]
    assert slices["gold retrieved"]["count"] + slices["gold not retrieved"]["count"] == len(test)
    assert {"adapted", "zero-shot-prompting", "closed-book"} <= set(slices["gold retrieved"])
    closed = _lines(run_dir / "evaluate" / "predictions.closed_book.jsonl")
    assert closed[0]["input"].startswith("Question: ") and "Passages" not in closed[0]["input"]
    evaluated = _lines(run_dir / "evaluate" / "predictions.jsonl")
    assert [row["passage_ids"] for row in evaluated] == test["retrieval:shown"]
    assert "## Retrieval" in (run_dir / "evaluate" / "report.md").read_text()
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["retrieval"]["passages"] == len(CITIES) and manifest["retrieval"]["verified_questions"] > 0
    shipped = run_dir / "export" / "model" / "retrieval"
    assert (shipped / "embedder" / "model.safetensors").is_file() and (shipped / "embeddings.npy").is_file()
    assert manifest["retrieval"]["hybrid"]["rrf_k"] == 60 and (shipped / "bm25" / "vocab.index.json").is_file()

    questions = tmp_path / "ask.jsonl"  # the test questions as a user sends them: the fields the templates read
    raw = {json.loads(line)["question"]: json.loads(line) for line in (kb / "questions.jsonl").read_text().splitlines()}
    questions.write_text("".join(json.dumps({"question": q, "ref": raw[q]["answer"]}) + "\n" for q in test["retrieval:query"]))
    for model_dir in (run_dir / "export" / "model", run_dir):  # the export alone, and the run directory
        code, out, err = run_cli(["predict", model_dir, "--input", questions])
        assert code == 0, err[-2000:]
        answers = [json.loads(line) for line in out.splitlines()]
        assert [a["passage_ids"] for a in answers] == test["retrieval:shown"]
        assert [a["input"] for a in answers] == test["prompt"]
        assert [a["prediction"] for a in answers] == [row["prediction"] for row in evaluated]


def test_serve_retrieves_as_predict_does_cites_the_passages_and_refuses_an_empty_question(run_cli, tmp_path, rag):
    """The export served: a completion's prompt and a chat's last user message are the question; each choice
    is predict's answer (on the run directory) for the row {"question": ...}, with the passage ids predict
    printed beside it."""
    import openai
    from datasets import load_from_disk

    asked = list(load_from_disk(str(rag.run_dir / "prepare" / "data"))["test"]["retrieval:query"])[:3]
    (tmp_path / "ask.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in asked))
    code, out, err = run_cli(["predict", rag.run_dir, "--input", tmp_path / "ask.jsonl"])
    assert code == 0, err[-2000:]
    predicted = [json.loads(line) for line in out.splitlines()]
    assert len({p["prediction"] for p in predicted}) > 1   # the tiny reader's answers depend on its prompt
    server = rag.server.ready()
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)

    completion = client.completions.create(model=server.model, prompt=asked)
    assert [c.text for c in completion.choices] == [p["prediction"] for p in predicted]
    assert [c.model_extra["passage_ids"] for c in completion.choices] == [p["passage_ids"] for p in predicted]
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi."}, {"role": "user", "content": asked[1]}]
    chat = client.chat.completions.create(model=server.model, messages=conversation)
    assert chat.choices[0].message.content == predicted[1]["prediction"]
    assert chat.choices[0].model_extra["passage_ids"] == predicted[1]["passage_ids"]
    chunks = list(client.chat.completions.create(model=server.model, messages=conversation, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == predicted[1]["prediction"]
    assert chunks[-1].choices[0].model_extra["passage_ids"] == predicted[1]["passage_ids"]

    for body, param in (({"prompt": ["What?", "  "]}, "prompt[1]"),
                        ({"messages": [{"role": "system", "content": "Be brief."}]}, "messages"),
                        ({"messages": [{"role": "user", "content": asked[0]}, {"role": "user", "content": ""}]},
                         "messages[1].content")):
        status, answer = server.post("/v1/completions" if "prompt" in body else "/v1/chat/completions",
                                     {"model": server.model, **body})
        assert status == 400 and answer["error"]["param"] == param and "question" in answer["error"]["message"]
    server.process.send_signal(signal.SIGTERM)   # it exits while the next tests run; the fixture awaits it


@pytest.mark.parametrize("query, prompt, found", [
    ("{question}", "Passages:\n{passages}\n\nQuestion: {question}", "question"),
    ("ask", "{{ passages }} Q: {{ ask }} (again: {{ ask }})", "ask"),          # a bare column, Jinja
    ("{title}: {question}", "{passages} {question}", "reads 2 fields (question, title)"),
    ("{question}", "{passages} {title} {question}", "data.prompt reads title besides the question"),
])
def test_a_served_question_fills_the_one_field_the_query_reads(query, prompt, found):
    from adaptctl.recipe.schema import Data
    from adaptctl.serve.questions import question_field
    from adaptctl.tasks import get_task

    data = Data(source="questions.jsonl", prompt=prompt, response="{answer}")
    predictor = SimpleNamespace(retriever=SimpleNamespace(query=query), spec=get_task("causal-lm"),
                                recipe=SimpleNamespace(data=data))
    if " " not in found:
        assert question_field(predictor) == found
    else:
        with pytest.raises(UserError, match=found.replace("(", r"\(").replace(")", r"\)")):
            question_field(predictor)


def test_task_embedding_trains_on_pairs_and_serves_as_a_later_recipes_embedder(run_cli, tmp_path, kb, embedder,
                                                                             monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))
    pairs = tmp_path / "pairs.jsonl"
    corpus = {row["doc"]: row["body"] for row in _lines(kb / "corpus.jsonl")}
    pairs.write_text("".join(json.dumps({"question": r["question"], "passage": corpus[r["doc"]]}) + "\n"
                             for r in _lines(kb / "questions.jsonl")))
    recipe = tg.write_recipe(tmp_path / "embed.yaml", {
        "name": "tiny-embedder", "task": "embedding", "seed": 1, "model": {"base": str(embedder)},
        "data": {"source": str(pairs), "question": "question", "context": "passage", "max_length": 32,
                 "splits": {"validation": 0.1, "test": 0.25, "group": "{passage}"},
                 "retrieval": {"corpus": {"path": str(kb / "corpus.jsonl"), "text": "body", "id": "doc"}}},
        "train": {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32"},
        "evaluate": {"compare_with_base": True}, "export": {"verify": False}})
    run_dir = tmp_path / "embed-run"
    code, _, err = run_cli(["run", recipe, "--run-dir", run_dir, "--json"])
    assert code == 0, err[-3000:]
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"recall_at_1", "recall_at_3", "recall_at_5", "recall_at_10", "mrr_at_10"}
    assert metrics["baseline"]["kind"] == "base-model" and metrics["baseline"]["fresh_head"] is False
    assert metrics["metrics"]["recall_at_10"] == 1.0  # every query's passage is among the 10 passages
    assert (run_dir / "export" / "model" / "modules.json").is_file()
    from safetensors.torch import load_file

    before, after = load_file(embedder / "model.safetensors"), load_file(run_dir / "train" / "model" / "model.safetensors")
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in before if "layer" in k)

    # a later recipe names the run as its embedder (as model.base chains runs): its export, which embeds as the
    # trained model does (the pooling files shipped beside the weights)
    from adaptctl.retrieval.embedder import encode, load, resolve_embedder

    chained = resolve_embedder(str(run_dir))
    assert chained.path == (run_dir / "export" / "model").resolve()
    texts = list(CITIES)
    np.testing.assert_allclose(encode(load(chained.path), texts, 8), encode(load(run_dir / "train" / "model"), texts, 8),
                               atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({}, None),  # the recipe as the other tests run it: {passages} is no column of the data, and that is right
    ({"data": {"prompt": "Question: {question}\nAnswer: "}}, "data.prompt does not read them"),
    ({"retrieval": {"gold": None, "oracle_fraction": 0.8}}, "does not say which it is"),
    ({"retrieval": {"distractors": 2}}, "distractors are RAFT's"),
    ({"task": "classification"}, "does not read retrieved passages"),
    ({"retrieval": {"corpus": {"path": "missing.jsonl", "text": "body"}}}, "missing.jsonl"),
    ({"retrieval": {"corpus": {"path": "corpus.jsonl", "text": "{bdy}"}}}, "column 'bdy' is not in"),
    ({"retrieval": {"hybrid": "tfidf"}}, "'tfidf' is no lexical ranking"),
    ({"retrieval": {"hybrid": {"rrf_k": 0}}}, "rrf_k"),
])
def test_retrieval_settings_are_validated_with_located_errors(run_cli, tmp_path, kb, change, message):
    recipe = rag_recipe(kb, Path("model"), "sentence-transformers/all-MiniLM-L6-v2")
    recipe["data"]["source"] = str(kb / "questions.jsonl")
    recipe["data"].update(change.get("data", {}))
    recipe["data"]["retrieval"].update(change.get("retrieval", {}))
    if "corpus" in change.get("retrieval", {}):
        recipe["data"]["retrieval"]["corpus"]["path"] = str(kb / change["retrieval"]["corpus"]["path"])
    if "task" in change:
        recipe.update(task=change["task"], data={**recipe["data"], "text": "{question}", "label": "answer"})
    code, _, err = run_cli(["validate", tg.write_recipe(tmp_path / "recipe.yaml", recipe)])
    if message is None:
        assert code == 0, err
        return
    assert code == 1 and message in err and "recipe.yaml:" in err and "Traceback" not in err, err
