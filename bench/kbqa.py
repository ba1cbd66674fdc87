"""Knowledge-base QA, measured (issue 35; docs/kbqa.md).  Writes JSON under bench/out/kbqa/ and, with
`report`, bench/RESULTS-kbqa.md from it and from the runs' metrics.json.

    python bench/kbqa.py runs      # XQuAD: MiniLM adapted (task embedding), the RAFT reader (three-way evaluate),
                                   #   and the test questions' recall with the adapted embedder (prepare only)
    python bench/kbqa.py scale     # index build time and query latency, 10k and 100k passages of real text
    python bench/kbqa.py bm25      # does data.retrieval.hybrid (BM25 fused by RRF) pay on XQuAD?
    python bench/kbqa.py report

Run it niced on a shared machine; every stage command gets --threads 1 (on a loaded 2-core machine two
threads wait on each other).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT, RUNS = BENCH / "out" / "kbqa", BENCH / "out" / "runs"
SHARED = BENCH.parent.parent / "shared" / "data"
XQUAD = SHARED / "xquad_en" / "xquad.en.json"
EMBED, RAFT = RUNS / "xquad-minilm-embed", RUNS / "xquad-smollm2-raft"
RAG_ADAPTED = RUNS / "xquad-rag-adapted-embedder"
sys.path.insert(0, str(BENCH.parent))


def adaptctl(command: str, recipe: str, run_dir: Path, *settings: str):
    words = [sys.executable, "-m", "adaptctl", command, str(BENCH / "recipes" / recipe), "--run-dir", str(run_dir),
             "--threads", "1", *(arg for s in settings for arg in ("--set", s))]
    print("$", " ".join(words[2:]), flush=True)
    subprocess.run(words, check=True, cwd=BENCH.parent)


# ------------------------------------------------------------------ the XQuAD runs
def runs(_args):
    adaptctl("run", "xquad-minilm-embed.yaml", EMBED)
    adaptctl("run", "xquad-smollm2-raft.yaml", RAFT)
    # the reader's recipe with the adapted retriever, to the prepared rows: the test questions' retrieval
    adaptctl("prepare", "xquad-smollm2-raft.yaml", RAG_ADAPTED, f"data.retrieval.embedder={EMBED}")
    recall = {name: test_recall(run) for name, run in (("minilm", RAFT), ("minilm-adapted", RAG_ADAPTED))}
    write("recall.json", recall)


def test_recall(run_dir: Path) -> dict:
    """recall@n and MRR@10 over every prepared test question (evaluate scores only its max_examples)."""
    from datasets import load_from_disk

    from adaptctl.retrieval import GOLD, RANKED
    from adaptctl.retrieval.quality import retrieval_metrics

    test = load_from_disk(str(run_dir / "prepare" / "data"))["test"]
    return retrieval_metrics(test[RANKED], test[GOLD], 2)


# ------------------------------------------------------------------ scale
def real_texts() -> list[str]:
    """About 10,600 distinct real texts: AG News test (title. description), DialogSum dev and test dialogues
    and their summaries."""
    with (SHARED / "ag_news" / "test.csv").open(newline="", encoding="utf-8") as f:
        texts = [f"{title}. {body}" for _, title, body in csv.reader(f)]
    for name in ("dev", "test"):
        for line in (SHARED / "dialogsum" / f"dialogsum.{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts.append(row["dialogue"])
            texts += [row[key] for key in ("summary", "summary1", "summary2", "summary3") if row.get(key)]
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def scale(args):
    """10k: embedded for real through adaptctl's index build.  100k: the 10k texts replicated with new ids
    (as the issue allows); replicated texts embed to the same vectors, so the 100k index is built from the
    10k embeddings replicated, and its embedding time is the 10k throughput x 100k (embedding is one passage
    at a time, linear).  The HNSW graph and every query latency are measured on the real 100k."""
    import numpy as np

    from adaptctl.retrieval import index
    from adaptctl.retrieval.corpus import Passages
    from adaptctl.retrieval.embedder import encode, load, resolve_embedder

    os.environ["ADAPTCTL_CACHE"] = str(OUT / "cache")
    texts = real_texts()[:args.small]
    embedder = resolve_embedder("sentence-transformers/all-MiniLM-L6-v2")
    clock = time.monotonic()
    folder = index.build(Passages([f"t{i}" for i in range(len(texts))], texts), embedder, "exact", 64)
    built = json.loads((folder / "index.json").read_text())
    vectors = np.load(folder / "embeddings.npy")
    model = load(embedder.path)
    questions = [q["question"] for a in json.loads(XQUAD.read_text())["data"] for p in a["paragraphs"] for q in p["qas"]]
    queries = encode(model, questions[:args.queries], 64)
    single = [_timed(lambda q=q: encode(model, [q], 1)) for q in questions[:50]]
    results = {"texts": len(texts), "embed_seconds": built["embed_seconds"], "whole_build_seconds": round(time.monotonic() - clock, 1),
               "passages_per_second": built["passages_per_second"], "query_embed_ms": _ms(single), "sizes": {}}
    results["hnsw_settings"] = _hnsw_settings(vectors, queries)
    for size in (len(texts), args.large):
        matrix = np.ascontiguousarray(np.resize(vectors, (size, vectors.shape[1])))  # rows repeated in order
        results["sizes"][size] = _search_figures(index, matrix, queries, len(texts))
        results["sizes"][size]["embed_seconds_at_measured_rate"] = round(size / built["passages_per_second"], 1)
        print(json.dumps({size: results["sizes"][size]}), flush=True)
    write("scale.json", results)


def _search_figures(index, matrix, queries, distinct: int) -> dict:
    import faiss

    clock = time.monotonic()
    graph = faiss.IndexHNSWFlat(matrix.shape[1], index.HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = index.HNSW_BUILD_DEPTH
    graph.add(matrix)
    graph_seconds = time.monotonic() - clock
    graph.hnsw.efSearch = index.HNSW_SEARCH_DEPTH
    exact_one = [_timed(lambda q=q: index.exact_search(matrix, q[None], 10)) for q in queries[:100]]
    hnsw_one = [_timed(lambda q=q: graph.search(q[None], 10)) for q in queries[:100]]
    exact_batch = _timed(lambda: index.exact_search(matrix, queries, 10)) / len(queries)
    truth = index.exact_search(matrix, queries, 10)
    found = graph.search(queries, 10)[1].tolist()
    # a replicated text's copies are one passage: compare by text (row % distinct), not by copy
    top1 = statistics.mean(a[0] % distinct == b[0] % distinct for a, b in zip(truth, found))
    overlap = statistics.mean(len({i % distinct for i in a} & {i % distinct for i in b}) / len({i % distinct for i in a})
                              for a, b in zip(truth, found))
    return {"passages": len(matrix), "vectors_mb": round(matrix.nbytes / 2**20, 1), "hnsw_build_seconds": round(graph_seconds, 1),
            "exact_query_ms": _ms(exact_one), "hnsw_query_ms": _ms(hnsw_one),
            "exact_batched_ms_per_query": round(exact_batch * 1000, 3), "hnsw_top1_agreement": round(top1, 4),
            "hnsw_top10_text_overlap": round(overlap, 4)}


def _hnsw_settings(vectors, queries) -> list[dict]:
    """How often HNSW finds exact search's best passage, by graph and search depth (efConstruction, efSearch)."""
    import faiss

    from adaptctl.retrieval import index

    truth = [row[0] for row in index.exact_search(vectors, queries, 10)]
    found = []
    for build, depths in ((80, (64,)), (index.HNSW_BUILD_DEPTH, (64, 128, index.HNSW_SEARCH_DEPTH))):
        graph = faiss.IndexHNSWFlat(vectors.shape[1], index.HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = build
        clock = time.monotonic()
        graph.add(vectors)
        seconds = time.monotonic() - clock
        for depth in depths:
            graph.hnsw.efSearch = depth
            one = [_timed(lambda q=q, g=graph: g.search(q[None], 10)) for q in queries[:100]]
            top = [row[0] for row in graph.search(queries, 10)[1].tolist()]
            found.append({"ef_construction": build, "ef_search": depth, "build_seconds": round(seconds, 1),
                          "top1_agreement": round(statistics.mean(a == b for a, b in zip(truth, top)), 4),
                          "query_ms": _ms(one)})
    print(json.dumps(found), flush=True)
    return found


def _timed(work) -> float:
    clock = time.perf_counter()
    work()
    return time.perf_counter() - clock


def _ms(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {"median": round(1000 * statistics.median(ordered), 3), "p90": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 3)}


# ------------------------------------------------------------------ BM25
def bm25(_args):
    """recall@n of MiniLM as data.retrieval ranks (dense), with data.retrieval.hybrid: bm25 (the shipped code:
    retrieval/prepared.py opens the retriever as prepare does, retrieval/lexical.py's bm25s ranking fused by
    RRF, k 60), and BM25 alone, for every XQuAD question against the 240 paragraphs, and for the held-out
    questions; the same with the adapted MiniLM."""
    from datasets import load_from_disk

    from adaptctl.recipe.schema import Retrieval
    from adaptctl.retrieval import lexical
    from adaptctl.retrieval.prepared import open_retriever
    from adaptctl.retrieval.quality import retrieval_metrics

    os.environ.setdefault("ADAPTCTL_CACHE", str(OUT / "cache"))
    corpus = {"path": str(XQUAD), "field": "data", "text": "{context}"}
    rows = [(q["question"].strip(), p["context"].strip()) for a in json.loads(XQUAD.read_text())["data"]
            for p in a["paragraphs"] for q in p["qas"]]  # stripped, as prepare reads them (data/squad.py)
    held_out = set(load_from_disk(str(RAFT / "prepare" / "data"))["test"]["retrieval:query"]) if RAFT.exists() else set()
    questions = [q for q, _ in rows]
    results, passages = {}, None
    for name, model_name in (("minilm", "sentence-transformers/all-MiniLM-L6-v2"), ("minilm-adapted", str(EMBED))):
        if name == "minilm-adapted" and not (EMBED / "train" / "model").is_dir():
            continue
        for label, hybrid in ((name, None), (f"{name}+bm25 (RRF)", "bm25")):
            settings = Retrieval(corpus=corpus, embedder=model_name, hybrid=hybrid)
            retriever = open_retriever(settings, BENCH, ".".join).retriever
            passages = retriever.index
            gold = [passages.ids[passages.texts.index(context)] for _, context in rows]
            results[label] = _recalls(retriever.rank(questions, 10), gold, passages.ids, questions, held_out, retrieval_metrics)
    assert passages is not None
    alone = lexical.lexical_ranking(lexical.build(passages.texts), questions, 10)
    results["bm25"] = _recalls(alone, gold, passages.ids, questions, held_out, retrieval_metrics)
    write("bm25.json", results)
    print(json.dumps(results, indent=1))


def _recalls(ranking, gold, ids, questions, held_out, metrics) -> dict:
    ranked = [[ids[n] for n in found[:10]] for found in ranking]
    test = [i for i, q in enumerate(questions) if q in held_out]
    return {"all": metrics(ranked, gold), "test": metrics([ranked[i] for i in test], [gold[i] for i in test]) if test else None}


# ------------------------------------------------------------------ report
def write(name: str, document: dict):
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps(document, indent=1))


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["runs", "scale", "bm25", "report"])
    parser.add_argument("--small", type=int, default=10_000, help="scale: passages embedded for real")
    parser.add_argument("--large", type=int, default=100_000, help="scale: passages of the replicated index")
    parser.add_argument("--queries", type=int, default=500, help="scale: XQuAD questions as queries")
    args = parser.parse_args()
    if args.what == "report":
        from kbqa_report import main as report_main

        report_main()
    else:
        {"runs": runs, "scale": scale, "bm25": bm25}[args.what](args)
