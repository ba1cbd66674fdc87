"""Reinforcement learning from verifiable rewards: GRPO through TRL's GRPOTrainer (training/grpo.py).

Data: `data.prompt`, a template over a file's columns, and optionally `data.response`, the reference answer
that rewards and evaluate compare with (`{Answer}`).  With `data.chat_template: true` the prompt is the user's
turn of the model's chat template.  Prompts are encoded as causal-lm's predict encodes them (cut to
data.max_length from the left, keeping the chat header), and the model samples `rl.num_generations`
completions of up to `rl.max_completion_length` tokens for each; the rewards (`rl.rewards`, tasks/rewards.py)
score them, and GRPO's advantage is each completion's total reward against its group's.

Prepared columns: `prompt` (the rendered prompt text: what reward functions get as `prompts`), `input_ids`
(the encoded prompt, which generation continues from), `reference` and `row` (the source row as JSON, read
by a reward's `column` template and given to a python reward as keyword lists).

Evaluate generates one answer per held-out prompt with evaluate.generation (greedy by default) and reports
exact_match and f1 against the reference (over the answers evaluate.answer_pattern extracts, as causal-lm
does), every reward's mean on those answers (`reward_<name>`), their weighted sum (`reward`) and the mean
answer length (`completion_tokens`); the baseline (zero-shot, or the parent run of a chain) gets the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from adaptctl.data.columns import without_slices
from adaptctl.data.tokens import pad_token_id
from adaptctl.core.errors import UserError
from adaptctl.tasks import causal_lm, rewards
from adaptctl.tasks.spec import TaskSpec, TrainerPlan, ZeroShot

METRICS = ("exact_match", "f1", "reward", "completion_tokens")
REWARD_ONLY_METRICS = ("reward", "completion_tokens")   # without data.response there is nothing to match
TRL_COLUMNS = ("prompt", "reference", "row")            # what the trainer keeps beside input_ids


def templates(data, columns=()) -> dict:
    return {"prompt": data.prompt, "response": data.response}


# ------------------------------------------------------------ canonical columns
def canonicalize(ds, recipe, source: str):
    """Rows with prompt, reference (data.response rendered, or empty) and row (the source row as JSON)."""
    from adaptctl.data.columns import check_columns, render

    wanted = {k: v for k, v in templates(recipe.data).items() if v is not None}
    check_columns(wanted, ds.column_names, source)
    carried = without_slices(ds.column_names)

    def to_canonical(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return {"prompt": [render(wanted["prompt"], row) for row in rows],
                "reference": [render(wanted["response"], row).strip() if "response" in wanted else "" for row in rows],
                "row": [json.dumps({k: row[k] for k in carried}, default=str, ensure_ascii=False) for row in rows]}

    return ds.map(to_canonical, batched=True, remove_columns=carried, desc="map columns"), {}


# ----------------------------------------------------------------- tokenizing
def tokenize(dataset, tokenizer, recipe, label2id: dict):
    """input_ids: the prompt as generation continues from it, by causal-lm's encoding (so evaluate, predict
    and training start from the same ids); num_tokens and truncated for prepare's statistics."""
    pad_token_id(tokenizer)

    def encode(batch):
        encoded = causal_lm.encode_pairs(batch["prompt"], [""] * len(batch["prompt"]), tokenizer, recipe)
        prompts = causal_lm.generation_prompts(encoded["input_ids"], encoded["prompt_length"], tokenizer)
        return {"input_ids": prompts, "attention_mask": [[1] * len(p) for p in prompts],
                "num_tokens": [len(p) for p in prompts], "truncated": encoded["truncated"]}

    return dataset.map(encode, batched=True, batch_size=1000, desc="tokenize prompts")


def collator(tokenizer, recipe):
    return None  # GRPO builds its batches from the completions it samples


# ----------------------------------------------------------------- the trainer
def trainer(recipe, model) -> TrainerPlan:
    """TRL's GRPOTrainer and GRPOConfig for the rl section."""
    from trl import GRPOConfig

    from adaptctl.core import distributed
    from adaptctl.training.grpo import grpo_trainer

    settings, train = recipe.rl, recipe.train
    per_step = train.batch_size * train.gradient_accumulation * distributed.world_size()
    if per_step % settings.num_generations:
        raise UserError(f"rl.num_generations ({settings.num_generations}) must divide the completions of a step: "
                        f"train.batch_size x gradient_accumulation x processes = {train.batch_size} x "
                        f"{train.gradient_accumulation} x {distributed.world_size()} = {per_step}",
                        hint=f"set train.batch_size to a multiple of {settings.num_generations}")
    group = settings.num_generations
    arguments = {
        "num_generations": group, "max_completion_length": settings.max_completion_length,
        "temperature": settings.temperature, "top_p": settings.top_p, "beta": settings.beta,
        "loss_type": settings.loss_type, "scale_rewards": settings.scale_rewards, "epsilon": settings.epsilon,
        "importance_sampling_level": settings.importance_sampling_level,
        "mask_truncated_completions": settings.mask_truncated_completions,
        "reward_weights": rewards.weights(recipe),
        # validation prompts are sampled in whole groups too
        "per_device_eval_batch_size": group * max(1, recipe.evaluate.batch_size // group),
        "include_num_input_tokens_seen": "no",  # TRL counts prompt + completion tokens itself
    }

    def rewards_for(split):
        functions = rewards.build(recipe, split, Path.cwd())
        return functions, rewards.description(recipe, functions, Path.cwd())

    return TrainerPlan(grpo_trainer(rewards_for), GRPOConfig, arguments, TRL_COLUMNS)


# ------------------------------------------------------------------ evaluation
def evaluate(model, tokenizer, split, recipe, label2id: dict, train_split=None):
    """One answer per held-out prompt (evaluate.generation), scored against the reference and by every reward."""
    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.generation import eos_token_ids, generate

    prompts = [list(ids) for ids in split["input_ids"]]
    generated, speed = generate(model, prompts, recipe.evaluate.generation, pad_id=pad_token_id(tokenizer),
                                eos_ids=eos_token_ids(model, tokenizer), encoder_decoder=False,
                                batch_size=recipe.evaluate.batch_size, precision=recipe.train.precision)
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
    inputs, references = list(split["prompt"]), list(split["reference"])
    scores = _reward_scores(recipe, split, inputs, texts, generated)
    metrics, extras, answers = _matches(texts, references, recipe)
    totals = _weighted_totals(recipe, scores, len(texts))
    metrics["reward"] = _mean(totals)
    metrics.update({f"reward_{name}": _mean(values) for name, values in scores.items()})
    metrics["completion_tokens"] = _mean([len(ids) for ids in generated])
    predictions = []
    for i, (prompt, reference, text) in enumerate(zip(inputs, references, texts)):
        row = {"input": prompt, "reference": reference, "prediction": text, "score": round(totals[i], 6),
               "rewards": {name: values[i] for name, values in scores.items()}}
        predictions.append({**row, **(answers[i] if answers else {})})
    return EvalResult(metrics=metrics, predictions=predictions,
                      examples_per_second=speed["generation_examples_per_second"], extras={**speed, **extras})


def _reward_scores(recipe, split, prompts: list[str], texts: list[str], generated: list[list[int]]) -> dict:
    """{reward name: one value (or None) per answer}, each reward called as TRL calls it."""
    functions = rewards.build(recipe, split, Path.cwd())
    columns = {"reference": list(split["reference"]), "row": list(split["row"])}

    def noop(*args, **kwargs):  # TRL's log_extra and log_metric: evaluate has nowhere to log to
        return None

    return {f.__name__: f(prompts=prompts, completions=texts, completion_ids=generated, trainer_state=None,
                          log_extra=noop, log_metric=noop, **columns) for f in functions}


def _weighted_totals(recipe, scores: dict, count: int) -> list[float]:
    """Each answer's total reward as GRPO sums it (a reward that scored nothing adds nothing)."""
    totals = [0.0] * count
    for weight, values in zip(rewards.weights(recipe), scores.values()):
        totals = [t + weight * v if v is not None else t for t, v in zip(totals, values)]
    return totals


def _matches(texts: list[str], references: list[str], recipe) -> tuple[dict, dict, list[dict] | None]:
    """exact_match and f1 against the references, over the answers evaluate.answer_pattern extracts (causal-lm's
    generative-QA scores); none without data.response."""
    from adaptctl.evaluation.metrics import answer_metrics, squad_metrics

    if recipe.data.response is None:
        return {}, {}, None
    golds, pattern = [[r] for r in references], recipe.evaluate.answer_pattern
    if pattern is None:
        return squad_metrics(texts, golds), {}, None
    scores, per_answer, _ = answer_metrics(texts, golds, pattern)  # no per-example intervals here
    counts = {"pattern": pattern, "unmatched": scores.pop("unmatched"),
              "unmatched_references": scores.pop("unmatched_references"), "examples": len(texts)}
    return scores, {"answers": counts}, per_answer


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 6) if values else 0.0


def predict(model, tokenizer, texts: list[str], recipe, info: dict, batch_size: int) -> list[dict]:
    """causal-lm's predict (the prompt encoded as prepare encodes it, decoded as evaluate decodes), and the
    answer evaluate.answer_pattern finds in it."""
    from adaptctl.evaluation.metrics import extract_answer

    rows = causal_lm.predict(model, tokenizer, texts, recipe, info, batch_size)
    if recipe.evaluate.answer_pattern:
        pattern = re.compile(recipe.evaluate.answer_pattern)
        for row in rows:
            row["answer"] = extract_answer(row["prediction"], pattern)
    return rows


# ------------------------------------------------------------------ recipe rules
def data_problems(data: dict) -> list:
    if data.get("prompt") is None:
        return [(("data", "prompt"), "task reinforcement needs data.prompt",
                 "name the column or template the model answers, e.g. '{question}'")]
    return []


def recipe_problems(recipe, method) -> list:
    rl = recipe.rl
    if rl is None:
        return [(("rl",), "task reinforcement needs an rl section with its rewards",
                 "add `rl: {rewards: [{kind: answer_match}]}` (and data.response, the reference answer)")]
    problems = [problem for index, reward in enumerate(rl.rewards) for problem in _reward_problems(recipe, reward, index)]
    if recipe.evaluate.few_shot:  # the prompts are the model's to answer as trained, without examples
        problems.append((("evaluate", "few_shot"), "task reinforcement puts no examples before its prompts",
                         "remove evaluate.few_shot"))
    if rl.loss_type == "luspo" and rl.importance_sampling_level != "sequence":
        problems.append((("rl", "importance_sampling_level"), "loss_type luspo weighs whole sequences",
                         "set rl.importance_sampling_level: sequence"))
    return problems


# The fields each kind reads (besides kind and weight); another field set on a reward would be ignored.
READS = {"answer_match": ("pattern", "column"), "format": ("pattern",), "length": ("min", "max", "unit"),
         "label_match": ("column", "labels"), "python": ("python",)}
OPTIONAL_DEFAULTS = {"unit": "tokens"}


def _reward_problems(recipe, reward, index: int) -> list:
    from adaptctl.data.columns import TEMPLATE_HINT, template_problem

    at = ("rl", "rewards", index)
    problems = [((*at, name), f"kind {reward.kind} does not read {name}", f"remove {name}, or use a kind that reads it")
                for name in ("pattern", "column", "min", "max", "unit", "labels", "python")
                if name not in READS[reward.kind] and getattr(reward, name) not in (None, OPTIONAL_DEFAULTS.get(name))]
    if reward.pattern is not None and (error := _regex_problem(reward.pattern)):
        problems.append(((*at, "pattern"), error, "quote it in single quotes in YAML so that backslashes stay"))
    if reward.column is not None and (problem := template_problem(reward.column)):
        problems.append(((*at, "column"), f"template {reward.column!r}: {problem}", TEMPLATE_HINT))
    problems += KIND_PROBLEMS.get(reward.kind, lambda recipe, reward, at: [])(recipe, reward, at)
    return problems


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{pattern!r} is not a regular expression: {exc}"
    return None


def _needs_reference(recipe, reward, at) -> list:
    if reward.column is None and recipe.data.response is None:
        return [((*at, "column"), f"{reward.kind} compares with a reference, and neither data.response nor column is set",
                 "set data.response (e.g. '{answer}'), or column: the data column that holds the reference")]
    return []


def _format_problems(recipe, reward, at) -> list:
    return [] if reward.pattern else [((*at, "pattern"), "kind format needs the pattern completions must match",
                                        "e.g. pattern: '^.*= -?[0-9.]+$'")]


def _length_problems(recipe, reward, at) -> list:
    if reward.min is None and reward.max is None:
        return [(at, "kind length needs min, max or both", "e.g. {kind: length, min: 10, max: 60}")]
    if reward.min is not None and reward.max is not None and reward.min > reward.max:
        return [((*at, "max"), f"max ({reward.max}) is below min ({reward.min})", "swap them")]
    return []


def _python_problems(recipe, reward, at) -> list:
    if reward.python is None or not rewards.PYTHON_SPEC.fullmatch(reward.python):
        return [((*at, "python"), f"{reward.python!r} does not name FILE.py:FUNCTION",
                 "e.g. python: rewards.py:my_reward (the file relative to the recipe)")]
    return []


KIND_PROBLEMS = {"answer_match": _needs_reference, "label_match": _needs_reference, "format": _format_problems,
                 "length": _length_problems, "python": _python_problems}


SPEC = TaskSpec(
    name="reinforcement", summary="reinforcement learning of a causal LM from verifiable rewards "
                                  "(GRPO through TRL; rewards declared in the recipe)",
    auto_class="AutoModelForCausalLM", peft_task_type="CAUSAL_LM", pipeline_tag="text-generation",
    label_names=(), output_names=("logits",), per_example_loss=True, generates=True, has_label_map=False,
    templates=templates, canonicalize=canonicalize, tokenize=tokenize, collator=collator, evaluate=evaluate,
    predict=predict, data_problems=data_problems, metrics=METRICS,
    metrics_for=lambda data: METRICS if data.response is not None else REWARD_ONLY_METRICS,
    starter={"model": "HuggingFaceTB/SmolLM2-135M-Instruct",
             "data": {"source": "data/problems.jsonl", "prompt": "{question}", "response": "{answer}",
                      "chat_template": True, "max_length": 256},
             "sections": {"rl": {"num_generations": 4, "max_completion_length": 64,
                                 "rewards": [{"kind": "answer_match", "weight": 1.0},
                                             {"kind": "format", "pattern": "[0-9]", "weight": 0.2}]},
                          "evaluate": {"split": "test", "baseline": "auto",
                                       "answer_pattern": "(-?[0-9][0-9,]*(?:\\.[0-9]+)?)\\D*$"}}},
    zero_shot=ZeroShot(evaluate, model_task="reinforcement"),
    trainer=trainer, recipe_problems=recipe_problems, model_problem=causal_lm.model_problem,
    sections=("rl",), training_inputs=rewards.training_inputs, input_field=lambda data: "prompt",
    head_names=("lm_head",), fresh_head=lambda path: False,  # the language-model head is the checkpoint's own
    rollouts=lambda recipe: (recipe.rl.num_generations, recipe.rl.max_completion_length),
)
