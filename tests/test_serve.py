"""adaptctl serve (issue 30): the real server in a subprocess on a free 127.0.0.1 port, over a tiny random
causal LM run (LoRA, data.chat_template) and a tiny classifier run (LoRA, calibrated), spoken to with
the official `openai` client and with plain HTTP: it answers as `adaptctl predict` does, batches
concurrent requests, enforces its key, refuses bad requests in OpenAI's error shape and stops cleanly.
The SIGTERM test stops the LM server, so it runs after the others that use it.  Below it, what needs no
server: streamed text, decoding settings, vLLM's command line, the worker's seq2seq and beam-search path
(against predict, in-process) and the refusal of a folder with its own code."""

from __future__ import annotations

import json
import signal
import threading
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import tiny_generation as tg
from serving import start

PROMPTS = ["Reverse: apple river stone", "Reverse: green quick seven", "Reverse: table orange",
           "Reverse: window music paper cloud", "hello", "Reverse: seven", "Reverse: paper stone apple", "x"]
KEY = "serve-test-key-0123456789"
FAST = ("--threads", "1")   # the servers' torch threads: on a busy 2-core machine two contend and run far slower


def _lm_run(root: Path) -> Path:
    """A tiny Llama (its own random output layer, so greedy answers vary) with a LoRA adapter trained two
    steps, prompts through the tokenizer's chat template; no export: serve reads the run's train/model."""
    from adaptctl.cli import main

    model, data = tg.save_tiny_llama(root / "llama", tied=False), tg.write_pairs(root / "pairs.jsonl")
    recipe = tg.recipe_dict(model, data, train={"max_steps": 2})
    recipe["data"]["chat_template"] = True
    tg.write_recipe(root / "recipe.yaml", recipe)
    assert main(["run", str(root / "recipe.yaml"), "--run-dir", str(root / "run"), "--stages", "prepare,train",
                 "-q"]) == 0
    return root / "run"


def _classifier_run(root: Path) -> Path:
    """The tiny LoRA classifier, trained and evaluated with a fitted calibration temperature."""
    from tiny_classifier import tiny_classifier_recipe

    from adaptctl.cli import main

    recipe = tiny_classifier_recipe(root)
    recipe.write_text(recipe.read_text() + "evaluate: {calibrate: true}\n")
    assert main(["run", str(recipe), "--run-dir", str(root / "run"), "--stages", "prepare,train,evaluate",
                 "-q"]) == 0
    return root / "run"


def _predictions(run_dir: Path, folder: Path) -> dict[str, str]:
    """adaptctl predict's answer to each prompt: what the server must say."""
    from adaptctl.core import console
    from adaptctl.cli import main

    (folder / "in.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    assert main(["predict", str(run_dir), "--input", str(folder / "in.jsonl"), "--output", str(folder / "out.jsonl"),
                 "-q"]) == 0
    console.set_quiet(False)
    answers = [json.loads(line)["prediction"] for line in (folder / "out.jsonl").read_text().splitlines()]
    assert len(set(answers)) > 1 and all(answers), answers  # the tiny model says something, and not one thing
    return dict(zip(PROMPTS, answers))


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Both runs, both servers, and predict's answers; each server starts as soon as its run exists, and
    imports and loads while the next run trains (the servers' start-up is most of this module's time)."""
    root = tmp_path_factory.mktemp("serve")
    for part in ("lm", "classifier"):
        (root / part).mkdir()
    lm_run = _lm_run(root / "lm")
    # a long gathering window, so that the concurrent requests below surely share batches
    lm = start(lm_run, *FAST, "--max-wait-ms", "100", "--max-tokens", "64", "--max-request-bytes", "4096")
    try:
        classifier_run = _classifier_run(root / "classifier")
        classifier = start(classifier_run, *FAST, "--api-key-env", "SERVE_TEST_KEY", api_key=KEY,
                           env={"SERVE_TEST_KEY": KEY})
        try:
            yield SimpleNamespace(lm_run=lm_run, classifier_run=classifier_run, lm=lm, classifier=classifier,
                                  predictions=_predictions(lm_run, root))
        finally:
            classifier.process.send_signal(signal.SIGTERM)  # both stop at once, then each is awaited
            lm.process.send_signal(signal.SIGTERM)
            classifier.stop()
    finally:
        lm.stop()


@pytest.fixture
def lm_server(setting):
    return setting.lm.ready()


@pytest.fixture
def classifier_server(setting):
    return setting.classifier.ready()


@pytest.fixture
def predictions(setting) -> dict[str, str]:
    return setting.predictions


def _predicted(run_cli, run_dir: Path, tmp_path: Path, rows: list[dict]) -> list[dict]:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, out, err = run_cli(["predict", run_dir, "--input", inputs])
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def _client(server, api_key: str = "unused"):
    import openai

    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0)


# ------------------------------------------------------------------------ answers as predict's
def test_chat_completions_and_streams_answer_as_predict_does(lm_server, predictions):
    client = _client(lm_server)
    assert [m.id for m in client.models.list().data] == [lm_server.model] == ["tiny-causal-lm-lora"]
    for prompt in PROMPTS[:2]:
        chat = client.chat.completions.create(model=lm_server.model, messages=[{"role": "user", "content": prompt}])
        assert chat.choices[0].message.content == predictions[prompt]
        assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0
        assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
        completion = client.completions.create(model="run", prompt=prompt)   # the folder's name is accepted too
        assert completion.choices[0].text == predictions[prompt]
        chunks = list(client.chat.completions.create(model=lm_server.model, stream=True,
                                                     stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": prompt}]))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == predictions[prompt]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == chat.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
        pieces = list(client.completions.create(model=lm_server.model, prompt=prompt, stream=True))
        assert "".join(p.choices[0].text for p in pieces) == predictions[prompt]


def test_concurrent_requests_get_their_own_answers_in_shared_batches(lm_server, predictions):
    client = _client(lm_server)
    before = lm_server.get("/health")[1]
    start, answers = threading.Barrier(len(PROMPTS)), {}

    def ask(prompt: str, stream: bool):
        start.wait()
        if stream:
            chunks = client.completions.create(model=lm_server.model, prompt=prompt, stream=True)
            answers[prompt] = "".join(c.choices[0].text for c in chunks)
        else:
            answers[prompt] = client.completions.create(model=lm_server.model, prompt=prompt).choices[0].text

    threads = [threading.Thread(target=ask, args=(p, i % 2 == 1)) for i, p in enumerate(PROMPTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert answers == predictions
    after = _health_after(lm_server, before["requests"] + len(PROMPTS))
    assert after["requests"] - before["requests"] == len(PROMPTS)
    assert after["batches"] - before["batches"] < len(PROMPTS) and after["largest_batch"] >= 2


def _health_after(server, requests: int, seconds: float = 30) -> dict:
    """/health once it has counted `requests`: a batch is counted after its answers went out, so the last
    one may still be uncounted when its clients have their answers."""
    import time

    deadline = time.monotonic() + seconds
    while (health := server.get("/health")[1])["requests"] < requests and time.monotonic() < deadline:
        time.sleep(0.05)
    return health


def test_stop_max_tokens_n_and_seed(lm_server, predictions):
    client = _client(lm_server)
    prompt = next(p for p in PROMPTS if len(predictions[p].strip()) >= 6)
    answer = predictions[prompt]
    stop = answer[3:5]
    # five strings: more than OpenAI takes, as lm-evaluation-harness sends a task's `until` list and the end token
    cut = client.completions.create(model=lm_server.model, prompt=prompt,
                                    stop=[stop, "never said", "nor this", "nor that", "nor these"])
    assert cut.choices[0].text == answer[:answer.index(stop)].rstrip() and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=lm_server.model, prompt=prompt, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text
    short = client.completions.create(model=lm_server.model, prompt=prompt, max_tokens=2, presence_penalty=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    assert answer.startswith(short.choices[0].text)
    several = client.chat.completions.create(model=lm_server.model, n=3, messages=[{"role": "user", "content": prompt}])
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert {c.message.content for c in several.choices} == {answer}   # greedy: n equal answers
    sampled = [client.completions.create(model=lm_server.model, prompt=prompt, temperature=1.5, seed=seed,
                                         max_tokens=6).choices[0].text for seed in (11, 11, 12)]
    assert sampled[0] == sampled[1] != sampled[2]   # the same seed, the same sample; another seed, another


def test_logprobs_come_with_the_answer_predict_gives_in_openai_shapes(lm_server, predictions):
    """logprobs change nothing in the answer; chat's and a completion's figures for one prompt are the same
    tokens and numbers (the model's own are checked against a forward pass in the in-process test below)."""
    client = _client(lm_server)
    prompt = PROMPTS[0]
    chat = client.chat.completions.create(model=lm_server.model, messages=[{"role": "user", "content": prompt}],
                                          logprobs=True, top_logprobs=3)
    choice = chat.choices[0]
    assert choice.message.content == predictions[prompt]
    content = choice.logprobs.content
    assert len(content) == chat.usage.completion_tokens + (choice.finish_reason == "stop")   # the end token too
    for token in content:
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        assert len(token.top_logprobs) == 3 and token.bytes == list(token.token.encode())
        assert token.logprob == token.top_logprobs[0].logprob <= 0   # greedy: the likeliest (or tied with it)
    completion = client.completions.create(model=lm_server.model, prompt=prompt, logprobs=2)
    figures = completion.choices[0].logprobs
    assert completion.choices[0].text == predictions[prompt]
    assert figures.tokens == [t.token for t in content] and figures.token_logprobs == [t.logprob for t in content]
    assert all(1 <= len(top) <= 2 for top in figures.top_logprobs)   # by text: two ids may decode alike
    assert figures.text_offset == sorted(figures.text_offset) and figures.text_offset[0] == 0
    plain = client.completions.create(model=lm_server.model, prompt=prompt, logprobs=0).choices[0].logprobs
    assert plain.token_logprobs == figures.token_logprobs and plain.top_logprobs is None
    assert client.completions.create(model=lm_server.model, prompt=prompt).choices[0].logprobs is None

    # lm-evaluation-harness's loglikelihood request: context + continuation as token ids, echo, one new token;
    # it sums token_logprobs[len(context):-1] and checks each against the top alternative (is it greedy)
    tokenizer = tg.smol_tokenizer()
    context, continuation = tokenizer("Reverse: apple")["input_ids"], tokenizer(" river stone")["input_ids"]
    scored = client.completions.create(model=lm_server.model, prompt=context + continuation, echo=True,
                                       max_tokens=1, logprobs=1, temperature=0).choices[0]
    figures = scored.logprobs
    assert scored.text.startswith(tokenizer.decode(context + continuation))   # echoed as the ids decode
    assert len(figures.tokens) == len(context + continuation) + 1
    assert figures.token_logprobs[0] is None and figures.top_logprobs[0] is None
    assert all(value < 0 for value in figures.token_logprobs[len(context):-1])
    assert all(len(top) == 1 for top in figures.top_logprobs[1:])
    assert figures.text_offset[len(context)] == len(tokenizer.decode(context))


# ------------------------------------------------------------------------------ classification
def test_classify_answers_as_predict_does_and_needs_the_key(classifier_server, setting, run_cli, tmp_path):
    texts = ["great lovely happy item 3", "awful broken sad item 9", "a lovely but broken thing"]
    expected = _predicted(run_cli, setting.classifier_run, tmp_path, [{"text": t} for t in texts])
    status, body = classifier_server.post("/classify", {"model": classifier_server.model, "input": texts}, api_key=KEY)
    assert status == 200 and body["object"] == "list" and body["usage"]["prompt_tokens"] > 0
    for item, want, index in zip(body["data"], expected, range(len(texts))):
        assert item["index"] == index and item["label"] == want["prediction"]
        assert item["probabilities"] == want["probabilities"] and item["num_classes"] == 2
        assert item["probs"] == list(want["probabilities"].values()) and item["score"] == max(item["probs"])
    one = classifier_server.post("/v1/classify", {"model": "run", "input": texts[0]}, api_key=KEY)[1]
    assert one["data"][0]["probabilities"] == expected[0]["probabilities"]

    for given in (None, "wrong-key-0123456789", f"{KEY}x"):
        status, body = classifier_server.post("/classify", {"model": classifier_server.model, "input": "x"},
                                              api_key=given)
        assert status == 401 and body["error"]["code"] == "invalid_api_key", body
    assert classifier_server.get("/v1/models")[0] == 401
    import openai

    with pytest.raises(openai.AuthenticationError):
        _client(classifier_server, "wrong-key-0123456789").models.list()
    assert [m.id for m in _client(classifier_server, KEY).models.list().data] == [classifier_server.model]
    chat = classifier_server.post("/v1/chat/completions", {"model": classifier_server.model,
                                                           "messages": [{"role": "user", "content": "x"}]}, api_key=KEY)
    assert chat[0] == 400 and "/classify" in chat[1]["error"]["message"]
    assert KEY not in classifier_server.log()


# ------------------------------------------------------------------------------ bad requests
@pytest.mark.parametrize("path, body, status, param", [
    ("/v1/chat/completions", b'{"model": "x", "messages": [', 400, None),
    ("/v1/chat/completions", b'[1, 2]', 400, None),
    ("/v1/chat/completions", {"model": "{model}", "messages": [{"role": "user", "content": "hi"}],
                              "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ("/v1/chat/completions", {"model": "{model}", "messages": [{"role": "user", "content": "hi"}], "mood": 1},
     400, "mood"),
    ("/v1/chat/completions", {"model": "{model}", "messages": [{"role": "robot", "content": "hi"}]},
     400, "messages[0].role"),
    ("/v1/chat/completions", {"model": "{model}", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "{model}"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "max_tokens": 65}, 400, "max_tokens"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "stop": [str(i) for i in range(17)]}, 400, "stop"),
    ("/v1/completions", {"model": "{model}", "prompt": ["hi"] * 20, "n": 20}, 400, "n"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "logprobs": 6}, 400, "logprobs"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "logprobs": True}, 400, "logprobs"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "logprobs": 1, "stream": True}, 400, "logprobs"),
    ("/v1/completions", {"model": "{model}", "prompt": [[5, 6], []]}, 400, "prompt[1]"),
    ("/v1/completions", {"model": "{model}", "prompt": [5, 10 ** 9]}, 400, None),
    ("/v1/completions", {"model": "{model}", "prompt": [5, "a"]}, 400, "prompt"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "logprobs": 1, "echo": True, "stream": True},
     400, "logprobs"),
    ("/v1/completions", {"model": "{model}", "prompt": "hi", "echo": True, "stream": True}, 400, "echo"),
    ("/v1/chat/completions", {"model": "{model}", "messages": [{"role": "user", "content": "hi"}],
                              "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"model": "{model}", "messages": [{"role": "user", "content": "hi"}],
                              "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ("/v1/completions", {"model": "{model}", "prompt": "x" * 5000}, 413, None),
    ("/classify", {"model": "{model}", "input": "hi"}, 400, "model"),
    ("/v1/embeddings", {"model": "{model}", "input": "hi"}, 404, None),
])
def test_bad_requests_are_4xx_in_openai_error_shape(lm_server, path, body, status, param):
    if isinstance(body, dict):
        body = json.loads(json.dumps(body).replace("{model}", lm_server.model))
    got, answer = lm_server.post(path, body)
    assert got == status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param and answer["error"]["message"]
    assert "Traceback" not in json.dumps(answer)


def test_it_listens_on_127_0_0_1_only(lm_server):
    port = int(lm_server.url.rsplit(":", 1)[1])
    listening = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    addresses = [local for local, state in ((f[1], f[3]) for f in listening) if state == "0A"
                 and int(local.split(":")[1], 16) == port]
    assert addresses == [f"0100007F:{port:04X}"]   # 127.0.0.1, little-endian as the kernel writes it


def test_sigterm_finishes_the_stream_in_flight_then_exits_0(lm_server):
    """Last in the module: it stops the shared server."""
    body = json.dumps({"model": lm_server.model, "prompt": "Reverse: apple", "max_tokens": 16, "stream": True}).encode()
    request = urllib.request.Request(lm_server.url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        first = response.readline()
        assert first.startswith(b"data: {")
        lm_server.process.send_signal(signal.SIGTERM)
        rest = response.read().decode()
    assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason": "length"' in rest
    assert lm_server.process.wait(60) == 0
    assert "serve: stopped (SIGTERM)" in lm_server.log()


# ------------------------------------------------------------------------------ without a server
def test_streamed_pieces_add_up_to_the_answer_with_stops_and_split_characters():
    from adaptctl.evaluation.generation import answer_text
    from adaptctl.serve.answers import AnswerText

    tokenizer = tg.smol_tokenizer()
    text = "  Grüße, 世界!\nUser: more text after the stop"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for stops, want in (((), answer_text(tokenizer, ids)), (("\nUser",), "Grüße, 世界!"), (("世",), "Grüße,")):
        sent, answers = [], []
        answer = AnswerText(tokenizer, 0, {tokenizer.eos_token_id}, 100, stops, True,
                            lambda index, piece, reason, sent=sent: sent.append(piece), answers.append)
        for token in ids + [tokenizer.eos_token_id, 7, 7]:
            answer.step(token)
        assert answers[0].text == want and "".join(sent) == want
        assert "\ufffd" not in "".join(sent)
        assert answers[0].finish_reason == "stop"
    capped = AnswerText(tokenizer, 0, set(), 3, (), False, lambda *a: None, answers.append)
    for token in ids:
        capped.step(token)
    assert answers[-1].finish_reason == "length" and answers[-1].completion_tokens == 3


def test_an_answer_ended_by_its_end_token_lists_that_token_last_and_a_cut_one_does_not():
    """The end token's figure is the answer's last (as vLLM lists it): a reader that drops the last entry after
    an echoed prompt (lm-evaluation-harness) must not lose a prompt token when the model ends at once."""
    from adaptctl.serve.answers import AnswerText
    from adaptctl.serve.logprobs import TokenLogprob

    tokenizer = tg.smol_tokenizer()
    eos, ids = tokenizer.eos_token_id, tokenizer("Hallo Welt", add_special_tokens=False)["input_ids"]
    for limit, tail in ((10, [eos]), (len(ids), [])):
        answers = []
        text = AnswerText(tokenizer, 0, {eos}, limit, (), False, lambda *a: None, answers.append, scored=True)
        for i, token in enumerate(ids + [eos, eos]):   # the second end token is the batch's padding
            text.step(token, TokenLogprob(token, -0.5 * (i + 1)))
        assert [e.id for e in answers[0].logprobs] == ids + tail and answers[0].completion_tokens == len(ids)
        assert answers[0].text == "Hallo Welt" and answers[0].logprobs[-1].token == tokenizer.decode([(ids + tail)[-1]])


@pytest.mark.parametrize("action, content, reason", [
    ("redact", "Call me on <PHONE> or mail <EMAIL>.", "stop"),
    ("refuse", "", "content_filter"),
    ("report", "Call me on 0906 170 1461 or mail ann@example.org.", "stop")])
def test_pii_in_an_answer_is_redacted_withheld_or_reported_and_never_streamed_before_it_is_screened(action, content, reason):
    """serve --pii (issue 34): as predict --pii screens its output.  A span may straddle two streamed pieces, so a
    screened answer goes out whole at its end; a withheld one is OpenAI's content_filter."""
    from adaptctl.data import pii
    from adaptctl.serve.answers import AnswerText
    from adaptctl.serve.screening import Screen

    tokenizer, screen = tg.smol_tokenizer(), Screen(action)
    text = "Call me on 0906 170 1461 or mail ann@example.org."
    sent, answers = [], []
    answer = AnswerText(tokenizer, 0, {tokenizer.eos_token_id}, 100, (), True,
                        lambda index, piece, reason: sent.append((piece, reason)), answers.append, screen)
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        answer.step(token)
        assert not sent or action == "report"  # redact and refuse: nothing before the end
    answer.step(tokenizer.eos_token_id)
    placeholders = {kind: pii.PLACEHOLDERS[kind] for kind in ("phone", "email")}
    want = content.replace("<PHONE>", placeholders["phone"]).replace("<EMAIL>", placeholders["email"])
    assert (answers[0].text, answers[0].finish_reason) == (want, reason)
    assert "".join(piece for piece, _ in sent) == want and sent[-1][1] == reason
    assert screen.counts == {"phone": 1, "email": 1}


def test_request_decoding_over_the_runs_settings():
    from adaptctl.recipe.schema import Generation
    from adaptctl.serve.decoding import decoding_of
    from adaptctl.serve.schemas import CompletionRequest, ServeError

    run = Generation(max_new_tokens=32, num_beams=1, do_sample=False, temperature=0.7)

    def decoding(**fields):
        return decoding_of(CompletionRequest(model="m", prompt="p", **fields), run, 64)

    assert decoding().generation == run                            # nothing asked: the run's own
    assert decoding(temperature=0).generation.do_sample is False
    sampled = decoding(temperature=1.2, max_tokens=5).generation
    assert sampled.do_sample and sampled.temperature == 1.2 and sampled.max_new_tokens == 5
    nucleus = decoding(top_p=0.5)
    assert nucleus.generation.do_sample and nucleus.generation.temperature == 0.7 and nucleus.top_p == 0.5
    assert decoding(seed=1).batch_key(1) != decoding(seed=1).batch_key(2)   # a seeded request is alone
    assert decoding().batch_key(1) == decoding().batch_key(2)
    with pytest.raises(ServeError, match="over this server's limit of 64") as refused:
        decoding(max_tokens=65)
    assert refused.value.param == "max_tokens"


def test_logprobs_and_echo_are_refused_where_they_would_mislead():
    """A --pii server that redacts (the tokens would show what it hid), beam search (no per-step choice), echo
    with a stream or from a run that retrieves (its prompt is not the question sent)."""
    from adaptctl.recipe.schema import Generation
    from adaptctl.serve.app import _check_echo, _check_logprobs
    from adaptctl.serve.decoding import Decoding
    from adaptctl.serve.schemas import ServeError

    greedy, beams = (Decoding(Generation(max_new_tokens=8, num_beams=n), logprobs=1) for n in (1, 4))
    plain, screened = SimpleNamespace(screened=False, retrieves=False), SimpleNamespace(screened=True, retrieves=True)
    _check_logprobs(plain, greedy, stream=False)
    _check_echo(plain, stream=False)
    for check, message in ((lambda: _check_logprobs(screened, greedy, stream=False), "screens answers"),
                           (lambda: _check_logprobs(plain, beams, stream=False), "beam search"),
                           (lambda: _check_logprobs(plain, greedy, stream=True), "whole answers only"),
                           (lambda: _check_echo(plain, stream=True), "whole answers only"),
                           (lambda: _check_echo(screened, stream=False), "knowledge base")):
        with pytest.raises(ServeError, match=message) as refused:
            check()
        assert refused.value.status == 400 and refused.value.param in ("logprobs", "echo")


def test_vllm_engine_line_and_refusals(setting, run_cli, monkeypatch):
    from adaptctl.core.errors import UserError
    from adaptctl.predict import Predictor
    from adaptctl.serve.options import ServeOptions
    from adaptctl.serve.vllm import vllm_arguments

    lm_run, classifier_run = setting.lm_run, setting.classifier_run
    code, _, err = run_cli(["serve", lm_run, "--engine", "vllm"])   # vLLM is not installed here (no GPU)
    assert code == 1 and "vLLM is not installed" in err
    lm = Predictor.resolve(lm_run)
    with pytest.raises(UserError, match="is an adapter"):
        vllm_arguments(lm, "tiny", ServeOptions(engine="vllm"))
    line = vllm_arguments(lm, "tiny", ServeOptions(engine="vllm", enable_lora=True, port=8001))
    base = json.loads((lm.folder / "adaptctl.json").read_text())["base_model_path"]
    assert line[:6] == ["serve", base, "--enable-lora", "--lora-modules", f"tiny={lm.folder}", "--max-lora-rank"]
    assert line[line.index("--port") + 1] == "8001" and line[line.index("--host") + 1] == "127.0.0.1"
    assert json.loads(line[line.index("--override-generation-config") + 1]) == {"max_new_tokens": 8,
                                                                                 "temperature": 0.0}
    code, _, err = run_cli(["serve", lm_run, "--enable-lora"])
    assert code == 1 and "--enable-lora is vLLM's" in err
    code, _, err = run_cli(["serve", lm_run, "--pii", "hide"])
    assert code == 1 and "--pii hide: not one of report, redact, refuse" in err
    monkeypatch.delenv("SERVE_TEST_KEY", raising=False)
    code, _, err = run_cli(["serve", classifier_run, "--api-key-env", "SERVE_TEST_KEY"])
    assert code == 1 and "SERVE_TEST_KEY is not set" in err


def test_engine_answers_a_seq2seq_model_as_predict_does_greedy_and_with_beams(tmp_path):
    """The worker's batch path for an encoder-decoder, in-process: the same answers as the task's predict
    hook, greedy (token by token) and with beam search (read from the finished beams)."""
    import asyncio
    import dataclasses

    from adaptctl.predict import Predictor
    from adaptctl.serve.decoding import Decoding
    from adaptctl.serve.engine import Engine
    from adaptctl.serve.jobs import Job
    from adaptctl.serve.schemas import ServeError

    folder = tg.save_tiny_t5(tmp_path / "t5")
    texts = ["summarize: the cat sat on the mat", "hello world", "a b c d e f g"]
    loaded = Predictor.resolve(folder, {"max_new_tokens": 6}).load()
    assert loaded.task == "seq2seq"
    loop = asyncio.new_event_loop()
    try:
        for beams in (1, 2):
            settings = loaded.recipe.evaluate.generation.model_copy(update={"num_beams": beams})
            evaluate = SimpleNamespace(generation=settings, batch_size=8)
            predictor = dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe, evaluate=evaluate))
            job = Job("complete", texts, loop, decoding=Decoding(settings))
            engine = Engine(predictor, batch_size=8)
            with engine.worker_context():
                engine.run([job])
            answers, prompt_tokens = loop.run_until_complete(job.done)
            assert [a.text for a in answers] == [r["prediction"] for r in predictor.predict(texts)]
            assert prompt_tokens > len(texts) and {a.finish_reason for a in answers} <= {"stop", "length"}
        # no chat template: one user message is the prompt; a conversation is refused, not rendered some other way
        lone = Job("chat", [[{"role": "user", "content": texts[0]}]], loop, decoding=job.decoding)
        talk = Job("chat", [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": texts[0]}]],
                   loop, decoding=job.decoding)
        with engine.worker_context():
            engine.run([lone, talk])
        assert loop.run_until_complete(lone.done)[0][0].text == answers[0].text
        with pytest.raises(ServeError, match="cannot read a conversation") as refused:
            loop.run_until_complete(talk.done)
        assert refused.value.status == 400
        echoed = Job("complete", texts[:1], loop, decoding=dataclasses.replace(job.decoding, echo=True))
        with engine.worker_context():
            engine.run([echoed])
        with pytest.raises(ServeError, match="encoder-decoder reads its prompt with its encoder") as refused:
            loop.run_until_complete(echoed.done)
        assert refused.value.status == 400
    finally:
        loop.close()


def test_logprobs_are_the_models_own_log_softmax_greedy_and_sampled(tmp_path):
    """In-process, a tiny Llama served as the server runs it (precision auto: bf16 autocast on a CPU): each
    token's figure and its alternatives are the log-softmax of a plain fp32 forward pass over the prompt and the
    answer, to 0.1% (bf16 logits, a left-padded cached batch), before temperature (a sampled answer's too);
    rows that did not ask get none, in the same batch.  With echo, the prompt's tokens too (the first has none);
    a prompt sent as its token ids gets the answer its text gets."""
    import asyncio

    import torch

    from adaptctl.predict import Predictor
    from adaptctl.serve.decoding import Decoding
    from adaptctl.serve.engine import Engine
    from adaptctl.serve.jobs import Job

    predictor = Predictor.resolve(tg.save_tiny_llama(tmp_path / "llama", tied=False), {"max_new_tokens": 8}).load()
    greedy = predictor.recipe.evaluate.generation
    sampled = greedy.model_copy(update={"do_sample": True, "temperature": 1.7})
    first_ids = predictor.spec.prompt_ids(predictor.tokenizer, PROMPTS[:1], predictor.recipe)[0]
    loop = asyncio.new_event_loop()
    try:
        jobs = [Job("complete", PROMPTS[:2], loop, decoding=Decoding(greedy, logprobs=4, echo=True)),
                Job("complete", PROMPTS[2:3], loop, decoding=Decoding(greedy)),
                Job("complete", PROMPTS[3:4], loop, decoding=Decoding(sampled, seed=5, logprobs=2)),
                Job("complete", [first_ids], loop, decoding=Decoding(greedy, echo=True))]
        engine = Engine(predictor, batch_size=8)
        with engine.worker_context():
            engine.run(jobs)
        done = [loop.run_until_complete(job.done)[0] for job in jobs]
    finally:
        loop.close()
    assert done[1][0].logprobs is None and done[3][0].logprobs is None
    assert done[3][0].text == done[0][0].text and jobs[3].echoes[0].text == predictor.tokenizer.decode(first_ids)
    assert jobs[3].echoes[0].tokens is None and [e.text for e in jobs[0].echoes] == PROMPTS[:2]
    for job, answers in ((jobs[0], done[0]), (jobs[2], done[2])):
        prompts = predictor.spec.prompt_ids(predictor.tokenizer, job.inputs, predictor.recipe)
        for number, (prompt, answer) in enumerate(zip(prompts, answers)):
            ended = answer.finish_reason == "stop"   # an end token: its entry comes last
            assert len(answer.logprobs) == answer.completion_tokens + ended > 0
            assert not ended or answer.logprobs[-1].id in engine._end_ids
            ids = [entry.id for entry in answer.logprobs]
            with torch.inference_mode():
                logits = predictor.model(torch.tensor([prompt + ids])).logits[0].float()
            expected = logits[len(prompt) - 1:-1].log_softmax(-1)
            if job.echoes is not None:  # the prompt's tokens: each predicted by the ones before it
                echoed = job.echoes[number].tokens
                assert [e.id for e in echoed] == prompt and echoed[0].logprob is None
                before = logits[:len(prompt) - 1].log_softmax(-1)
                assert [e.logprob for e in echoed[1:]] == pytest.approx(
                    [before[i, token].item() for i, token in enumerate(prompt[1:])], rel=1e-3, abs=1e-4)
            for step, entry in enumerate(answer.logprobs):
                assert entry.logprob == pytest.approx(expected[step, entry.id].item(), rel=1e-3, abs=1e-4)
                # the alternatives: each its own figure, in order, none missing that the reference ranks clearly
                # higher (a random model's near-ties may swap places within float error)
                served = [v for _, v in entry.top]
                assert served == pytest.approx([expected[step, i].item() for i, _ in entry.top], rel=1e-3, abs=1e-4)
                assert served == sorted(served, reverse=True) and len(served) == job.decoding.logprobs
                assert served[-1] >= expected[step].topk(len(served)).values[-1].item() - 1e-2
                assert entry.token == predictor.tokenizer.decode([entry.id])
        if not job.decoding.generation.do_sample:
            # greedy took the likeliest token (or one tied with it: bf16 logits tie often in a random model)
            assert all(entry.logprob == entry.top[0][1] for a in answers for entry in a.logprobs)


def test_a_folder_that_would_run_its_own_code_is_refused(tmp_path, run_cli):
    folder = tg.save_tiny_llama(tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "mine.Model"}}))
    code, out, err = run_cli(["serve", folder, "--port", "0"])
    assert code == 1 and "needs its own code to load" in err and out == ""
