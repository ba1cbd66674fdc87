"""bench/RESULTS-kbqa.md from what `python bench/kbqa.py runs|scale|bm25` wrote (bench/out/kbqa/*.json and the
runs' metrics.json and manifests): every figure is read, none typed."""

from __future__ import annotations

import os
from pathlib import Path

from kbqa import EMBED, OUT, RAFT, RAG_ADAPTED, read

RESULTS = Path(__file__).resolve().parent / "RESULTS-kbqa.md"


def main():
    lines = ["# Knowledge-base QA, measured (bench/kbqa.py)", "",
             ("Produced by `python bench/kbqa.py runs`, `scale`, `bm25`, then `report` (this file). Machine: a shared "
             f"2-core CPU ({os.cpu_count()} cores seen), loaded by other jobs throughout (load average 10-20): every "
             "process ran `nice` with one torch thread, and every time below is that machine's, not a quiet one's. "
             "Accuracy figures do not depend on the load."), ""]
    lines += _written() + _retriever() + _reader() + _scale() + _bm25()
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


def _written() -> list[str]:
    """When each measurement was written (the runs can be days apart; the load they ran under differs)."""
    import time

    files = [EMBED / "evaluate" / "metrics.json", RAFT / "evaluate" / "metrics.json", *sorted(OUT.glob("*.json"))]
    found = [f"`{f.relative_to(OUT.parents[1])}` {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(f.stat().st_mtime))}"
             for f in files if f.is_file()]
    return [f"Measurements written: {'; '.join(found)}.", ""] if found else []


def _retriever() -> list[str]:
    embed = read(EMBED / "evaluate" / "metrics.json")
    if not embed:
        return []
    train = read(EMBED / "train" / "manifest.json")
    ours, base = embed["metrics"], embed["baseline"]["metrics"]
    recall = read(OUT / "recall.json")
    lines = ["## The retriever: all-MiniLM-L6-v2 before and after adapting it", "",
             (f"`bench/recipes/xquad-minilm-embed.yaml` (task embedding, full fine-tune, MultipleNegativesRankingLoss, "
             f"{train.get('steps')} steps of {train.get('global_batch_size')} question-paragraph pairs, "
             f"{train.get('train_seconds')} s of training). Each of the {embed['num_examples']} held-out questions "
             "(paragraphs never trained on) searches all 240 XQuAD paragraphs:"), "",
             "| | " + " | ".join(ours) + " |", "|---|" + "---|" * len(ours),
             "| MiniLM (base) | " + " | ".join(f"{base[k]:.3f}" for k in ours) + " |",
             "| MiniLM adapted | " + " | ".join(f"{ours[k]:.3f}" for k in ours) + " |", ""]
    if recall:
        lines += ["The same through the RAG recipe's prepare (`data.retrieval.embedder: " + str(EMBED.relative_to(EMBED.parents[2]))
                  + "`, prepare only, run " + RAG_ADAPTED.name + "), over its held-out questions:", "",
                  "| embedder | questions | recall@1 | recall@2 | recall@3 | recall@10 | MRR@10 |", "|---|---|---|---|---|---|---|"]
        for name, found in recall.items():
            lines.append(f"| {name} | {found['with_gold']} | " + " | ".join(
                f"{found.get(k, float('nan')):.3f}" for k in ("recall_at_1", "recall_at_2", "recall_at_3", "recall_at_10", "mrr_at_10")) + " |")
        lines.append("")
    return lines


def _reader() -> list[str]:
    metrics = read(RAFT / "evaluate" / "metrics.json")
    if not metrics:  # said, so a reader of this file knows the section is missing, not forgotten
        done = read(RAFT / "train" / "checkpoints" / "trainer_state.json") or _last_checkpoint_state()
        return ["## The reader: closed-book, RAG zero-shot, RAFT-trained", "",
                (f"Not measured yet: the RAFT reader's training stopped at step {done.get('global_step', '?')} of "
                 f"{done.get('max_steps', '?')} (its checkpoint is kept under {RAFT.relative_to(RAFT.parents[3])}); "
                 "`python bench/kbqa.py runs` resumes it, evaluates the three readers and rewrites this file."), ""]
    import yaml

    train, stats = read(RAFT / "train" / "manifest.json"), read(RAFT / "prepare" / "stats.json")
    recipe = yaml.safe_load((RAFT / "recipe.yaml").read_text())
    raft, tokens = recipe["data"]["retrieval"], recipe["evaluate"]["generation"]["max_new_tokens"]
    retrieval, slices = metrics["retrieval"], metrics["retrieval_slices"]
    kind, k = metrics["baseline"]["kind"], metrics["retrieval"]["k"]
    rows = [("closed-book SmolLM2 (question only)", metrics["closed_book"]["metrics"], "closed-book"),
            ("RAG zero-shot (untrained SmolLM2 + MiniLM passages)", metrics["baseline"]["metrics"], kind),
            ("RAFT-trained LoRA reader + MiniLM passages", metrics["metrics"], "adapted")]
    lines = ["## The reader: closed-book, RAG zero-shot, RAFT-trained", "",
             (f"`bench/recipes/xquad-smollm2-raft.yaml`: SmolLM2-135M-Instruct, k = {retrieval['k']} MiniLM passages "
             f"per question, LoRA r 16 on every projection trained on {stats['splits']['train']['rows']} questions "
             f"(RAFT: oracle_fraction {raft['oracle_fraction']}, {raft['distractors']} distractor(s)) for "
             f"{train.get('steps')} steps of {train.get('global_batch_size')} ({train.get('train_seconds')} s, "
             f"{train.get('tokens_per_second')} real tokens/s, peak {train.get('peak_memory_mb')} MB); "
             f"{metrics['num_examples']} held-out questions on articles never trained on (`splits.group`), greedy, "
             f"{tokens} new tokens, SQuAD exact match and token F1:"), "",
             "| model | exact match | F1 | EM, gold passage shown | EM, gold not shown |", "|---|---|---|---|---|"]
    for label, found, key in rows:
        shown, missed = slices["gold retrieved"].get(key, {}), slices["gold not retrieved"].get(key, {})
        lines.append(f"| {label} | {found['exact_match']:.1f} | {found['f1']:.1f} | {_em(shown)} | {_em(missed)} |")
    lines += ["", (f"Questions with the gold paragraph among the {retrieval['k']} shown: "
                  f"{slices['gold retrieved']['count']}; without: {slices['gold not retrieved']['count']}. Retrieval "
                  f"on these {retrieval['with_gold']} questions: recall@1 {retrieval['recall_at_1']:.3f}, "
                  f"recall@{k} {retrieval[f'recall_at_{k}']:.3f}, recall@3 "
                  f"{retrieval['recall_at_3']:.3f}, MRR@10 {retrieval['mrr_at_10']:.3f}."), ""]
    return lines


def _last_checkpoint_state() -> dict:
    states = sorted((RAFT / "train" / "checkpoints").glob("checkpoint-*/trainer_state.json"),
                    key=lambda path: int(path.parent.name.split("-")[1]))
    return read(states[-1]) if states else {}


def _em(found: dict) -> str:
    return f"{found['exact_match']:.1f}" if "exact_match" in found else "-"


def _scale() -> list[str]:
    scale = read(OUT / "scale.json")
    if not scale:
        return []
    lines = ["## Scale: index build and query latency", "",
             (f"`python bench/kbqa.py scale`: {scale['texts']} distinct real texts (AG News test titles and descriptions, "
             "DialogSum dev and test dialogues and summaries) embedded by MiniLM through adaptctl's index build "
             f"({scale['passages_per_second']} passages/s, {scale['embed_seconds']} s; one query embeds in "
             f"{scale['query_embed_ms']['median']} ms, median). The 100k index repeats those texts with new ids, as "
             "their vectors (a repeated text embeds to the same vector); its embedding time is the measured rate "
             "times 100k. Latencies: one XQuAD question at a time, top 10, median (p90) over 100 questions; "
             "batched: 500 questions at once."), "",
             ("| passages | vectors | embedding (s) | HNSW graph (s) | exact, 1 query (ms) | HNSW, 1 query (ms) | "
             "exact batched (ms/query) | HNSW top-1 = exact | HNSW top-10 overlap |"), "|---|---|---|---|---|---|---|---|---|"]
    for size, found in scale["sizes"].items():
        lines.append(f"| {int(size):,} | {found['vectors_mb']} MB | {found['embed_seconds_at_measured_rate']} | "
                     f"{found['hnsw_build_seconds']} | {found['exact_query_ms']['median']} ({found['exact_query_ms']['p90']}) | "
                     f"{found['hnsw_query_ms']['median']} ({found['hnsw_query_ms']['p90']}) | "
                     f"{found['exact_batched_ms_per_query']} | {found['hnsw_top1_agreement']} | {found['hnsw_top10_text_overlap']} |")
    first = read(OUT / "scale-first.json")  # an earlier run of the same measurement: how much the load moves it
    if first:
        lines += ["", "The same exact searches in an earlier run on this machine (HNSW then built shallower), for the "
                      "noise: " + "; ".join(f"{int(size):,} passages {found['exact_query_ms']['median']} ms (p90 "
                                            f"{found['exact_query_ms']['p90']}), batched {found['exact_batched_ms_per_query']} ms"
                                            for size, found in first["sizes"].items()) + "."]
    lines += ["", (f"HNSW settings (M 32, {scale['texts']} passages, the same questions): how often HNSW's first passage "
                  "is exact search's."), "", "| efConstruction | efSearch | graph build (s) | top-1 = exact | 1 query (ms) |",
              "|---|---|---|---|---|"]
    for row in scale.get("hnsw_settings", []):
        lines.append(f"| {row['ef_construction']} | {row['ef_search']} | {row['build_seconds']} | {row['top1_agreement']} | "
                     f"{row['query_ms']['median']} |")
    return lines + [""]


def _bm25() -> list[str]:
    found = read(OUT / "bm25.json")
    if not found:
        return []
    lines = ["## Does a BM25 hybrid pay?", "",
             ("`python bench/kbqa.py bm25`: MiniLM as data.retrieval ranks, `data.retrieval.hybrid: bm25` (the shipped "
             "code: bm25s's BM25 fused with MiniLM's ranking by reciprocal rank, rrf_k 60), and BM25 alone, against the "
             "240 paragraphs; `test` are the RAFT run's held-out questions:"), "",
             "| retriever | questions | recall@1 | recall@3 | recall@10 | MRR@10 |", "|---|---|---|---|---|---|"]
    for name, parts in found.items():
        for part, metrics in parts.items():
            if metrics:
                lines.append(f"| {name} | {part} ({metrics['with_gold']}) | " + " | ".join(
                    f"{metrics[k]:.3f}" for k in ("recall_at_1", "recall_at_3", "recall_at_10", "mrr_at_10")) + " |")
    return lines + [""]


if __name__ == "__main__":
    main()
