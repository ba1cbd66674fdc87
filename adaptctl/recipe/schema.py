"""The recipe: pydantic models for every section (docs/getting-started.md).

Every field carries its help text: it feeds `adaptctl schema`, `adaptctl init`
and the docs' recipe reference (scripts/gen_docs.py).  Models forbid unknown keys
so that a typo is an error with a "did you mean" (see `recipe_load`), never a
silently ignored setting.
"""

from __future__ import annotations

import difflib
import re
import warnings
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from adaptctl.methods import (CONFIG_CLASSES, METHOD_CLASSES, METHOD_NAMES, METHOD_SPECS,  # noqa: F401 (re-exported)
                              PEFT_METHODS, default_learning_rates_text, get_method)
from adaptctl.methods.freeze import FreezeMethod  # noqa: F401 (re-exported: the recipe's method sections)
from adaptctl.methods.full import FullMethod  # noqa: F401
from adaptctl.methods.ia3 import IA3Method  # noqa: F401
from adaptctl.methods.lora import LoraMethod  # noqa: F401
from adaptctl.methods.prompting import PromptingMethod  # noqa: F401
from adaptctl.methods.virtual_tokens import VirtualTokenMethod  # noqa: F401
from adaptctl.data.pii import KINDS as _PII
from adaptctl.data.readers import FORMATS
from adaptctl.core.section import Section
from adaptctl.tasks import TASKS, all_tasks, foreign_data_fields, get_task, with_task_fields

# Every task and method describes itself once (tasks/<task>.py, methods/<method>.py); the recipe reads them.
PII_KINDS = tuple(_PII)
if TYPE_CHECKING:  # Literals of names the registries give at run time are beyond a static checker: it sees strings
    Task = str
    PiiKind = str
else:
    Task, PiiKind = Literal[TASKS], Literal[PII_KINDS]
ONNX_TASKS = tuple(spec.name for spec in all_tasks() if "onnx" in spec.export_formats)
GGUF_TASKS = tuple(spec.name for spec in all_tasks() if "gguf" in spec.export_formats)


# --------------------------------------------------------------------- data
class Source(Section):
    path: str = Field(description="File, folder, glob, or hub id. Relative paths are relative to the recipe file.")
    format: Literal[FORMATS] | None = Field(  # type: ignore[valid-type]
        None, description="Inferred from the extension when omitted ('arrow' is a datasets save_to_disk folder; "
                          "'conll' (.conll) one word and its tag per line, a blank line between sentences).")
    header: bool = Field(True, description="csv/tsv: the first line holds column names.")
    names: list[str] | None = Field(None, description="csv/tsv: column names (with header: false).")
    delimiter: str | None = Field(None, description="csv/tsv: field separator (default ',' or tab).")
    quoting: int | None = Field(None, ge=0, le=3, description="csv/tsv: csv module quoting constant (3 = none).")
    field: str | None = Field(None, description="json: the key that holds the list of records.")
    split: str | None = Field(None, description="hub or arrow DatasetDict: which split to read.")
    per_file: bool = Field(False, description="text: one example per file instead of one per line.")
    columns: dict[str, str] | None = Field(None, description=(
        "Line-aligned plain-text files, one column each, relative to path (then the folder they are in): line N "
        "of every file is row N, e.g. a parallel corpus {en: train.en, de: train.de}. Blank lines are rows too, "
        "and files of different lengths are refused."))

    @field_validator("columns")
    @classmethod
    def _plain_text_files(cls, columns, info):
        # A field validator, so that the problem is located at the recipe's columns line.
        if columns is None:
            return columns
        if not columns:
            raise ValueError("name at least one column and its file, e.g. {en: train.en, de: train.de}")
        if blank := [name for name, file in columns.items() if not name.strip() or not file.strip()]:
            raise ValueError(f"column {blank[0]!r}: every column needs a name and a file")
        if info.data.get("format") not in (None, "text") or info.data.get("per_file"):
            raise ValueError("columns reads plain-text files line by line; remove format (or set format: text) "
                             "and per_file")
        return columns


def _source_from_string(value):
    return {"path": value} if isinstance(value, str) else value


class Splits(Section):
    validation: float = Field(0.1, ge=0, lt=1, description="Fraction of source rows held out for validation.")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction of source rows held out for test.")
    stratify: bool = Field(True, description="Keep label proportions in every split (classification).")
    seed: int | None = Field(None, description="Seed of the split and of max_*_samples (default: the recipe's seed). Fix it to compare training seeds on the same held-out rows.")
    group: str | None = Field(None, description=(
        "Rows with the same value of this column or template stay in one split, e.g. '{context}' so that no "
        "paragraph's questions are in both train and test (extractive-qa does that by itself). The fractions "
        "then hold in groups, and in rows only approximately."))

    @model_validator(mode="after")
    def _leaves_training_rows(self):
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must leave rows for training (sum below 1)")
        return self


class Pii(Section):
    detect: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS), min_length=1, description=(
        f"What to look for ({', '.join(PII_KINDS)}): Presidio's pattern recognizers, phone numbers parsed by "
        "phonenumbers, cards Luhn-checked, IBANs checksummed. Names are not found: that needs an NER model."))
    action: Literal["report", "redact", "refuse"] = Field("report", description=(
        "report: count per kind and column in prepare/stats.json and the report; redact: also replace each span "
        "with a typed placeholder ([EMAIL], [PHONE], ...) before tokenizing; refuse: stop at the first rows that "
        "hold any, as file:line."))


class Corpus(Source):
    text: str = Field("text", description="The passage text: a column of the corpus, or a template over its columns.")
    id: str | None = Field(None, description=(
        "The passage id that prompts show and answers cite: a column or a template (default p1, p2, ... in the "
        "corpus's order; rows with the same text are one passage). Give it for ids that outlive an edited corpus."))


class Hybrid(Section):
    lexical: Literal["bm25"] = Field("bm25", description="The lexical ranking fused with the dense one: BM25 (bm25s, English stop words left out).")
    rrf_k: int = Field(60, gt=0, le=10000, description=(
        "Reciprocal-rank fusion's constant: a passage scores 1 / (rrf_k + its rank) in each ranking; 60 as in "
        "Cormack et al. 2009 and Elasticsearch. Lower lets a first place in one ranking weigh more."))


def _hybrid_from_shorthand(value):
    """`hybrid: bm25` (or `true`) for the defaults; `false` for none."""
    if value is True or value == "bm25":
        return {"lexical": "bm25"}
    if isinstance(value, str):
        raise ValueError(f"{value!r} is no lexical ranking adaptctl fuses: write `hybrid: bm25`, or a mapping "
                         "{lexical: bm25, rrf_k: 60}")
    return None if value is False else value


class Retrieval(Section):
    corpus: Corpus = Field(description="The documents answers come from: a path string or a mapping as data.source, "
                                       "plus the passage's text and id (one passage per row).")
    query: str = Field("{question}", description="What is searched for each row: a column or a template over the data's columns.")
    gold: str | None = Field(None, description=(
        "The passage that answers each row, when the data names it: a template giving its id, or its whole text "
        "(as '{context}' in SQuAD-style files). It scores retrieval (recall@k, MRR) and places the oracle in RAFT rows."))
    k: int = Field(3, gt=0, le=100, description="Passages retrieved for each question (what {{ passages }} holds at evaluate and predict).")
    embedder: str = Field("sentence-transformers/all-MiniLM-L6-v2", description=(
        "The sentence embedder: a hub id, model folder, or a run directory of task embedding (its model), "
        "resolved offline like model.base."))
    index: Literal["auto", "exact", "hnsw"] = Field("auto", description=(
        "exact: inner product against every passage; hnsw: FAISS's HNSW graph (approximate, faster on large "
        "corpora); auto: exact up to 100,000 passages (measured: docs/kbqa.md)."))
    distractors: int | None = Field(None, ge=0, le=100, description=(
        "RAFT: retrieved passages that are not the gold one shown in each training row (default k - 1)."))
    oracle_fraction: float | None = Field(None, ge=0, le=1, description=(
        "RAFT (Zhang et al. 2024): the share of training rows shown the gold passage among the distractors; the "
        "others get distractors only. Unset: training rows show the top k retrieved, as evaluate and predict do."))
    closed_book_prompt: str | None = Field(None, description=(
        "The closed-book baseline's prompt (the base model without passages): a template over the data's columns "
        "(default: data.prompt with {{ passages }} empty)."))
    passage: str = Field("[{id}] {text}", description="How each passage is written into {{ passages }} (fields id and text); passages are joined by blank lines.")
    batch_size: int = Field(64, gt=0, description="Passages embedded per batch (the embedding resumes from the last whole batch after a kill).")
    hybrid: Hybrid | None = Field(None, description=(
        "Fuse a BM25 ranking with the embedder's by reciprocal rank (`hybrid: bm25`, or a mapping with rrf_k): "
        "finds passages that share the question's rare words; measured on XQuAD in docs/kbqa.md. Unset: dense only."))

    _corpus = field_validator("corpus", mode="before")(_source_from_string)
    _hybrid = field_validator("hybrid", mode="before")(_hybrid_from_shorthand)

    @model_serializer(mode="wrap")
    def _without_unset_hybrid(self, handler):
        # Stage keys hash the recipe as dumped: a recipe without hybrid keys exactly as before the field existed.
        dumped = handler(self)
        if dumped.get("hybrid", "") is None:
            del dumped["hybrid"]
        return dumped


class Data(Section):
    source: Source = Field(description="Where the training rows come from (a path string or a mapping).")
    validation: Source | None = Field(None, description="A separate validation source (else split from source).")
    test: Source | None = Field(None, description="A separate test source (else split from source).")
    splits: Splits = Field(default_factory=Splits, description="Held-out fractions when no separate sources are given.")
    text: str | None = Field(None, description="Input text: a column name or a template such as '{title}: {body}'.")
    label: str | None = Field(None, description="classification: the label column.")
    prompt: str | None = Field(None, description="causal-lm/seq2seq: the prompt template (no loss on it); reinforcement: what the model answers.")
    response: str | None = Field(None, description="causal-lm/seq2seq: the response template (the loss covers it); reinforcement: the reference answer rewards and evaluate compare with.")
    chosen: str | None = Field(None, description="preference: the preferred reply (or whole transcript, without data.prompt).")
    rejected: str | None = Field(None, description="preference: the other reply (or whole transcript, without data.prompt).")
    references: str | None = Field(None, description=(
        "causal-lm/seq2seq: a column of reference texts (a list, or one text) that ROUGE, BLEU and chrF score "
        "against, all of them; unset: the numbered columns of the response (summary1, summary2, ...), or the whole "
        "list when data.response is '{{ col[0] }}', else the response."))
    question: str = Field("question", description="extractive-qa: the question column; embedding: the query (a column or template).")
    context: str = Field("context", description="extractive-qa: the context column; embedding: the passage that answers the query (a column or template).")
    answers: str = Field("answers", description="extractive-qa: the SQuAD-style answers column.")
    messages: str | None = Field(None, description=(
        "causal-lm: a column of conversations in the OpenAI chat format ([{role: system|user|assistant, content}]), "
        "rendered with the chat template; every assistant turn is trained, nothing else."))
    conversations: str | None = Field(None, description=(
        "causal-lm: a column of ShareGPT conversations ([{from, value}]), its roles mapped by data.roles; "
        "trained as data.messages."))
    roles: dict[str, Literal["system", "user", "assistant"]] = Field(
        default_factory=lambda: {"human": "user", "gpt": "assistant", "system": "system"},
        description="data.conversations: each ShareGPT `from` value and the chat role it is.")
    chat_template: bool | str = Field(False, description=(
        "causal-lm, preference and reinforcement: wrap prompts and replies in the model's chat template (true); or a Jinja chat template of "
        "your own, for a base model that has none (also used by data.messages and data.conversations)."))
    max_length: int = Field(256, gt=0, le=131072, description="Tokens per example; longer inputs are truncated and counted.")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="masked-lm: the share of words masked (whole words).")
    packing: bool = Field(False, description="causal-lm plain text: concatenate documents and cut them into "
                                              "max_length blocks, so no token is padding.")
    stride: int = Field(128, gt=0, description="extractive-qa: overlap between windows of a long context.")
    max_train_samples: int | None = Field(None, gt=0, description="Keep only this many training rows (after shuffling).")
    max_eval_samples: int | None = Field(None, gt=0, description="Keep only this many validation/test rows.")
    pii: Pii | None = Field(None, description=(
        "Personal data in the columns the templates read (e-mail, phone, card, IBAN, IP, URL): counted, and "
        "reported, redacted or refused before tokenizing. docs/privacy.md."))
    retrieval: Retrieval | None = Field(None, description=(
        "Knowledge-base QA (docs/kbqa.md): retrieve passages from a corpus for every row, into the prompt as "
        "{{ passages }}; task embedding: the corpus its recall@k is measured against."))

    _sources = field_validator("source", "validation", "test", mode="before")(_source_from_string)


# The fields above are read by several tasks; a task adds its own in its module (TaskSpec.data_fields).
Data = with_task_fields(Data)  # type: ignore[misc]


# ------------------------------------------------------------------- model
class MinedTokens(Section):
    from_data: int = Field(gt=0, le=10000, description="Mine this many words of the training text that the base "
                                                        "tokenizer splits the most (frequency x pieces saved).")


class Model(Section):
    base: str = Field(description="Hub id, local model folder, .gguf file, or an earlier run directory (its model); "
                                  "resolved offline (see `adaptctl models`).")
    trust_remote_code: bool = Field(False, description="Allow model code from the model folder (off: it runs arbitrary code).")
    allow_pickle: bool = Field(False, description="Allow pickle (.bin) weights; safetensors only by default.")
    pooling: Literal["auto", "cls", "mean"] = Field("auto", description=(
        "classification: what the head reads. cls: the [CLS] pooler (BertForSequenceClassification); mean: the "
        "mean of the token states, as sentence-transformers models were trained (BERT bases). auto: mean where "
        "model.base is a sentence-transformers BERT folder with mean pooling (1_Pooling/config.json), else cls."))
    add_tokens: list[str] | MinedTokens | None = Field(None, description=(
        "Domain vocabulary: words added to the tokenizer as whole tokens (a list, or {from_data: N}); new "
        "embeddings start at the mean of the word's old pieces. Method full only."))
    decoder: str | None = Field(None, description=(
        "seq2seq: warm-start an encoder-decoder from two pretrained models (transformers' EncoderDecoderModel; "
        "BERT2BERT, Rothe et al. 2020): model.base is the encoder, this model (hub id, folder or run directory, "
        "with the same tokenizer) the decoder, its cross-attention new. Composed once into the cache; trained, "
        "exported and predicted as any seq2seq model (docs/translation.md). Method full only."))


# ----------------------------------------------------------------- methods
if TYPE_CHECKING:  # the union is built from the method registry at run time; a static checker sees the sections
    Method = Union[FullMethod, FreezeMethod, LoraMethod, IA3Method, VirtualTokenMethod, PromptingMethod]
else:
    Method = Annotated[Union[CONFIG_CLASSES], Field(discriminator="name")]


# ------------------------------------------------------------------- train
class Privacy(Section):
    epsilon: float = Field(gt=0, le=100, description=(
        "DP-SGD: the privacy budget to reach at the end of training; the noise is calibrated to spend it over "
        "the run's steps (lower is more private; 1-8 is the usual range). docs/privacy.md."))
    delta: float | None = Field(None, gt=0, lt=1, description=(
        "The probability that the epsilon guarantee fails; must be below 1 / training rows (default: the largest "
        "power of ten at or below 1 / (10 x training rows))."))
    max_grad_norm: float = Field(1.0, gt=0, description=(
        "Each training example's gradient is clipped to this L2 norm before noise is added (train.max_grad_norm "
        "is not used with privacy)."))
    accountant: Literal["prv", "rdp"] = Field("prv", description=(
        "Opacus' privacy accountant: prv (privacy random variables, the tightest bound) or rdp (Renyi DP, "
        "looser; faster to calibrate). Opacus' gdp is left out: it can underestimate the epsilon spent."))


class Distributed(Section):
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field("ddp", description="Data parallel, fully sharded, or DeepSpeed.")
    fsdp_cpu_offload: bool = Field(False, description="fsdp: keep parameters on the CPU between uses.")
    deepspeed_config: str | None = Field(None, description="deepspeed: path to its JSON config.")
    timeout_minutes: int = Field(30, gt=0, description="How long a rank waits for the others before the run fails.")


# `train.validate` shadows pydantic's deprecated BaseModel.validate classmethod, which recipes never call;
# without this filter every command that loads a recipe prints pydantic's warning about it.
warnings.filterwarnings("ignore", message='Field name "validate" in "Train" shadows', category=UserWarning)


class Train(Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(16, gt=0, description="Examples per device per step.")
    gradient_accumulation: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    learning_rate: float | None = Field(None, gt=0, description=f"Peak learning rate (default: {default_learning_rates_text()}).")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("linear", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Fraction of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    validate: bool = Field(True, description="Compute the validation loss while training (each epoch, or every eval_every steps). The evaluate stage scores the model either way.")
    eval_every: int | None = Field(None, gt=0, description="Evaluate on validation every N steps (default: each epoch).")
    save_every: int | None = Field(None, gt=0, description="Save a resumable checkpoint every N steps (default: each epoch).")
    keep_checkpoints: int = Field(2, gt=0, description="How many checkpoints to keep.")
    early_stopping_patience: int | None = Field(None, gt=0, description="Stop after this many evaluations without improvement.")
    logging_steps: int = Field(10, gt=0, description="Log loss, learning rate and throughput every N steps.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description=(
        "auto: on a GPU with bf16, the faster of bf16 and fp32, measured on the run's first batch (kept for a "
        "resume); on a CPU, bf16 where it has AVX512-BF16 or AMX; else fp32."))
    threads: int | None = Field(None, gt=0, description="CPU threads for torch (default: OMP_NUM_THREADS, else one per core); `--threads` overrides it. On a busy machine fewer threads can be faster.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    padding_free: bool = Field(False, description=(
        "causal-lm on CUDA: join each batch's rows into one (DataCollatorWithFlattening) and attend with "
        "FlashAttention-2's varlen kernels, so no padding is computed (needs flash-attn). On a CPU: no effect, said in the log."))
    liger: bool = Field(False, description="CUDA: Liger kernels (fused norms, RoPE, SwiGLU, cross-entropy; needs liger-kernel). On a CPU: no effect, said in the log.")
    compile: bool = Field(False, description="CUDA: torch.compile the model (the Trainer's torch_compile); the first steps pay the compilation. On a CPU: no effect, said in the log.")
    length_bucketing: bool = Field(True, description="Batch examples of similar length (less padding); batch order stays random. 1.4x faster on SST-2 at the same accuracy over 5 seeds (bench/RESULTS.md). Single-process runs; distributed runs shuffle as usual.")
    fast_dropout: bool = Field(True, description=(
        "CPU training: draw dropout masks from 16-bit random integers instead of one Bernoulli sample per "
        "element (the same keep probability): bench/RESULTS-cpu-levers.md. On a GPU: no effect."))
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list, description="Trainer integrations (local).")
    class_weights: Literal["auto"] | dict[str, Annotated[float, Field(gt=0)]] | None = Field(None, description=(
        "classification: weight of each class in the loss (and in distillation's label term). auto: inverse "
        "frequency in the prepared train split (n / (classes x count)); or {label: weight}, unnamed labels 1."))
    label_smoothing: float = Field(0.0, ge=0, lt=1, description=(
        "classification: the share of each target spread evenly over all classes (0: one-hot targets)."))
    distributed: Distributed = Field(default_factory=Distributed, description="Multi-process settings (under torchrun/accelerate or --nproc).")
    privacy: Privacy | None = Field(None, description=(
        "Differentially private training (DP-SGD through Opacus): per-example clipping, Gaussian noise calibrated "
        "to reach train.privacy.epsilon, Poisson sampling; the epsilon spent is logged and recorded. docs/privacy.md."))


# --------------------------------------------------------------------- api
class Api(Section):
    """An OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's server, Ollama, `adaptctl serve`): docs/api-models.md."""
    base_url: str = Field(description="The endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1.")
    model: str = Field(description="The model name the endpoint serves.")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description=(
        "The name of the environment variable that holds the key (read at run time, redacted, never written). "
        "Unset: no key (a local server)."))
    max_concurrency: int = Field(4, gt=0, le=256, description="Requests in flight at once.")
    timeout: float = Field(60.0, gt=0, description="Seconds one request may take before it is retried.")
    max_retries: int = Field(4, ge=0, le=20, description=(
        "Retries of a request that met 429, 5xx, a timeout or a broken connection, with exponential backoff and "
        "jitter, waiting as Retry-After says (the openai client's own)."))
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0: greedy, repeatable answers).")
    max_tokens: int = Field(64, gt=0, description="Longest answer, in tokens.")
    system: str | None = Field(None, description="A system prompt put before every conversation (chat models).")
    cost_per_1k_tokens: float | None = Field(None, ge=0, description="Price of 1,000 tokens (prompt and answer): the report then gives the cost.")
    cache_as: str | None = Field(None, min_length=1, description=(
        "The endpoint's name in the run's answer cache (default: base_url). Name a local server whose port "
        "changes between runs, so that its answers stay cached."))


class ApiModel(Section):
    api: Api = Field(description="The endpoint and model to call.")


def _shape(value) -> str:
    return "api" if isinstance(value, (dict, ApiModel)) else "named"


def _named_or_api(plain, block: type[ApiModel] = ApiModel):
    """A field that takes a name (plain) or an {api: ...} block, tagged by the value's shape, so that a wrong api
    block is reported at its own keys (recipe_loader strips the tag, API_UNION_TAGS, from the location)."""
    from pydantic import Discriminator, Tag

    return Annotated[Union[Annotated[plain, Tag("named")], Annotated[block, Tag("api")]], Discriminator(_shape)]


API_UNION_FIELDS, API_UNION_TAGS = (("evaluate", "baseline"), ("distill", "teacher")), ("named", "api")


class Judge(Section):
    api: Api = Field(description="The endpoint and model that judges.")
    criteria: str = Field("Which answer is more accurate, complete and faithful to the prompt?", description=(
        "What the judge weighs when it compares two answers to one prompt."))
    max_examples: int | None = Field(None, gt=0, description="Judge only the first N examples (each costs two calls).")


# ---------------------------------------------------------------- evaluate
class Generation(Section):
    max_new_tokens: int = Field(64, gt=0, description="Longest generated answer.")
    num_beams: int = Field(1, gt=0, description="Beam search width (1 = greedy).")
    do_sample: bool = Field(False, description="Sample instead of greedy/beam decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature.")


# What each task's evaluation computes (its spec's metrics): the names a recipe may ask for.
ALL_METRICS = tuple(dict.fromkeys(m for spec in all_tasks() for m in spec.metrics))


BASELINES = ("auto", "majority", "zero-shot", "base-model", "none")
if TYPE_CHECKING:  # as Task above
    MetricName = str
    BaselineName = str
else:
    MetricName, BaselineName = Literal[ALL_METRICS], Literal[BASELINES]



class ApiBaseline(ApiModel):
    """evaluate.baseline: {api: ...}: the API model is reported in addition to a baseline of the base model."""
    beside: BaselineName = Field("auto", description=(
        "The baseline measured beside the API model, as evaluate.baseline names one (auto: the majority class or "
        "the base model, as auto chooses; none: the API model alone)."))


if TYPE_CHECKING:  # a name or an {api: ...} block, as _named_or_api builds it at run time
    BaselineField = Union[str, ApiBaseline]
    TeacherField = Union[str, ApiModel]
else:
    BaselineField, TeacherField = _named_or_api(Literal[BASELINES], ApiBaseline), _named_or_api(str)


class General(Section):
    source: Source = Field(description=(
        "General (out-of-domain) text to measure forgetting on: a path string or a mapping as data.source; "
        "relative paths are relative to the recipe file."))
    text: str = Field("text", description="The text column, or a template over columns such as '{title}. {body}'.")
    max_examples: int = Field(200, gt=0, description=(
        "Score this many rows of the source, drawn with the recipe's seed (all of them where it has fewer)."))

    _sources = field_validator("source", mode="before")(_source_from_string)


class Evaluate(Section):
    split: Literal["validation", "test"] = Field("test", description="Which held-out split to measure.")
    metrics: list[MetricName] | None = Field(None, description="Metrics to report (default: all that fit the task).")
    average: Literal["binary", "macro", "micro", "weighted"] | None = Field(
        None, description="classification: how precision/recall/F1 average over classes (binary for 2 classes, else macro).")
    positive_label: str | None = Field(None, description="classification, binary: the positive class name.")
    baseline: BaselineField | None = Field(None, description=(
        "What the adapted model is measured against (docs/evaluation.md): {api: {...}} (a model behind an "
        "OpenAI-compatible API, docs/api-models.md, reported in addition to the baseline its `beside` names, auto "
        "unless set), majority (classification: the train "
        "split's most frequent label), zero-shot (the base model prompted, untrained), base-model (its untrained "
        "head), none, or auto (zero-shot where the base model is a causal LM or the task generates, majority for "
        "other classifiers, base-model for extractive-qa). Unset: auto if compare_with_base, compare_with or general is set, else none."))
    compare_with: Literal["parent", "base"] | None = Field(None, description=(
        "Which model the baseline (and evaluate.general) runs on when model.base is an earlier run: parent (that "
        "run's model, as model.base names it) or base (the first model of the chain, from the lineage). Setting it "
        "with evaluate.baseline unset asks for baseline: auto. Unset: parent."))
    compare_with_base: bool = Field(False, description="Older spelling: true means baseline: auto (when evaluate.baseline is unset), compared with the parent.")
    general: General | None = Field(None, description=(
        "masked-lm and causal-lm continued pretraining: a forgetting check, the perplexity of general text for "
        "the adapted model and the base (the same seeded masks for masked-lm), and its change beside the domain gain."))
    compare_with_teacher: bool = Field(True, description="distill: also evaluate the teacher on the same split; the report shows the metric retained, parameters and inference speed of both.")
    few_shot: int = Field(0, ge=0, description="prompting: how many training examples to show in the prompt.")
    batch_size: int = Field(32, gt=0, description="Examples per inference batch.")
    max_examples: int | None = Field(None, gt=0, description="Evaluate only the first N examples of the split.")
    generation: Generation = Field(default_factory=Generation, description="Decoding settings for generation tasks.")
    answer_pattern: str | None = Field(None, description=(
        "causal-lm/seq2seq/reinforcement, generative QA: a regular expression whose first group is the answer (e.g. '####\\s*(\\S+)'), "
        "applied to the reference and the generated text; exact_match and f1 then compare the answers, as numbers "
        "where both parse as one. A generation it does not match counts as wrong and is counted in the report."))
    answer_fallback: Literal["auto", "last-number", "none"] = Field("auto", description=(
        "With answer_pattern: a second figure, exact_match_fallback, that takes the last number of a generation "
        "the pattern does not match (a model never taught the format may still be right). auto: last-number "
        "where every reference answer is a number, else none. exact_match itself is unchanged."))
    slices: list[str] = Field(default_factory=list, description=(
        "Data columns (or templates over columns, such as '{lang}-{source}') to report every metric by: each "
        "value's metrics and count, the gap between the best and worst value, and a plot. Kept through prepare "
        "beside the model's inputs, never fed to the model."))
    explain: int = Field(0, ge=0, le=100, description=(
        "classification: token attributions (Captum's layer integrated gradients over the input embeddings) for "
        "this many worst and this many best examples, into evaluate/attributions.jsonl and report.md (0: none)."))
    canaries: int = Field(0, ge=0, le=1000, description=(
        "causal-lm: plant this many random secrets ('My account number is' and 12 digits) among the training rows "
        "at prepare, and measure their exposure after training (Carlini et al., The Secret Sharer): the rank of "
        "each one's likelihood among 1,000 random candidates, in bits (0 = none)."))
    canary_copies: int | None = Field(None, ge=1, le=100, description=(
        "How many times each canary is planted (default 1; repeated secrets are memorised sooner)."))
    calibrate: bool = Field(False, description=(
        "classification: fit a temperature T on the validation split (never the test split) by minimising the "
        "negative log-likelihood of softmax(logits / T); the report shows the expected calibration error before "
        "and after, and export and predict divide the logits by T."))

    judge: Judge | None = Field(None, description=(
        "Generation tasks: an API model compares the adapted model's answer with the baseline's for each prompt, "
        "in both orders; the win/tie/loss rates with a 95% interval (docs/api-models.md)."))

    def baseline_request(self) -> str:
        """The baseline of the base model asked (auto, majority, zero-shot, base-model, none): evaluate.baseline,
        or beside an API baseline its `beside`; compare_with_base, the older spelling, counts only where unset."""
        if isinstance(self.baseline, ApiBaseline):
            return self.baseline.beside
        if self.baseline is not None:
            return self.baseline
        # compare_with and a forgetting check need something to compare with: the base model, as auto chooses
        return "auto" if self.compare_with_base or self.compare_with or self.general else "none"

    def api_baseline(self) -> ApiBaseline | None:
        """The API model measured beside the adapted model (evaluate.baseline: {api: ...}), if any."""
        return self.baseline if isinstance(self.baseline, ApiBaseline) else None

    def compared_with(self) -> str:
        """parent (model.base as named) or base (the chain's first model); compare_with_base means parent."""
        return self.compare_with or "parent"


# ----------------------------------------------------------------- distill
class Student(Section):
    base: str | None = Field(None, description="Student model (default: model.base).")
    layers: int | None = Field(None, gt=0, description="Keep this many transformer layers, evenly spaced.")


class Augment(Section):
    copies: int = Field(0, ge=0, le=100, description="classification: noisy copies of every training row, taught by the teacher's soft targets alone (0 = off).")
    mask: float = Field(0.1, ge=0, lt=1, description="Probability that a copy masks each ordinary token.")
    span: float = Field(0.25, ge=0, le=1, description="Probability that a copy keeps only a random run of its tokens.")
    max_span: int = Field(5, gt=0, description="Longest run of tokens such a copy keeps.")


class Preference(Section):
    loss: Literal["dpo", "ipo", "orpo", "kto", "simpo"] = Field("dpo", description=(
        "preference: TRL's loss: dpo and ipo (DPOTrainer), orpo (ORPOTrainer, no reference), kto (KTOTrainer on "
        "the pairs unpaired), simpo (CPOTrainer, no reference)."))
    beta: float = Field(0.1, gt=0, description="How far the model may move from the reference (DPO's beta; IPO's tau; ORPO's lambda).")
    reference: Literal["base"] = Field("base", description=(
        "The reference model: the base model (with an adapter method, the model with its adapter switched off)."))


REWARD_KINDS = ("answer_match", "format", "length", "label_match", "python")
if TYPE_CHECKING:  # as Task above
    RewardKind = str
else:
    RewardKind = Literal[REWARD_KINDS]


class Reward(Section):
    kind: RewardKind = Field(description=(
        "answer_match: 1 when the completion's answer (pattern) equals the reference's, as numbers where both "
        "parse as one; format: 1 when the completion matches `pattern`; length: 1 inside [min, max], falling "
        "linearly outside; label_match: 1 when the completion names the reference label and no other label; "
        "python: your own function (`python: file.py:function`)."))
    weight: float = Field(1.0, description="Its weight in the total reward that GRPO's advantages are computed from.")
    pattern: str | None = Field(None, description=(
        "answer_match: a regular expression whose first group is the answer (default: evaluate.answer_pattern; "
        "neither: the whole text); format: the expression the completion must match (re.search; anchor it with ^ "
        "and $ to cover the whole completion)."))
    column: str | None = Field(None, description=(
        "answer_match, label_match: the reference, a data column or a template over columns (default: data.response)."))
    min: int | None = Field(None, ge=0, description="length: the shortest length that gets the full reward.")
    max: int | None = Field(None, gt=0, description="length: the longest length that gets the full reward.")
    unit: Literal["tokens", "words", "characters"] = Field("tokens", description="length: what is counted.")
    labels: list[str] | None = Field(None, description=(
        "label_match: the label names (default: every distinct reference of the split being scored)."))
    python: str | None = Field(None, description=(
        "python: FILE.py:FUNCTION, a file of your own (relative to the recipe), never one inside a model folder. "
        "Called as TRL calls a reward function: prompts, completions, completion_ids, reference and every data "
        "column as keyword lists; it returns one number (or None) per completion."))

    @model_validator(mode="before")
    @classmethod
    def _python_names_its_kind(cls, value):
        # `- python: rewards.py:brevity` is enough: the key says the kind
        if isinstance(value, dict) and "python" in value and "kind" not in value:
            return {"kind": "python", **value}
        return value


class RL(Section):
    num_generations: int = Field(8, ge=2, description=(
        "Completions sampled per prompt (GRPO's group); train.batch_size counts completions, so a step trains on "
        "batch_size / num_generations prompts per process."))
    max_completion_length: int = Field(256, gt=0, description="Longest sampled completion, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the completions.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: the top tokens whose probabilities sum to top_p.")
    beta: float = Field(0.0, ge=0, description=(
        "Weight of the KL divergence to the reference model (0: no reference is scored). With an adapter method the "
        "reference is the model with its adapter switched off; with full fine-tuning a frozen copy of the base."))
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = Field("dapo", description=(
        "TRL's GRPO loss: grpo (per-sequence mean), dr_grpo (a constant normaliser), dapo (token mean over the "
        "accumulated batch, TRL's default), bnpo, cispo, sapo, luspo (needs importance_sampling_level: sequence), vespo."))
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description=(
        "Divide advantages by the rewards' standard deviation in the group, the batch, or not at all (Dr. GRPO)."))
    epsilon: float = Field(0.2, gt=0, description="Clipping range of the policy ratio.")
    importance_sampling_level: Literal["token", "sequence"] = Field("token", description=(
        "token: one policy ratio per token (GRPO); sequence: one per completion (GSPO)."))
    mask_truncated_completions: bool = Field(False, description=(
        "Leave completions cut at max_completion_length out of the loss (DAPO)."))
    rewards: list[Reward] = Field(min_length=1, description=(
        "The rewards, each {kind, weight, ...}; their weighted sum is the reward GRPO maximises. Each one's mean "
        "per step goes to train/metrics.jsonl and loss.png, and evaluate reports it on the held-out split."))


class Distill(Section):
    teacher: TeacherField = Field(description=(
        "A run directory, a model folder, or a hub id; or {api: {...}}: a model behind an OpenAI-compatible API "
        "labels (classification) or answers (generation) the training inputs, and the student trains on them "
        "(sequence-level distillation, docs/api-models.md)."))
    student: Student = Field(default_factory=Student, description="The smaller model to train.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the soft targets.")
    alpha: float = Field(0.5, ge=0, le=1, description=(
        "Weight of the soft-target loss; 1 - alpha on the labels. With an API teacher: the share of training rows "
        "(drawn with the seed) that take the teacher's answer; the others keep their gold one (1: the teacher's only)."))
    loss: Literal["kl", "reverse-kl", "jsd"] = Field("kl", description="Divergence between teacher and student.")
    cache_teacher: bool = Field(False, description="Compute the teacher's logits once and store them.")
    top_k: int = Field(64, gt=0, description="causal-lm with cache_teacher: keep the top-k teacher logits per token.")
    hidden_weight: float = Field(0.0, ge=0, description="Weight of a hidden-state term: 1 - cosine similarity between each student layer's output and the teacher layer it was taken from (DistilBERT, PKD). Needs the live teacher (cache_teacher: false) and equal hidden sizes.")
    augment: Augment = Field(default_factory=Augment, description="A transfer set of perturbed training rows that only the teacher labels (Tang et al. 2019).")


# ------------------------------------------------------------------ export
class Gguf(Section):
    types: list[Literal["f32", "f16", "bf16", "q8_0"]] = Field(
        default_factory=lambda: ["f16", "q8_0"], min_length=1,
        description="The GGUF files to write, one per type (model-TYPE.gguf): f16 is the reference, q8_0 half its "
                    "size; the Ollama Modelfile uses the smallest.")


class Export(Section):
    merge_adapter: bool = Field(True, description="Merge LoRA/DoRA/IA3 adapters into the base weights.")
    max_shard_size: int | str = Field("2GB", description="Shard weights above this size: bytes, or digits and a unit such as '2GB', '500MB', '1GiB'.")
    formats: list[Literal["onnx", "gguf"]] = Field(default_factory=list, description=(
        "Extra formats besides safetensors: onnx (classifiers, extractive QA); gguf (causal LMs of the "
        "Llama architecture, for llama.cpp and Ollama; docs/gguf.md)."))
    gguf: Gguf = Field(default_factory=Gguf, description="export.formats: gguf: which GGUF types to write.")
    verify: bool = Field(True, description="Reload the export in a fresh process and check its outputs.")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Precision of the saved weights: bf16 and fp16 halve the folder (ONNX stays fp32).")

    @field_validator("max_shard_size", mode="before")
    @classmethod
    def _a_size_transformers_reads(cls, value):
        # save_pretrained only parses the size when it writes the weights, after training: check it now.
        if not _is_shard_size(value):
            raise ValueError(f"{value!r} is not a size")
        return value


# The forms transformers' convert_file_size_to_int accepts (an integer and a unit; a lower-case b means bits).
SHARD_SIZE = re.compile(r"\s*[1-9][0-9]*\s*[KMG]i?B", re.IGNORECASE)


def _is_shard_size(value) -> bool:
    if isinstance(value, bool):  # YAML's yes/true is no size, though Python counts it an int
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and SHARD_SIZE.fullmatch(value) is not None



# ------------------------------------------------------------------- sweep
# The metrics where lower is better: a sweep minimises them unless told otherwise.
LOWER_IS_BETTER = ("eval_loss", "perplexity")
# What a sweep may not vary: the run's name (each trial gets its own), the sweep itself, and the task
# (a different task is a different recipe, not a point of one search space).
UNSWEEPABLE = ("name", "sweep", "extends", "task", "secrets")
# Optuna's categorical choices: what its storage can hold.
SweepValue = Union[str, bool, int, float, None]


class SweepRange(Section):
    low: int | float = Field(description="Smallest value. Integers for low, high and step sample integers.")
    high: int | float = Field(description="Largest value (included).")
    log: bool = Field(False, description="Sample on a log scale (learning rates); low must be above 0.")
    step: int | float | None = Field(None, gt=0, description="Spacing of the values (not with log); a grid needs it to list a range's values.")

    @model_validator(mode="after")
    def _a_range_optuna_takes(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low above 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both (Optuna samples a log scale without steps)")
        return self

    @property
    def integers(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def grid_count(self) -> int | None:
        """How many values a grid visits (None: no step), by arithmetic: a tiny step or huge integer
        bounds must be refused as too many, not listed first."""
        if self.step is None:
            return None
        if self.integers:
            return int((self.high - self.low) // self.step) + 1  # int already: int() tells mypy
        return int((self.high - self.low) / self.step + 1e-9) + 1

    def grid_values(self) -> list | None:
        """The values a grid visits: low, low + step, ... up to high (None: no step); build them only
        after grid_count said how many."""
        count = self.grid_count()
        if count is None:
            return None
        assert self.step is not None  # grid_count gave a count
        return [self.low + i * self.step if self.integers else round(self.low + i * self.step, 12) for i in range(count)]


class Sweep(Section):
    parameters: dict[str, Annotated[list[SweepValue], Field(min_length=1)] | SweepRange] = Field(
        description="Recipe fields by dotted path (model.base, method.name, method.r, train.learning_rate) -> a list "
                    "of values, or a range {low, high, log, step}. A method.* field applies to the trials whose method has it.")
    metric: str = Field("eval_loss", description="What to optimise: a metric evaluate reports for the task (accuracy, f1, rougeL, ...), or eval_loss (the validation loss of training).")
    direction: Literal["maximize", "minimize"] | None = Field(None, description=f"maximize or minimize the metric (default: minimize {' and '.join(LOWER_IS_BETTER)}, maximize the others).")
    n_trials: int | None = Field(None, gt=0, description="Trials to finish (default: every point of a grid, else 10). Failed trials count; interrupted ones are finished on the next run.")
    sampler: Literal["grid", "random", "tpe"] | None = Field(None, description="Optuna sampler: grid (every combination), random, or tpe (default: grid when every parameter is a list or a stepped range, else tpe).")
    pruner: Literal["median", "none"] = Field("median", description="Stop a trial whose validation loss is behind the median of earlier trials at the same step (needs train.validate, and train.eval_every to check before the end).")
    pruner_startup_trials: int = Field(2, ge=0, description="median: trials that finish before any is pruned.")
    pruner_warmup_steps: int = Field(0, ge=0, description="median: training steps before a trial may be pruned.")
    storage: str | None = Field(None, description="Optuna RDB storage URL shared by every worker (e.g. postgresql://user@host/db; default: SQLite in RUN_DIR/sweep/study.db).")
    study_name: str | None = Field(None, description="The study's name in the storage (default: the recipe's name).")
    seed: int | None = Field(None, ge=0, lt=2**32, description="Seed of the sampler (default: the recipe's seed).")

    @field_validator("parameters")
    @classmethod
    def _some_parameters(cls, parameters: dict):
        if not parameters:
            raise ValueError("the search space is empty: name at least one recipe field, e.g. train.learning_rate: [1.0e-4, 5.0e-4]")
        return parameters

    def chosen_sampler(self) -> str:
        discrete = all(not isinstance(v, SweepRange) or v.step is not None for v in self.parameters.values())
        return self.sampler or ("grid" if discrete else "tpe")

    def chosen_direction(self) -> str:
        return self.direction or ("minimize" if self.metric in LOWER_IS_BETTER else "maximize")


# ------------------------------------------------------------------ recipe
def _schema_with_extends(schema: dict):
    # `extends` is read (and removed) by the loader before validation, so it is no field of the
    # resolved recipe; editors that check recipes against the schema must still accept it.
    schema["properties"] = {"extends": {"type": "string", "title": "Extends", "description": EXTENDS_HELP},
                            **schema["properties"]}


EXTENDS_HELP = "A recipe file this one builds on, relative to this file; its sections are merged under this one's."


class Recipe(Section):
    model_config = ConfigDict(json_schema_extra=_schema_with_extends)  # merged with Section's

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name; the default run directory is runs/<name>.")
    description: str | None = Field(None, description="Free text shown in the model card.")
    task: Task = Field(description=" | ".join(TASKS) + " (docs/tasks/index.md).")
    seed: int = Field(42, ge=0, lt=2**32, description="Seed for splits, initialisation and data order (numpy needs 0 <= seed < 2**32).")
    model: Model = Field(description="The base model.")
    data: Data = Field(description="Where the data is and how to read it.")
    method: Method = Field(default_factory=lambda: FullMethod(name="full"), description="Adaptation method and its settings.")
    train: Train = Field(default_factory=Train, description="Training hyperparameters.")
    evaluate: Evaluate = Field(default_factory=Evaluate, description="Held-out evaluation.")
    distill: Distill | None = Field(None, description="Knowledge distillation into a smaller student.")
    preference: Preference = Field(default_factory=Preference, description="task preference: the loss and its reference.")
    rl: RL | None = Field(None, description="task reinforcement: GRPO's sampling, loss and rewards (TRL's GRPOTrainer).")
    export: Export = Field(default_factory=Export, description="The shipped model folder.")
    secrets: list[str] = Field(default_factory=list, description="Environment variables to keep out of logs and outputs.")
    sweep: Sweep | None = Field(None, description="`adaptctl sweep`: trials over recipe fields (Optuna); the stages ignore it.")

    @field_validator("export")
    @classmethod
    def _exportable_formats(cls, export: Export, info):
        # A field validator (not a model validator) so that the problem is located at the recipe's export line.
        task, method = info.data.get("task"), info.data.get("method")
        if "onnx" in export.formats and task is not None and task not in ONNX_TASKS:
            raise ValueError(f"export.formats: onnx is for {' and '.join(ONNX_TASKS)} models, not {task}; "
                             "remove onnx from export.formats")
        if "gguf" in export.formats and task is not None and task not in GGUF_TASKS:
            raise ValueError(f"export.formats: gguf is for {' and '.join(GGUF_TASKS)} models, not {task}; "
                             "remove gguf from export.formats")
        for name in ("onnx", "gguf"):
            if name in export.formats and method is not None and get_method(method.name).virtual_tokens:
                raise ValueError(f"export.formats: {name} needs the adapter merged into the weights, and {method.name} "
                                 f"adds virtual tokens that cannot be merged; use lora, or remove {name} from export.formats")
        return export



def cross_field_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """Checks that span sections, as (field path, message, hint) triples.

    They run after pydantic so that each problem can point at one field.
    """
    task, method = get_task(recipe.task), get_method(recipe.method.name)
    problems = data_field_problems(recipe.task, recipe.data.model_dump())
    if not method.trains and not task.prompting_method:
        names = " and ".join(spec.name for spec in all_tasks() if spec.prompting_method)
        problems.append((("method", "name"), f"{method.name} is for {names}, not {recipe.task}",
                         f"use a causal-lm base model with task {names.replace(' and ', ' or ')}"))
    if recipe.train.max_steps is None and recipe.train.epochs <= 0:
        problems.append((("train", "epochs"), "set train.epochs or train.max_steps", "e.g. epochs: 1"))
    if recipe.train.early_stopping_patience and not recipe.train.validate:
        problems.append((("train", "validate"), "early stopping needs the validation loss, and train.validate is false",
                         "set train.validate: true or remove train.early_stopping_patience"))
    if recipe.distill and not method.trains:
        problems.append((("distill",), f"distillation trains a student; method {method.name} trains nothing",
                         "use method full or lora for the student"))
    problems += _augment_problems(recipe) + _hidden_state_problems(recipe) + _distill_task_problems(recipe)
    problems += task.recipe_problems(recipe, method) + _deepspeed_problems(recipe) + _metric_problems(recipe)
    problems += _baseline_problems(recipe) + _label_loss_problems(recipe) + _calibration_problems(recipe)
    problems += _slice_problems(recipe) + _explain_problems(recipe) + _answer_pattern_problems(recipe)
    problems += _padding_free_problems(recipe) + sweep_problems(recipe) + _packing_problems(recipe)
    problems += _add_tokens_problems(recipe) + _general_problems(recipe) + _compare_with_problems(recipe)
    problems += _references_problems(recipe) + _pooling_problems(recipe)
    problems += _privacy_problems(recipe) + _pii_problems(recipe) + _canary_problems(recipe) + _decoder_problems(recipe)
    problems += _retrieval_problems(recipe) + _api_problems(recipe)
    return problems + _task_section_problems(recipe)


def _api_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    # An API model answers in text: the task must say how to ask it and read its answers (spec.api_form).
    task = get_task(recipe.task)
    problems: list[tuple[tuple, str, str]] = []
    form = task.api_form(recipe.data) if task.api_form else None
    able = ", ".join(spec.name for spec in all_tasks() if spec.api_form)
    uses = [(("evaluate", "baseline"), isinstance(recipe.evaluate.baseline, ApiModel)),
            (("distill", "teacher"), recipe.distill is not None and isinstance(recipe.distill.teacher, ApiModel)),
            (("evaluate", "judge"), recipe.evaluate.judge is not None)]
    for field, used in uses:
        if used and form is None:
            problems.append((field, f"an API model answers {able} tasks (prompt and response data), not "
                             f"{recipe.task}{task.data_kind(recipe.data)}", f"remove {'.'.join(field)}"))
    if recipe.evaluate.judge is not None and form is not None and not task.generates:
        problems.append((("evaluate", "judge"), f"the judge compares generated answers, and {recipe.task} generates none",
                         "remove evaluate.judge"))
    elif (recipe.evaluate.judge is not None and recipe.evaluate.baseline_request() == "none"
          and recipe.evaluate.api_baseline() is None):
        problems.append((("evaluate", "judge"), "the judge compares the adapted model's answers with the baseline's, "
                         "and evaluate.baseline is none", "set evaluate.baseline (auto, or {api: {...}})"))
    distill = recipe.distill
    if distill is not None and isinstance(distill.teacher, ApiModel) and form is not None:
        if distill.augment.copies:
            problems.append((("distill", "augment", "copies"), "augmented copies are taught by a teacher's soft "
                             "targets, and an API teacher gives answers only", "remove distill.augment"))
        if distill.hidden_weight:
            problems.append((("distill", "hidden_weight"), "an API teacher has no hidden states to match",
                             "set distill.hidden_weight: 0"))
    return problems


def _canary_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    evaluate, task, field = recipe.evaluate, get_task(recipe.task), ("evaluate", "canaries")
    if not evaluate.canaries:
        return [(("evaluate", "canary_copies"), "there are no canaries to copy", "set evaluate.canaries, or remove "
                 "evaluate.canary_copies")] if evaluate.canary_copies else []
    if task.canary_row is None or task.canary_row(recipe.data, "", "") is None:
        planted = " and ".join(spec.name for spec in all_tasks() if spec.canary_row)
        return [(field, f"canaries are planted as training rows of {planted} (prompt and response, or plain text); "
                 f"task {recipe.task}{task.data_kind(recipe.data)} has no such rows", "remove evaluate.canaries")]
    if not get_method(recipe.method.name).trains:
        return [(field, f"method {recipe.method.name} trains nothing, so it memorises nothing",
                 "train (method lora or full), or remove evaluate.canaries")]
    return []


def _pii_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    pii = recipe.data.pii
    if pii is None or pii.action != "redact" or get_task(recipe.task).redacts:
        return []
    return [(("data", "pii", "action"), f"task {recipe.task} keeps character offsets into its text (answer starts), "
             "which placeholders would shift", "use action: report or refuse")]


def _privacy_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """Settings under which DP-SGD's guarantee would not hold, or that adaptctl has not tested with it."""
    privacy, train, field = recipe.train.privacy, recipe.train, ("train", "privacy")
    if privacy is None:
        return []
    task, method = get_task(recipe.task), recipe.method.name
    if method not in task.private_methods:
        tested = "; ".join(f"{spec.name}: {', '.join(spec.private_methods)}" for spec in all_tasks() if spec.private_methods)
        return [(field, f"DP-SGD is not available for task {recipe.task} with method {method}",
                 f"private training is tested for {tested}; use one of those, or remove train.privacy")]
    problems: list[tuple[tuple, str, str]] = []
    if train.gradient_accumulation > 1:
        problems.append((("train", "gradient_accumulation"), "DP-SGD adds noise once per Poisson-sampled batch; "
                         "accumulating several batches into one step is not what the accountant counts",
                         "set gradient_accumulation: 1 and raise train.batch_size (the expected batch size) instead"))
    if recipe.data.packing:
        problems.append((("data", "packing"), "packing joins several rows into one block, so one training row no "
                         "longer is one example: DP-SGD would protect blocks, not rows", "remove data.packing"))
    if train.precision == "fp16":
        problems.append((("train", "precision"), "fp16 scales the loss, and Opacus would clip the scaled per-example "
                         "gradients against max_grad_norm", "use precision bf16 or fp32"))
    if train.gradient_checkpointing:
        problems.append((("train", "gradient_checkpointing"), "recomputed activations would reach Opacus' per-example "
                         "gradient hooks twice", "remove train.gradient_checkpointing (lower batch_size or max_length to save memory)"))
    if recipe.distill:
        problems.append((("distill",), "the teacher's soft targets come from a model trained on the data without DP",
                         "remove the distill section, or train.privacy"))
    if isinstance(recipe.model.add_tokens, MinedTokens):
        problems.append((("model", "add_tokens"), "words mined from the training data would put those words in the "
                         "vocabulary, outside the DP guarantee", "list the words yourself, or remove model.add_tokens"))
    return problems


def _retrieval_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """data.retrieval where the task reads it: passages in the prompt (generation from data.prompt), or the
    corpus an embedder is measured against (task embedding); RAFT's settings only together."""
    from adaptctl.data.columns import TEMPLATE_HINT, template_columns, template_problem
    from adaptctl.retrieval import PASSAGES

    settings, field = recipe.data.retrieval, ("data", "retrieval")
    if settings is None:
        return []
    task = get_task(recipe.task)
    use = task.retrieval_use(recipe.data)
    if use is None:
        users = " and ".join(spec.name for spec in all_tasks() if spec.retrieval_use(recipe.data) is not None)
        return [(field, f"task {recipe.task}{task.data_kind(recipe.data)} does not read retrieved passages",
                 f"data.retrieval is for {users} (prompt and response data); remove data.retrieval")]
    templates: dict[tuple, str | None] = {(*field, name): getattr(settings, name) for name in ("query", "gold", "closed_book_prompt", "passage")}
    templates.update({(*field, "corpus", name): getattr(settings.corpus, name) for name in ("text", "id")})
    problems = [(where, f"template {t!r}: {problem}", TEMPLATE_HINT)
                for where, t in templates.items() if t is not None and (problem := template_problem(t))]
    if use == "corpus":
        asked = [name for name in ("embedder", "distractors", "oracle_fraction", "closed_book_prompt", "gold", "hybrid")
                 if name in settings.model_fields_set]
        return problems + [((*field, name), f"task {recipe.task} trains the embedder and matches each query to its own "
                                            f"passage; data.retrieval.{name} has no use here",
                            f"remove data.retrieval.{name} (data.retrieval.corpus is what recall@k searches)")
                           for name in asked[:1]]
    if PASSAGES not in template_columns(recipe.data.prompt or "", [PASSAGES]):
        problems.append((("data", "prompt"), "data.retrieval retrieves passages, and data.prompt does not read them",
                         f"put {{{PASSAGES}}} (or {{{{ {PASSAGES} }}}}) into data.prompt, e.g. "
                         f"'Passages:\\n{{{PASSAGES}}}\\n\\nQuestion: {{question}}'"))
    if settings.oracle_fraction is not None and settings.gold is None:
        problems.append(((*field, "oracle_fraction"), "RAFT rows show the gold passage, and data.retrieval.gold "
                         "does not say which it is", "set data.retrieval.gold (its id, or '{context}' for its text)"))
    if settings.distractors is not None and settings.oracle_fraction is None:
        problems.append(((*field, "distractors"), "distractors are RAFT's, and data.retrieval.oracle_fraction is not set",
                         "set data.retrieval.oracle_fraction (e.g. 0.8), or remove data.retrieval.distractors"))
    return problems


def _task_section_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    # A section that only another task reads would be ignored without a word.
    own = get_task(recipe.task).sections
    return [((name,), f"the {name} section is for task {spec.name}, not {recipe.task}",
             f"remove {name}, or use task {spec.name}")
            for spec in all_tasks() for name in spec.sections if name not in own and getattr(recipe, name) is not None]


def _decoder_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """model.decoder: an encoder-decoder warm-started from two checkpoints, whose cross-attention is new."""
    if recipe.model.decoder is None:
        return []
    field, method = ("model", "decoder"), get_method(recipe.method.name)
    if not get_task(recipe.task).warm_starts_decoder:
        tasks = " or ".join(spec.name for spec in all_tasks() if spec.warm_starts_decoder)
        return [(field, f"model.decoder composes an encoder-decoder, and task {recipe.task} trains one model",
                 f"use task {tasks}, or remove model.decoder")]
    if not method.trains_every_weight:
        whole = " or ".join(name for name, spec in METHOD_SPECS.items() if spec.trains_every_weight)
        doing = "trains nothing" if not method.trains else "leaves most weights frozen"
        return [(field, f"the decoder's cross-attention starts random and must be trained, and method "
                        f"{method.name} {doing}", f"use method {whole}, or remove model.decoder")]
    if recipe.model.add_tokens is not None:
        return [(field, "model.add_tokens would grow the encoder's and the decoder's embeddings apart, which "
                        "adaptctl does not do", "remove model.add_tokens, or model.decoder")]
    return []


def _pooling_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """model.pooling chooses what a classifier's head reads; other tasks have no such head."""
    if recipe.model.pooling == "auto" or get_task(recipe.task).has_label_map:
        return []
    return [(("model", "pooling"), f"model.pooling is for classification, not {recipe.task}", "remove model.pooling")]


def _references_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """data.references: the references of generated responses, so a task that generates and a response."""
    if recipe.data.references is None or (get_task(recipe.task).generates and recipe.data.response is not None):
        return []
    return [(("data", "references"), f"data.references are what generated responses are scored against, and task "
                                     f"{recipe.task} with this data generates none",
             "remove data.references (it is for causal-lm and seq2seq with data.prompt and data.response)")]


def _general_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    from adaptctl.data.columns import TEMPLATE_HINT, template_problem

    general, field = recipe.evaluate.general, ("evaluate", "general")
    if general is None:
        return []
    task = get_task(recipe.task)
    if task.general_text is None or not task.general_text(recipe.data):
        scored = " and ".join(spec.name for spec in all_tasks() if spec.general_text is not None)
        return [(field, f"task {recipe.task}{task.data_kind(recipe.data)} does not train a language "
                        "model on plain text, so it has no general-text perplexity to compare",
                 f"evaluate.general is for continued pretraining ({scored}, with data.text and no data.response); "
                 "remove evaluate.general")]
    if not get_method(recipe.method.name).trains:
        return [(field, f"method {recipe.method.name} trains nothing, so the model has nothing to forget",
                 "remove evaluate.general, or train (method full or lora)")]
    if problem := template_problem(general.text):
        return [((*field, "text"), f"template {general.text!r}: {problem}", TEMPLATE_HINT)]
    return []


def _compare_with_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    evaluate = recipe.evaluate
    if evaluate.compare_with is None or evaluate.baseline_request() != "none" or evaluate.general is not None:
        return []
    return [(("evaluate", "compare_with"), "compare_with names the model the baseline runs on, and "
             "evaluate.baseline is none", "remove evaluate.compare_with, or set evaluate.baseline (auto)")]


def _add_tokens_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    field, method = ("model", "add_tokens"), get_method(recipe.method.name)
    if recipe.model.add_tokens is None:
        return []
    if method.is_peft or not method.trains:  # an adapter leaves the resized embeddings behind at export
        return [(field, f"new tokens need the whole model trained and saved, and method {method.name} "
                        f"{'saves an adapter' if method.trains else 'trains nothing'}", "use method full, or remove model.add_tokens")]
    if recipe.distill:
        return [(field, "distillation with added tokens is not supported yet", "remove model.add_tokens or distill")]
    if getattr(recipe.method, "freeze_embeddings", False):
        return [(field, "the added tokens' embeddings would never train: method.freeze_embeddings is on",
                 "set method.freeze_embeddings: false, or remove model.add_tokens")]
    if isinstance(recipe.model.add_tokens, list) and not any(w.strip() for w in recipe.model.add_tokens):
        return [(field, "the list of tokens is empty", "name the domain words to add, or use {from_data: N}")]
    return []


def _packing_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    task = get_task(recipe.task)
    if not recipe.data.packing or task.can_pack(recipe.data):
        return []
    return [(("data", "packing"), f"data.packing concatenates plain-text documents for causal-LM continued "
                                  f"pretraining (causal-lm, data.text without data.response); task {recipe.task}"
                                  f"{task.data_kind(recipe.data)} keeps its rows apart",
             "remove data.packing")]


def _answer_pattern_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    pattern, field = recipe.evaluate.answer_pattern, ("evaluate", "answer_pattern")
    if pattern is None:
        return []
    task = get_task(recipe.task)
    if not task.generates or task.data_kind(recipe.data):
        return [(field, f"task {recipe.task}{task.data_kind(recipe.data)} generates no answers to match",
                 "remove evaluate.answer_pattern (it is for causal-lm and seq2seq prompt/response data)")]
    try:
        re.compile(pattern)
    except re.error as exc:
        return [(field, f"{pattern!r} is not a regular expression: {exc}",
                 "e.g. '####\\s*(-?[\\d,.]+)'; quote it in single quotes in YAML so that backslashes stay")]
    return []


def _explain_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    if not recipe.evaluate.explain:
        return []
    field = ("evaluate", "explain")
    if get_task(recipe.task).explain is None:
        explained = " and ".join(spec.name for spec in all_tasks() if spec.explain)
        return [(field, f"task {recipe.task} has no explanations (token attributions are for {explained})",
                 "remove evaluate.explain")]
    if not get_method(recipe.method.name).trains:
        return [(field, f"method {recipe.method.name} scores label names by prompting; there is no classifier to explain",
                 "train a classifier (method full or lora), or remove evaluate.explain")]
    return []


def _padding_free_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    if not recipe.train.padding_free or get_task(recipe.task).flattens:
        return []
    flattening = " and ".join(spec.name for spec in all_tasks() if spec.flattens)
    return [(("train", "padding_free"), f"task {recipe.task} cannot join its rows into one (padding-free batches are "
             f"for {flattening})", "remove train.padding_free")]


def _slice_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    from adaptctl.data.columns import TEMPLATE_HINT, template_problem

    task = get_task(recipe.task)
    if recipe.evaluate.slices and not task.keeps_slices(recipe.data):
        return [(("evaluate", "slices"), f"task {recipe.task}{task.data_kind(recipe.data)} cannot be sliced yet: its "
                 "prepared rows do not line up with the data's rows", "remove evaluate.slices")]
    group = recipe.data.splits.group
    return [(("evaluate", "slices", i), f"template {template!r}: {problem}", TEMPLATE_HINT)
            for i, template in enumerate(recipe.evaluate.slices) if (problem := template_problem(template))] + \
        [(("data", "splits", "group"), f"template {group!r}: {problem}", TEMPLATE_HINT)
         for problem in [group and template_problem(group)] if problem]


def _calibration_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    if not recipe.evaluate.calibrate:
        return []
    field, task = ("evaluate", "calibrate"), get_task(recipe.task)
    if not task.calibrates:
        calibrated = " and ".join(spec.name for spec in all_tasks() if spec.calibrates)
        return [(field, f"calibration is for {calibrated}, not {recipe.task}", "remove evaluate.calibrate")]
    if not get_method(recipe.method.name).trains:
        return [(field, f"method {recipe.method.name} scores label names; it has no logits to calibrate",
                 "train a classifier (method full or lora), or remove evaluate.calibrate")]
    if recipe.data.validation is None and recipe.data.splits.validation == 0:
        return [(field, "the temperature is fitted on the validation split, and the data has none",
                 "set data.splits.validation above 0 (e.g. 0.1) or give data.validation; the test split is never used")]
    return []


def _label_loss_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    # Weights and smoothing act on a loss over labels; a task without a label map has no such loss.
    if get_task(recipe.task).has_label_map:
        return []
    asked = [name for name, unset in (("class_weights", None), ("label_smoothing", 0.0))
             if getattr(recipe.train, name) != unset]
    return [(("train", name), f"train.{name} is for tasks with labels (classification), not {recipe.task}",
             f"remove train.{name}") for name in asked]


def sweep_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """The sweep section's own rules; each trial's recipe is checked by the loader (adaptctl/sweep.py)."""
    if recipe.sweep is None:
        return []
    sweep, problems = recipe.sweep, list[tuple[tuple, str, str]]()
    for path, values in sweep.parameters.items():
        if path.split(".")[0] in UNSWEEPABLE:
            problems.append((("sweep", "parameters", path), f"{path} cannot be swept",
                             f"sweep the fields that change the model: not {', '.join(UNSWEEPABLE)}"))
        elif sweep.chosen_sampler() == "grid" and isinstance(values, SweepRange) and values.step is None:
            problems.append((("sweep", "parameters", path), "a grid needs the values of a range",
                             "give the range a step, list the values, or use sampler: tpe or random"))
    return problems + _sweep_metric_problems(recipe)


def _sweep_metric_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    """The metric must be one the trials report: evaluate's for the task, or training's validation loss."""
    assert recipe.sweep is not None  # called for a recipe with a sweep section
    metric, field = recipe.sweep.metric, ("sweep", "metric")
    if metric == "eval_loss":
        if not recipe.train.validate:
            return [(field, "eval_loss is the validation loss of training, and train.validate is false",
                     "set train.validate: true, or sweep an evaluate metric")]
        return []
    task = get_task(recipe.task)
    computed = task.computed_metrics(recipe.data)
    if metric not in computed:
        guess = difflib.get_close_matches(metric, (*computed, "eval_loss"), n=1)
        return [(field, f"task {recipe.task}{task.data_kind(recipe.data)} does not report {metric}",
                 (f"did you mean '{guess[0]}'? " if guess else "") + f"it reports: {', '.join(computed)}, eval_loss")]
    if recipe.evaluate.metrics and metric not in recipe.evaluate.metrics:
        return [(field, f"evaluate.metrics leaves out {metric}", f"add {metric} to evaluate.metrics, or remove evaluate.metrics")]
    return []


# The tasks whose distillation loss exists (distill/trainer.py): soft targets over labels or over the vocabulary.
DISTILL_TASKS = tuple(spec.name for spec in all_tasks() if spec.distill_over)


def _distill_task_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    if not recipe.distill or recipe.task in DISTILL_TASKS:
        return []
    return [(("distill",), f"task {recipe.task} cannot be distilled yet (only {' and '.join(DISTILL_TASKS)})",
             "remove the distill section and use `adaptctl train`")]


def _deepspeed_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    settings = recipe.train.distributed
    if settings.strategy != "deepspeed" or settings.deepspeed_config:
        return []
    return [(("train", "distributed", "deepspeed_config"), "strategy deepspeed needs its JSON config",
             "set train.distributed.deepspeed_config: ds_config.json (relative to the recipe), or use strategy ddp or fsdp")]


def _metric_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    # A metric the task does not compute would be dropped from metrics.json without a word.
    task = get_task(recipe.task)
    computed = task.computed_metrics(recipe.data)
    what = f"task {recipe.task}{task.data_kind(recipe.data)}"
    return [(("evaluate", "metrics", i), f"{what} does not compute {name}", f"it computes: {', '.join(computed)}")
            for i, name in enumerate(recipe.evaluate.metrics or []) if name not in computed]


def _baseline_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    # What each baseline needs: labels to count (majority), a model to prompt (zero-shot), and a trained
    # model to compare (method prompting already is the prompted base model).
    asked, task = recipe.evaluate.baseline, get_task(recipe.task)
    field: tuple[str, ...] = ("evaluate", "baseline")
    if isinstance(asked, ApiBaseline):  # the baseline named beside the API model, checked at its own key
        asked, field = asked.beside, ("evaluate", "baseline", "beside")
    if asked == "majority" and task.majority is None:
        with_majority = " and ".join(spec.name for spec in all_tasks() if spec.majority)
        return [(field, f"the majority-class baseline is for {with_majority}, not {task.name}",
                 f"use {'.'.join(field)}: auto, zero-shot, base-model or none")]
    if asked == "zero-shot" and task.zero_shot is None:
        return [(field, f"{task.name} has no prompting baseline", f"use {'.'.join(field)}: base-model or none")]
    if asked in ("zero-shot", "base-model") and not get_method(recipe.method.name).trains:
        return [(field, f"method prompting already evaluates the untrained base model; a {asked} baseline would repeat it",
                 f"use {'.'.join(field)}: majority (classification) or none")]
    return []


def _hidden_state_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    if not recipe.distill or not recipe.distill.hidden_weight:
        return []
    field = ("distill", "hidden_weight")
    if recipe.distill.cache_teacher:
        return [(field, "the hidden-state term needs the teacher's hidden states at every step; the cache holds logits only",
                 "set distill.cache_teacher: false, or distill.hidden_weight: 0")]
    if get_method(recipe.method.name).virtual_tokens:
        aligned = ", ".join(name for name, spec in METHOD_SPECS.items() if spec.trains and not spec.virtual_tokens)
        return [(field, f"{recipe.method.name} adds virtual tokens, so the student's layers do not line up with the teacher's",
                 f"use method {aligned} for the student, or distill.hidden_weight: 0")]
    return []


def _augment_problems(recipe: Recipe) -> list[tuple[tuple, str, str]]:
    if not recipe.distill or not recipe.distill.augment.copies:
        return []
    field = ("distill", "augment", "copies")
    if get_task(recipe.task).distill_over != "labels":  # the copies are taught soft targets over labels
        return [(field, f"augmented copies are for classification, not {recipe.task}",
                 "remove distill.augment, or distil a classification task")]
    if recipe.distill.alpha == 0:
        return [(field, "the copies are taught by the teacher alone, and distill.alpha is 0",
                 "set distill.alpha above 0, or remove distill.augment")]
    return []


def data_field_problems(task: str, data: dict) -> list[tuple[tuple, str, str]]:
    """The data fields a task needs; takes a plain mapping so that the loader can run it
    on a document that failed validation elsewhere, and report everything at once."""
    return get_task(task).data_problems(data) + foreign_data_fields(task, data)
