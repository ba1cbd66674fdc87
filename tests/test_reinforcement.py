"""task reinforcement (tasks/reinforcement.py, tasks/rewards.py, training/grpo.py): rewards declared in the
recipe, each one's behaviour on hand-written completions; recipe rules located at their lines; and GRPO
through TRL's GRPOTrainer on a tiny random Llama with LoRA, chained on a tiny SFT run (model.base: the run),
with a KL term against the adapter-free model: rewards logged per step, evaluate's exact match and rewards
beside the SFT model's, export, predict, plan, an edited reward file making the model stale, and a killed run
resumed to the uninterrupted adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_generation as tg

from adaptctl.core.errors import UserError
from adaptctl.tasks import rewards

REWARD_CODE = '''
def digits(completions, kind, **kwargs):
    """A reward of the user's: the share of digits, reading a data column (kind) as TRL passes it."""
    assert set(kind) == {"sum"}, kind
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]
'''


def sums(path: Path, rows: int = 40) -> Path:
    import random

    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(rows):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            f.write(json.dumps({"question": f"What is {a} plus {b}?", "answer": a + b, "kind": "sum"}) + "\n")
    return path


def grpo_recipe(base: Path, data: Path, reward_file: Path, **extra) -> dict:
    recipe = tg.recipe_dict(base, data, task="reinforcement", name="tiny-grpo")
    recipe["data"] = {"source": str(data), "prompt": "{question} Answer:", "response": "{answer}",
                      "splits": {"validation": 0.0, "test": 0.2}, "max_length": 32}
    recipe["train"].update(max_steps=2, batch_size=4, logging_steps=1, save_every=1)
    recipe["rl"] = {"num_generations": 2, "max_completion_length": 8, "beta": 0.05,
                    "rewards": [{"kind": "answer_match"}, {"kind": "format", "pattern": "[0-9]", "weight": 0.5},
                                {"kind": "length", "min": 12, "max": 24, "unit": "characters"},
                                {"python": f"{reward_file}:digits"}]}
    recipe["evaluate"] = {"batch_size": 8, "generation": {"max_new_tokens": 8}, "answer_pattern": "(-?[0-9]+)",
                          "baseline": "zero-shot"}
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    return recipe


# ------------------------------------------------------------------ the rewards, one by one
def reward_recipe(*entries, pattern=None, response="{answer}"):
    return tg.load({"name": "r", "task": "reinforcement", "model": {"base": "m"},
                    "data": {"source": "d.jsonl", "prompt": "{q}", "response": response},
                    "evaluate": {"answer_pattern": pattern}, "rl": {"rewards": list(entries)}})


def split_of(references: list[str], rows: list[dict] | None = None):
    rows = rows or [{} for _ in references]
    return {"reference": references, "row": [json.dumps(r) for r in rows]}


def scores(recipe, completions, references, rows=None, base_dir=Path(".")):
    split = split_of(references, rows)
    return {f.__name__: f(prompts=["p"] * len(completions), completions=completions,
                          completion_ids=[[1] * len(c.split()) for c in completions], **split)
            for f in rewards.build(recipe, split, base_dir)}


def test_answer_match_compares_answers_as_numbers_or_normalised_text():
    recipe = reward_recipe({"kind": "answer_match"}, pattern=r"=\s*(.+)$")
    found = scores(recipe, ["3 + 4 = 7.0", "3 + 4 = 8", "seven", "x = The Cat."], ["7", "7", "7", "= cat"])
    assert found == {"answer_match": [1.0, 0.0, 0.0, 1.0]}  # no answer found: 0; articles and case ignored
    column = reward_recipe({"kind": "answer_match", "column": "{gold:g}"})  # no pattern: the whole text
    assert scores(column, ["12", "12"], ["", ""], [{"gold": 12.0}, {"gold": 13.0}]) == {"answer_match": [1.0, 0.0]}


def test_format_length_and_label_match_score_each_completion():
    recipe = reward_recipe({"kind": "format", "pattern": r"^\d+$"}, {"kind": "length", "min": 2, "max": 4},
                           {"kind": "label_match"}, {"kind": "format", "pattern": "zz"})
    found = scores(recipe, ["42", "it is positive", "positive or negative", "neutral one two three four five six"],
                   ["positive", "positive", "negative", "neutral"])  # the labels: these references
    assert found["format"] == [1.0, 0.0, 0.0, 0.0] and found["format_2"] == [0.0] * 4  # a repeated kind: _2
    assert found["length"] == [0.5, 1.0, 1.0, 0.25]      # words (tokens here): 1 of min 2; 7 is 3 past max 4
    assert found["label_match"] == [0.0, 1.0, 0.0, 1.0]  # naming two labels is a hedge, not a match


def test_a_python_reward_gets_the_data_columns_and_must_return_one_number_each(tmp_path):
    code = tmp_path / "mine.py"
    code.write_text("def bonus(completions, reference, city, **kwargs):\n"
                    "    return [1.0 if c == city_ else None for c, city_ in zip(completions, city)]\n"
                    "def broken(completions, **kwargs):\n    return [1.0]\n"
                    "def loud(completions, **kwargs):\n    raise KeyError('nope')\n")
    recipe = reward_recipe({"python": f"{code}:bonus"}, {"python": f"{code}:broken"})
    functions = rewards.build(recipe, split_of(["a", "b"]), tmp_path)
    bonus, broken = functions
    assert bonus.__name__ == "bonus"
    split = split_of(["a", "b"], [{"city": "Oslo"}, {"city": "Rome"}])
    assert bonus(prompts=["p", "q"], completions=["Oslo", "Paris"], **split) == [1.0, None]
    with pytest.raises(UserError, match="returned 1 values for 2 completions"):
        broken(prompts=["p", "q"], completions=["a", "b"], **split)
    with pytest.raises(UserError, match="mine.py:loud: the reward function raised KeyError"):
        rewards.build(reward_recipe({"python": f"{code}:loud"}), split, tmp_path)[0](prompts=["p"], completions=["a"],
                                                                                    **split_of(["a"]))
    with pytest.raises(UserError, match="no function 'missing'") as info:
        rewards.build(reward_recipe({"python": f"{code}:missing"}), split, tmp_path)
    assert "bonus, broken, loud" in info.value.hint


def test_a_reward_file_inside_a_model_folder_is_refused(tmp_path):
    folder = tmp_path / "downloaded-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "reward.py").write_text("def r(completions, **kw):\n    return [1.0] * len(completions)\n")
    recipe = reward_recipe({"python": f"{folder / 'reward.py'}:r"})
    with pytest.raises(UserError, match="is inside the model folder"):
        rewards.training_inputs(recipe, tmp_path, lambda field: ".".join(map(str, field)))
    with pytest.raises(UserError, match="rl.rewards.0.python: .*missing.py does not exist"):
        rewards.training_inputs(reward_recipe({"python": "missing.py:r"}), tmp_path, lambda f: ".".join(map(str, f)))


@pytest.mark.parametrize("change, where, words", [
    ({"rl": {"rewards": [{"kind": "format"}]}}, "rl.rewards.0.pattern", "needs the pattern"),
    ({"rl": {"rewards": [{"kind": "length", "min": 9, "max": 3}]}}, "rl.rewards.0.max", "below min"),
    ({"rl": {"rewards": [{"kind": "answer_match", "min": 3}]}}, "rl.rewards.0.min", "does not read min"),
    ({"rl": {"rewards": [{"kind": "answr_match"}]}}, "rl.rewards.0.kind", "did you mean 'answer_match'"),
    ({"rl": {"rewards": [{"python": "rewards.py"}]}}, "rl.rewards.0.python", "does not name FILE.py:FUNCTION"),
    ({"rl": {"rewards": [{"kind": "answer_match"}]}, "data": {"response": None}}, "rl.rewards.0.column",
     "neither data.response nor column"),
    ({"rl": None}, "rl", "needs an rl section"),
    ({"task": "causal-lm"}, "rl", "the rl section is for task reinforcement"),
    ({"rl": {"loss_type": "luspo"}}, "rl.importance_sampling_level", "luspo weighs whole sequences"),
    ({"evaluate": {"few_shot": 2}}, "evaluate.few_shot", "puts no examples before its prompts"),
], ids=["format", "length", "unread", "kind", "python", "reference", "missing", "other task", "luspo", "few-shot"])
def test_bad_rl_sections_are_located(tmp_path, change, where, words):
    from adaptctl.recipe.loader import load_recipe

    raw = grpo_recipe(tmp_path / "model", tmp_path / "d.jsonl", tmp_path / "r.py")
    for key, value in change.items():
        if key == "task":
            raw[key] = value
        elif value is None:
            raw.pop(key)
        else:
            raw[key] = {k: v for k, v in {**raw[key], **value}.items() if v is not None}
    path = tg.write_recipe(tmp_path / "recipe.yaml", raw)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    text = "\n".join(info.value.details)
    assert f"{path}:" in text and f"{where}: " in text and words in text, text


def test_a_reward_file_is_read_beside_the_recipe_that_names_it(tmp_path, monkeypatch):
    """Relative to the recipe file that wrote it (an extended recipe's, its own), whatever the working folder."""
    from adaptctl.recipe.loader import load_recipe

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "common.py").write_text("def r(completions, **kwargs):\n    return [0.0] * len(completions)\n")
    base = grpo_recipe(tmp_path / "model", tmp_path / "d.jsonl", Path("common.py"))
    tg.write_recipe(shared / "base.yaml", base)
    child = tmp_path / "runs" / "child.yaml"
    child.parent.mkdir()
    child.write_text("extends: ../shared/base.yaml\nrl:\n  rewards:\n    - {python: 'common.py:r'}\n"
                     "    - {python: 'mine.py:m', weight: 2}\n")
    monkeypatch.chdir(tmp_path)
    found = [r.python for r in load_recipe(child).recipe.rl.rewards]
    # a list replaces the parent's: both entries are the child's, the first resolved beside it (missing there)
    assert found == [f"{child.parent / 'common.py'}:r", f"{child.parent / 'mine.py'}:m"]
    assert load_recipe(shared / "base.yaml").recipe.rl.rewards[3].python == f"{shared / 'common.py'}:digits"


def test_the_trainer_plan_checks_the_group_and_keeps_the_loss_guard(tmp_path):
    from adaptctl.tasks import reinforcement
    from adaptctl.training.session import FiniteLossGuard, guarded

    raw = grpo_recipe(tmp_path / "model", tmp_path / "d.jsonl", tmp_path / "r.py")
    raw["train"]["batch_size"] = 3
    with pytest.raises(UserError, match=r"rl.num_generations \(2\) must divide .* = 3"):
        reinforcement.trainer(tg.load(raw), model=None)
    raw["train"]["batch_size"] = 4
    plan = reinforcement.trainer(tg.load(raw), model=None)
    assert issubclass(guarded(plan.trainer_class), FiniteLossGuard)  # a non-finite loss stops GRPO too
    assert plan.arguments["reward_weights"] == [1.0, 0.5, 1.0, 1.0] and plan.arguments["beta"] == 0.05
    assert plan.arguments["per_device_eval_batch_size"] % 2 == 0 and set(plan.columns) == {"prompt", "reference", "row"}


# ------------------------------------------------------------------ GRPO on a tiny model, chained on SFT
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A tiny SFT run (LoRA), then GRPO over it (model.base: the SFT run), through `adaptctl run`."""
    from adaptctl.core import console
    from adaptctl.cli import main

    folder = tmp_path_factory.mktemp("grpo")
    llama = tg.save_tiny_llama(folder / "llama")
    data = sums(folder / "sums.jsonl")
    sft = tg.recipe_dict(llama, data, name="tiny-sft")
    sft["data"].update(prompt="{question} Answer:", response=" {answer}")
    sft["train"].update(max_steps=2)
    assert main(["train", str(tg.write_recipe(folder / "sft.yaml", sft)), "--run-dir", str(folder / "sft")]) == 0
    reward_file = folder / "my_rewards.py"
    reward_file.write_text(REWARD_CODE)
    # export's fresh-process check is export's own test (test_export.py); here: that the folder is written
    raw = grpo_recipe(folder / "sft", data, reward_file, export={"verify": False})
    recipe = tg.write_recipe(folder / "grpo.yaml", raw)
    code = main(["run", str(recipe), "--run-dir", str(folder / "run")])
    console.set_quiet(False)
    assert code == 0
    return folder


def test_grpo_trains_the_adapter_and_logs_every_reward(chain):
    from safetensors.torch import load_file

    run = chain / "run"
    adapter = load_file(run / "train" / "model" / "adapter_model.safetensors")
    assert any(float(v.abs().sum()) > 0 for k, v in adapter.items() if "lora_B" in k)
    config = json.loads((run / "train" / "model" / "adapter_config.json").read_text())
    assert "ref" not in json.dumps(config.get("target_modules"))
    assert not (run / "train" / "model" / "ref").exists()  # the reference is the adapter switched off, no copy
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for name in ("answer_match", "format", "length", "digits"):
        assert all(f"rewards/{name}/mean" in r for r in steps), name
    assert all("kl" in r and "completions/tokens_per_second" in r for r in steps)
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert manifest["generated_tokens"] > 0 and manifest["generation_seconds"] > 0
    assert manifest["tokens_seen"] > manifest["generated_tokens"]  # prompts and completions
    python = manifest["rewards"][3]
    assert python["python"] == str(chain / "my_rewards.py") and len(python["sha256"]) == 64
    assert manifest["key_parts"]["inputs"]["rl.rewards.3.python"] == python["sha256"]
    lineage = json.loads((run / "prepare" / "manifest.json").read_text())["lineage"]
    assert [entry.get("name") or entry.get("model") for entry in lineage][1:] == ["tiny-sft", "tiny-grpo"]


def test_evaluate_scores_exact_match_and_rewards_beside_the_sft_model(chain):
    run = chain / "run"
    document = json.loads((run / "evaluate" / "metrics.json").read_text())
    names = {"exact_match", "f1", "reward", "completion_tokens", "reward_answer_match", "reward_format",
             "reward_length", "reward_digits"}
    assert names <= set(document["metrics"]) and names <= set(document["baseline"]["metrics"])
    assert document["baseline"]["model"] == str(chain / "sft") and document["answers"]["pattern"] == "(-?[0-9]+)"
    prediction = json.loads((run / "evaluate" / "predictions.jsonl").read_text().splitlines()[0])
    assert prediction["input"].startswith("What is ")
    assert list(prediction["rewards"]) == ["answer_match", "format", "length", "digits"]
    total = sum(w * (prediction["rewards"][n] or 0) for w, n in zip([1, 0.5, 1, 1], prediction["rewards"]))
    assert prediction["score"] == pytest.approx(total, abs=1e-6)
    export = json.loads((run / "export" / "manifest.json").read_text())
    assert export["status"] == "complete" and export["merged"]
    assert (run / "export" / "model" / "model.safetensors").is_file()
    assert (run / "train" / "loss.png").stat().st_size > 0


def test_predict_answers_with_the_pattern(chain, run_cli, tmp_path):
    question = tmp_path / "ask.jsonl"
    question.write_text(json.dumps({"question": "What is 2 plus 3?"}) + "\n")
    out = tmp_path / "answers.jsonl"
    code, _, err = run_cli(["predict", chain / "run", "--input", question, "--output", out])
    assert code == 0, err
    row = json.loads(out.read_text())
    assert row["input"] == "What is 2 plus 3? Answer:" and "answer" in row and isinstance(row["prediction"], str)


def test_plan_counts_the_sampled_completions(chain, run_cli, tmp_path):
    code, out, err = run_cli(["plan", chain / "grpo.yaml", "--run-dir", tmp_path / "planned", "--steps", "1", "--json"])
    assert code == 0, err
    plan = json.loads(out)
    rows = json.loads((chain / "run" / "prepare" / "stats.json").read_text())["splits"]["train"]["rows"]
    generation = plan["generation"]
    assert plan["steps"] == 2 and generation["completions"] == 8 and generation["generated_tokens_at_most"] == 64
    assert generation["completions_per_prompt"] == 2 and 0 < generation["share_of_step_time"] < 1
    assert plan["train_rows"] == rows and plan["worst_batch_tokens"] % 8 == 0 and "completions sampled" in err


def test_an_edited_reward_file_makes_the_trained_model_stale(chain, run_cli):
    reward_file = chain / "my_rewards.py"
    try:
        reward_file.write_text(REWARD_CODE.replace("max(len(text), 1)", "max(len(text), 2)"))
        code, _, err = run_cli(["evaluate", chain / "grpo.yaml", "--run-dir", chain / "run"])
    finally:
        reward_file.write_text(REWARD_CODE)
    assert code == 1 and "the content of rl.rewards.3.python changed" in err


def test_a_killed_grpo_run_resumes_to_the_uninterrupted_adapter(chain, run_cli, tmp_path):
    """Sampling is seeded and its state is in the checkpoint: a run killed (SIGKILL) after step 1's checkpoint
    and run again samples the same completions and ends with the chain fixture's adapter."""
    import torch
    from safetensors.torch import load_file
    from test_resume import killed_and_resumed

    run = tmp_path / "run"
    manifest = killed_and_resumed(run_cli, chain / "grpo.yaml", run, tmp_path / "killed.log")
    assert manifest["resumed_from_step"] == 1 and manifest["steps"] == 2
    resumed = load_file(run / "train" / "model" / "adapter_model.safetensors")
    whole = load_file(chain / "run" / "train" / "model" / "adapter_model.safetensors")
    assert resumed.keys() == whole.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-6)
