"""causal-lm on conversations (tasks/conversation.py): OpenAI `messages` and ShareGPT `conversations`,
rendered with the chat template, trained on every assistant reply and its end-of-turn token and on
nothing else; bad rows located at file:line; the pipeline on a tiny random Llama; and (slow) multi-turn
SFT of SmolLM2-135M on DialogSum dialogues turned into conversations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tiny_generation as tg
from adaptctl.core.errors import UserError
from adaptctl.tasks import conversation

CHAT = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "Colour of the sky?"},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "And grass?"},
    {"role": "assistant", "content": "Green, mostly."},
]
# A template unlike ChatML: no special tokens around roles, replies end with the tokenizer's eos text.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}"
                  "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
                  "{% if add_generation_prompt %}ASSISTANT: {% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    return tg.smol_tokenizer()


def trained_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """The token ids of each contiguous run of trained positions."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("template", [None, PLAIN_TEMPLATE], ids=["chatml", "plain"])
def test_trained_tokens_are_exactly_the_assistant_replies_and_end_tokens(tokenizer, template):
    if template is not None:
        tokenizer = tg.smol_tokenizer()
        tokenizer.chat_template = template
    encoded = conversation.encode([CHAT], tokenizer, max_length=512)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    spans = [tokenizer.decode(run) for run in trained_runs(ids, labels)]
    replies = [m["content"] + tokenizer.eos_token for m in CHAT if m["role"] == "assistant"]
    assert spans == replies
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer.decode(ids) == rendered  # nothing added or lost around the trained spans
    assert encoded["trained_tokens"][0] == sum(label != -100 for label in labels)
    assert encoded["turns"][0] == 5
    # generation continues from the conversation before the last reply, with the assistant's header
    before = tokenizer.decode(ids[:encoded["prompt_length"][0]])
    assert before == tokenizer.apply_chat_template(CHAT[:-1], tokenize=False, add_generation_prompt=True)


def test_truncation_keeps_the_last_reply_and_its_labels(tokenizer):
    long = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Short."}]
    encoded = conversation.encode([long], tokenizer, max_length=64, head=3)
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    assert len(ids) == 64 and encoded["truncated"][0]
    assert [tokenizer.decode(run) for run in trained_runs(ids, labels)] == ["Short." + tokenizer.eos_token]


def test_sharegpt_roles_are_mapped_and_unknown_ones_refused():
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    got = conversation.normalize([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
                                 "conversations", roles)
    assert got == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(ValueError, match="unknown role 'bot'"):
        conversation.normalize([{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}], "conversations", roles)
    with pytest.raises(ValueError, match="no assistant turn"):
        conversation.normalize([{"role": "user", "content": "hi"}], "messages", roles)


def test_a_model_without_a_chat_template_is_refused_naming_model_base(tokenizer):
    bare = tg.smol_tokenizer()
    bare.chat_template = None
    data = tg.load({**tg.recipe_dict(Path("m"), Path("d.jsonl")), "data": {"source": "d.jsonl", "messages": "messages"}}).data
    with pytest.raises(UserError, match="model.base: my/model has no chat template") as info:
        conversation.use_template(bare, data, "my/model")
    assert "data.chat_template" in info.value.hint
    data.chat_template = PLAIN_TEMPLATE
    assert conversation.use_template(bare, data).chat_template == PLAIN_TEMPLATE


# ------------------------------------------------------------------ pipeline
def write_chats(path: Path, rows: int = 40, sharegpt: bool = False) -> Path:
    """Two-turn conversations: the assistant repeats the user's words reversed, then says how many."""
    import random

    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(rows):
            words = rng.sample(tg.WORDS, 3)
            chat = [{"role": "user", "content": "Reverse: " + " ".join(words)},
                    {"role": "assistant", "content": " ".join(reversed(words))},
                    {"role": "user", "content": "How many?"}, {"role": "assistant", "content": "three"}]
            if sharegpt:
                names = {"user": "human", "assistant": "gpt"}
                f.write(json.dumps({"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in chat]}) + "\n")
            else:
                f.write(json.dumps({"messages": chat}) + "\n")
    return path


def chat_recipe(model: Path, data: Path, **data_fields) -> dict:
    recipe = tg.recipe_dict(model, data, train={"max_steps": 6})
    recipe["data"] = {"source": str(data), "splits": {"validation": 0.15, "test": 0.2}, "max_length": 96,
                      **(data_fields or {"messages": "messages"})}
    return recipe


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tg.save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_conversation_pipeline_prepare_train_evaluate_predict(run_cli, tmp_path, llama):
    data = write_chats(tmp_path / "chats.jsonl")
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", chat_recipe(llama, data))
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["run", recipe, "--run-dir", run_dir, "--stages", "prepare,train,evaluate"])
    assert code == 0, err
    stats = json.loads((run_dir / "prepare" / "stats.json").read_text())["splits"]["train"]
    assert stats["turns"] == 4 * stats["rows"]
    assert 0 < stats["trained_tokens"] < stats["untrained_tokens"]
    assert stats["trained_tokens"] + stats["untrained_tokens"] == stats["tokens"]
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert {"loss", "rougeL"} <= set(metrics["metrics"])
    rows = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["reference"] == "three" and rows[0]["input"].endswith("user: How many?")
    question = tmp_path / "ask.jsonl"
    question.write_text(json.dumps({"messages": [{"role": "user", "content": "Reverse: apple river stone"}]}) + "\n")
    out = tmp_path / "answers.jsonl"
    code, _, err = run_cli(["predict", run_dir, "--input", question, "--output", out])
    assert code == 0, err
    assert isinstance(json.loads(out.read_text().splitlines()[0])["prediction"], str)


def test_sharegpt_conversations_prepare(run_cli, tmp_path, llama):
    data = write_chats(tmp_path / "sg.jsonl", sharegpt=True)
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", chat_recipe(llama, data, conversations="conversations"))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    stats = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())["splits"]["train"]
    assert stats["turns"] == 4 * stats["rows"] and stats["trained_tokens"] > 0


@pytest.mark.parametrize("row, words", [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "has no assistant turn"),
], ids=["unknown role", "no assistant"])
def test_a_bad_conversation_row_is_located_at_its_line(run_cli, tmp_path, llama, row, words):
    data = write_chats(tmp_path / "chats.jsonl", rows=12)
    lines = data.read_text().splitlines()
    lines.insert(6, json.dumps(row))
    data.write_text("\n".join(lines) + "\n")
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", chat_recipe(llama, data))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1
    assert f"{data}:7: data.messages ('messages') " in err and words in err and "Traceback" not in err
    assert not (tmp_path / "run" / "prepare" / "data").exists()


def test_messages_beside_a_prompt_is_a_recipe_error(run_cli, tmp_path, llama):
    data = write_chats(tmp_path / "chats.jsonl", rows=12)
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", chat_recipe(llama, data, messages="messages", prompt="{x}"))
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "data.prompt" in err
