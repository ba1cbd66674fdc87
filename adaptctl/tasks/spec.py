"""What a task is, in one place: the TaskSpec every module under adaptctl/tasks/ declares.

A spec holds the facts other layers need about a task (its model class, peft task type, pipeline
tag, data fields, metrics, export formats, starter recipe) and its hooks, the functions that do the
task's work.  Every hook whose absence has no safe meaning is a required field (the dataclass is
keyword-only, so a required field may sit anywhere), and a task that lacks one fails when its module is
imported, not with a KeyError at train or export time; the fields with defaults are features a task may
lack (None, False, an empty tuple: no zero-shot baseline, no ONNX export, ...).

Task modules import nothing heavy at module level (torch, transformers and datasets load inside the
hooks), so that the recipe, `adaptctl validate` and `adaptctl init` can read the specs in a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

Problem = tuple[tuple, str, str]   # (recipe field path, message, hint), located by the recipe loader


class Canonicalize(Protocol):
    def __call__(self, ds, recipe, source: str) -> tuple[Any, dict]: ...


class Tokenize(Protocol):
    def __call__(self, dataset, tokenizer, recipe, label2id: dict): ...


class Evaluate(Protocol):
    def __call__(self, model, tokenizer, split, recipe, label2id: dict, train_split=None): ...


class Predict(Protocol):
    def __call__(self, model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]: ...


@dataclass(frozen=True)
class ZeroShot:
    """How the untrained base model is prompted for a task (method prompting, the zero-shot baseline)."""
    evaluate: Evaluate          # takes train_split for evaluate.few_shot examples
    model_task: str             # whose model class loads the base model for it
    words: str = ""             # what the report adds to "the base model prompted, without training"


@dataclass(frozen=True)
class ApiForm:
    """How a model behind an OpenAI-compatible API is asked a task's inputs and how its answers are read
    (evaluate.baseline, distill.teacher and evaluate.judge with {api: ...}; tasks/api_forms.py)."""
    columns: tuple[str, str]                          # the (input, answer) columns of a prepared split
    prompt: Callable[[str, Any, list[str]], str]      # (input, recipe, label names) -> the user's message
    read: Callable[[str, list[str]], str | None]      # (answer, label names) -> the task's output; None: unreadable
    score: Callable[[Any, list, Any, dict], Any]      # (split, outputs, recipe, label2id) -> EvalResult


@dataclass(frozen=True)
class TrainerPlan:
    """How a task trained by another library's Trainer subclass (preference: TRL's) is trained."""
    trainer_class: type              # a transformers Trainer subclass
    arguments_class: type            # its TrainingArguments subclass (DPOConfig)
    arguments: dict                  # that class's own fields (beta, loss_type, max_length)
    columns: tuple[str, ...] = ()    # the data columns it reads beyond the model inputs (prompt, chosen, rejected)


def no_model_kwargs(label2id: dict) -> dict:
    """What a task without a label map passes to from_pretrained: nothing."""
    return {}


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    summary: str                           # the recipe's help text for the task
    auto_class: str                        # the transformers Auto class of its models
    peft_task_type: str                    # peft's TaskType
    pipeline_tag: str                      # Hugging Face model-card pipeline tag
    label_names: tuple[str, ...]           # the Trainer's label columns
    output_names: tuple[str, ...]          # the model outputs predictions come from (export checks them)
    per_example_loss: bool                 # loss is a mean over examples, not tokens
    generates: bool                        # evaluate and predict decode text
    has_label_map: bool                    # prepare builds a label -> id map (classification)
    # the module names of the task head on the backbone (the last part of a module's path): method freeze trains
    # them, and all-linear LoRA does not wrap them (peft trains a classifier's or QA model's head in full,
    # modules_to_save: wrapping it too would train it twice over)
    head_names: tuple[str, ...]
    # hooks
    templates: Callable[[Any, list[str]], dict]   # (recipe.data, file columns) -> canonical column -> template
    canonicalize: Canonicalize | None             # None: prepare renders templates() column by column
    tokenize: Tokenize
    collator: Callable[[Any, Any], Any]           # (tokenizer, recipe) -> the training batch collator
    evaluate: Evaluate
    predict: Predict | None                       # None: `adaptctl predict` does not support the task
    data_problems: Callable[[dict], list[Problem]]   # on the raw data mapping, before validation succeeds
    metrics: tuple[str, ...]                      # every metric evaluate can compute for the task
    starter: dict = field(default_factory=dict)   # `adaptctl init`: model.base and the data section
    zero_shot: ZeroShot | None = None             # None: no prompting baseline for the task
    prompting_method: bool = False                # method prompting evaluates it (no training)
    distill_over: str | None = None               # "labels" | "vocabulary": what soft targets cover; None: no
    export_formats: tuple[str, ...] = ()          # beyond safetensors
    evaluate_takes_shots: bool = False            # evaluate uses evaluate.few_shot examples itself
    response_only_logits: bool = False            # training computes logits for the trained positions only
    model_kwargs: Callable[[dict], dict] = no_model_kwargs   # (label2id) -> from_pretrained kwargs (label maps)
    # rules spanning sections: (recipe, its method's MethodSpec), so that no task imports the method registry
    recipe_problems: Callable[[Any, Any], list[Problem]] = lambda recipe, method: []
    input_field: Callable[[Any], str]             # (recipe.data) -> the data field predict's input is
    split_indices: Callable | None = None         # keeps groups in one split (extractive-qa: a context)
    long_rows: Callable[[Any, str, dict], str] | None = None     # prepare's line on rows over max_length
    data_kind: Callable[[Any], str] = lambda data: ""            # names a narrower shape of data (plain text)
    metrics_for: Callable[[Any], tuple[str, ...]] | None = None  # (recipe.data) -> the metrics for that shape
    calibrates: bool = False                      # evaluate takes temperature= and returns extras["logits"]
    keeps_slices: Callable[[Any], bool] = lambda data: True   # (recipe.data) -> prepared rows keep slice columns
    flattens: bool = False                        # rows may be joined into one (train.padding_free on CUDA)
    structured_fields: tuple[str, ...] = ()        # data fields that name a column of records, read as they are
    trainer: Callable[[Any, Any], "TrainerPlan"] | None = None   # (recipe, model); None: adaptctl's GuardedTrainer
    explain: Callable | None = None               # (model, tokenizer, texts, target ids, recipe) -> token attributions
    collator_columns: tuple[str, ...] = ()        # prepared columns beyond the model inputs that the collator reads
    on_load: Callable[[Any, Path], Any] = lambda model, path: model   # (loaded model, its folder) -> the model
    model_problem: Callable[[Path], str | None] = lambda path: None   # why a model folder cannot do the task
    # (recipe.data) -> an unset evaluate.baseline means auto: domain adaptation is measured against its base
    baseline_by_default: Callable[[Any], bool] = lambda data: False
    can_pack: Callable[[Any], bool] = lambda data: False          # (recipe.data) -> data.packing applies
    split_stats: Callable[[Any, Any], dict] = lambda split, recipe: {}   # (tokenized split, recipe) -> stats.json
    # (recipe.data) -> evaluate.general applies: the task scores plain text by perplexity; None: never
    general_text: Callable[[Any], bool] | None = None
    # (tokenizer, recipe.data) -> (the chat template an export ships, what it is): one that renders prompts as
    # training did; None: the tokenizer's own is shipped
    chat_template: Callable[[Any, Any], tuple[str | None, str]] | None = None
    warm_starts_decoder: bool = False             # model.decoder: an encoder-decoder composed of two checkpoints
    # (base model folder) -> the base-model baseline's task head is new and random (not the checkpoint's own)
    fresh_head: Callable[[Path], bool]
    # (recipe, base model folder) -> the class to load the base with instead of auto_class's (None: auto_class)
    model_class_for: Callable[[Any, Path], Any] = lambda recipe, path: None
    register_models: Callable[[], None] = lambda: None   # make transformers' Auto classes know the task's own models
    # train.privacy: the methods DP-SGD is tested with for this task (tests/test_privacy.py); empty: none
    private_methods: tuple[str, ...] = ()
    # evaluate.canaries: (recipe.data, prefix, secret) -> a canonical training row; None (or a None row): no canaries
    canary_row: Callable[[Any, str, str], dict | None] | None = None
    redacts: bool = True                          # data.pii may replace spans (False: character offsets would shift)
    # generating tasks: (tokenizer, input texts, recipe) -> the token ids generation continues from, as predict
    # renders its inputs (adaptctl serve generates from them with each request's own decoding settings)
    prompt_ids: Callable[[Any, list[str], Any], list[list[int]]] | None = None
    # (tokenizer, conversations of {role, content}, recipe) -> their ids through the run's chat template;
    # None from the hook: the run renders none.  None: the task has no chat form
    chat_prompt_ids: Callable[[Any, list[list[dict]], Any], list[list[int]] | None] | None = None
    sections: tuple[str, ...] = ()                # recipe sections that only this task reads (reinforcement: rl)
    # (recipe, recipe folder, where) -> content hashes of the files training reads beyond the data (reinforcement:
    # the user's reward code); where(field path) locates a problem at its recipe line
    training_inputs: Callable[[Any, Path, Callable], dict] = lambda recipe, base_dir, where: {}
    # (recipe) -> (completions sampled per prompt, the longest completion in tokens): the trainer generates what
    # it trains on (reinforcement), which `adaptctl plan` counts; None: the data is what is trained on
    rollouts: Callable[[Any], tuple[int, int]] | None = None
    # (recipe.data) -> what data.retrieval is to the task: "prompt" (prepare retrieves passages for every row into
    # data.prompt's {{ passages }}), "corpus" (what evaluate searches: task embedding), None (refused)
    retrieval_use: Callable[[Any], str | None] = lambda data: None
    # files and folders of the trained model folder that export copies beside the weights (a sentence
    # embedder's pooling modules), where they exist
    ships: tuple[str, ...] = ()
    # (recipe.data) -> how an API model is asked this task and read (ApiForm); None from it or here: it cannot be
    api_form: Callable[[Any], ApiForm | None] | None = None
    # with has_label_map: (a canonical row's `label` value) -> the labels it holds, one for a classifier's row,
    # one per word for a token classifier's; prepare's label map, label counts and class weights read them
    labels_of: Callable[[Any], list] | None = None
    # the majority-class baseline: (split, train split, recipe, label2id) -> EvalResult; None: no such baseline
    majority: Callable | None = None
    # the recipe's data fields that only this task reads: name -> (type, pydantic Field(default, description=...));
    # tasks/__init__.py adds them to the one `data` section (recipe.Data), so a new task declares them here
    data_fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def __post_init__(self):
        # what a task with a label map cannot do without: no default would be right for it
        if self.has_label_map and self.labels_of is None:
            raise TypeError(f"task {self.name}: has_label_map needs labels_of (how a row's labels are read)")
        if self.has_label_map and self.model_kwargs is no_model_kwargs:
            raise TypeError(f"task {self.name}: has_label_map needs model_kwargs (the label maps its head is built with)")

    def computed_metrics(self, data) -> tuple[str, ...]:
        """The metrics evaluate computes for this data section."""
        return self.metrics_for(data) if self.metrics_for else self.metrics

    def model_class(self):
        import transformers

        self.register_models()
        return getattr(transformers, self.auto_class)


def required_fields(task: str, keys: tuple[str, ...], data: dict) -> list[Problem]:
    """The data fields a task needs that the recipe leaves unset."""
    return [(("data", key), f"task {task} needs data.{key}", f"name a column or a template such as '{{{key}}}'")
            for key in keys if data.get(key) is None]

