"""Sentence embedders for retrieval (docs/kbqa.md): a bi-encoder such as all-MiniLM-L6-v2 trained on
query-passage pairs (`data.question`, `data.context`) by sentence-transformers' trainer with
MultipleNegativesRankingLoss: in-batch negatives, every other passage of a batch is a wrong answer to a
query.  Batches never hold one passage twice (its other questions would be false negatives).

Evaluate measures recall@1/3/5/10 and MRR@10 of each held-out query's own passage among the corpus: the
passages of `data.retrieval.corpus` when set (the corpus a RAG recipe searches), else every distinct
passage of the evaluated split.  The base model is the baseline (`base-model`: its own pooling, no head).
A later recipe uses the run as its embedder: `data.retrieval.embedder: runs/<this run>`.
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.tasks.spec import TaskSpec, TrainerPlan

METRICS = ("recall_at_1", "recall_at_3", "recall_at_5", "recall_at_10", "mrr_at_10")
# The query and the passage that answers it, named as the recipe's fields (so that messages name them);
# sentence-transformers reads them by position: anchor, then positive.
COLUMNS = ("question", "context")
# The sentence-transformers files of a model folder: its pooling and normalisation, which export ships too.
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                  "1_Pooling", "2_Normalize")


def templates(data, columns=()) -> dict:
    return {"question": data.question, "context": data.context}


def tokenize(dataset, tokenizer, recipe, label2id: dict):
    """The text columns stay (sentence-transformers tokenizes them per batch); the query's tokens are kept as
    the example inputs export verifies with, and token counts for the statistics."""
    from adaptctl.data.tokens import encoding_stats

    def encode(batch):
        query = tokenizer(batch["question"], truncation=True, max_length=recipe.data.max_length)
        passage = tokenizer(batch["context"], truncation=True, max_length=recipe.data.max_length)
        q, p = encoding_stats(query, recipe.data.max_length), encoding_stats(passage, recipe.data.max_length)
        return {"input_ids": query["input_ids"], "attention_mask": query["attention_mask"],
                "num_tokens": [a + b for a, b in zip(q["num_tokens"], p["num_tokens"])],
                "truncated": [a or b for a, b in zip(q["truncated"], p["truncated"])]}

    return dataset.map(encode, batched=True, batch_size=1000, desc="tokenize")


def collator(tokenizer, recipe):
    return None  # sentence-transformers' own collator tokenizes the text columns (EmbeddingTrainer)


def trainer(recipe, model) -> TrainerPlan:
    from sentence_transformers import SentenceTransformerTrainingArguments

    return TrainerPlan(trainer_class=_trainer_class(recipe.data.max_length),
                       arguments_class=SentenceTransformerTrainingArguments,
                       arguments={"batch_sampler": "no_duplicates"}, columns=COLUMNS)


def _trainer_class(max_length: int):
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from adaptctl.retrieval.embedder import wrap

    class EmbeddingTrainer(SentenceTransformerTrainer):
        """The session's model (the base with the method applied) inside the base folder's pooling, trained on
        the text columns with in-batch negatives."""

        def __init__(self, model, train_dataset=None, eval_dataset=None, data_collator=None, **kwargs):
            sentence = wrap(model, Path(model.name_or_path))
            sentence[0].max_seq_length = max_length
            super().__init__(model=sentence, train_dataset=_texts(train_dataset), eval_dataset=_texts(eval_dataset),
                             loss=MultipleNegativesRankingLoss(sentence), **kwargs)
            # its batches hold anchor_input_ids and positive_input_ids, no input_ids the Trainer could count
            self.args.include_num_input_tokens_seen = "no"

        def add_model_card_callback(self, default_args_dict):
            pass  # export writes adaptctl's model card; this one would embed widget examples at every start

    return EmbeddingTrainer


def _texts(split):
    return split.select_columns(list(COLUMNS)) if split is not None else None


# ------------------------------------------------------------------ evaluation
def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """recall@k and MRR@10 of each query's own passage, among the corpus (see the module docstring)."""
    import time

    from adaptctl.evaluation import EvalResult
    from adaptctl.retrieval.embedder import encode, wrap
    from adaptctl.retrieval.index import exact_search
    from adaptctl.retrieval.quality import MRR_DEPTH, ranks, retrieval_metrics

    sentence = wrap(model, Path(model.name_or_path))
    ids, texts = _corpus(recipe, split)
    number = {text: n for n, text in enumerate(texts)}
    gold = [ids[number[text.strip()]] if text.strip() in number else "" for text in split["context"]]
    start = time.monotonic()
    vectors = encode(sentence, texts, recipe.evaluate.batch_size)
    queries = encode(sentence, list(split["question"]), recipe.evaluate.batch_size)
    ranked = [[ids[n] for n in found] for found in exact_search(vectors, queries, MRR_DEPTH)]
    seconds = time.monotonic() - start
    metrics = {name: value for name, value in retrieval_metrics(ranked, gold).items() if name in METRICS}
    predictions = [{"input": query, "reference": g, "prediction": found[0] if found else None,
                    "score": round(1 / rank, 6) if rank else 0.0, "rank": rank, "retrieved": found}
                   for query, g, found, rank in zip(split["question"], gold, ranked, ranks(ranked, gold))]
    return EvalResult(metrics=metrics, predictions=predictions, examples_per_second=len(queries) / seconds if seconds else None,
                      extras={"corpus_passages": len(ids)})


def _corpus(recipe, split) -> tuple[list[str], list[str]]:
    """data.retrieval.corpus's passages, else the split's distinct passages (ids p1, p2, ...); every query's own
    passage is among them."""
    if recipe.data.retrieval is not None:
        from adaptctl.retrieval.corpus import read_corpus

        passages = read_corpus(recipe.data.retrieval.corpus, Path("."))
        ids, texts = list(passages.ids), list(passages.texts)
    else:
        ids, texts = [], []
    known = set(texts)
    for text in dict.fromkeys(t.strip() for t in split["context"]):
        if text not in known:  # a held-out passage the corpus lacks still competes
            ids.append(f"p{len(ids) + 1}")
            texts.append(text)
            known.add(text)
    return ids, texts


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """`adaptctl predict`: each input's normalised embedding."""
    from adaptctl.retrieval.embedder import encode, wrap

    vectors = encode(wrap(model, Path(model.name_or_path)), texts, batch_size)
    return [{"prediction": [round(float(v), 6) for v in vector]} for vector in vectors]


def recipe_problems(recipe, method) -> list:
    if method.is_peft:
        return [(("method", "name"), (f"task embedding trains the whole encoder, and {method.name} saves an adapter "
                                      "that sentence-transformers would not load as an embedder"),
                 "use method full (or freeze)")]
    return []


SPEC = TaskSpec(
    name="embedding", summary="a sentence embedder for retrieval trained on query-passage pairs with in-batch "
                              "negatives (sentence-transformers), measured by recall@k",
    auto_class="AutoModel", peft_task_type="FEATURE_EXTRACTION", pipeline_tag="sentence-similarity",
    label_names=(), output_names=("last_hidden_state",), per_example_loss=True, generates=False, has_label_map=False,
    templates=templates, canonicalize=None, tokenize=tokenize, collator=collator, evaluate=evaluate, predict=predict,
    data_problems=lambda data: [], metrics=METRICS, recipe_problems=recipe_problems,
    input_field=lambda data: "text",
    starter={"model": "sentence-transformers/all-MiniLM-L6-v2",
             "data": {"source": "data/pairs.jsonl", "question": "question", "context": "context", "max_length": 256},
             "method": {"name": "full"}},
    trainer=trainer, fresh_head=lambda path: False, retrieval_use=lambda data: "corpus", ships=SENTENCE_FILES,
    head_names=(),  # a sentence embedder has no task head: pooling reads the encoder's states
)
