"""API models (issue 31): `adaptctl serve` over a tiny random causal LM run is the OpenAI-compatible endpoint,
spoken to by the real `openai` client, as an evaluate baseline (classification and generation), a judge, and a
sequence-level distillation teacher; the call cache (a re-run makes no call; a run killed mid-labelling asks only
for the missing answers), the probe (an unreachable endpoint is exit 1 naming api.base_url) and the key (read
from api_key_env, refused when wrong, never written).  No mock: the server runs the model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tiny_generation as tg
from serving import start

KEY = "api-test-key-0123456789abcdef"
ENV = {"API_TEST_KEY": KEY}   # the variable api_key_env names in these recipes


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """The served tiny LM (greedy, so answers repeat), its key required; and the model folder it was built on."""
    from adaptctl.cli import main

    root = tmp_path_factory.mktemp("api")
    model, data = tg.save_tiny_llama(root / "llama", tied=False), tg.write_pairs(root / "pairs.jsonl")
    recipe = tg.recipe_dict(model, data, train={"max_steps": 1})
    recipe["data"]["chat_template"] = True
    tg.write_recipe(root / "lm.yaml", recipe)
    assert main(["run", str(root / "lm.yaml"), "--run-dir", str(root / "lm"), "--stages", "prepare,train", "-q"]) == 0
    server = start(root / "lm", "--threads", "1", "--api-key-env", "SERVE_KEY", api_key=KEY, env={"SERVE_KEY": KEY})
    try:
        ready = server.ready()
        yield {"root": root, "model": model, "data": data, "server": ready}
    finally:
        server.stop()


def api_block(server, **extra) -> dict:
    return {"base_url": server.base_url, "model": server.model, "api_key_env": "API_TEST_KEY", "max_tokens": 6,
            **extra}


def run_api(run_cli, args) -> tuple[int, dict, str]:
    """adaptctl ARGS --json in this process -> (exit code, the JSON line or {}, stderr)."""
    code, out, err = run_cli([*args, "--json"])
    return code, json.loads(out) if out.strip() else {}, err


def files_text(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.stat().st_size < 5e6)


# ---------------------------------------------------------------------------------------- baseline
def test_classification_baseline_through_the_api_is_cached_and_keeps_the_key_out(endpoint, tmp_path, run_cli,
                                                                                 monkeypatch):
    import yaml
    from tiny_classifier import tiny_classifier_recipe

    recipe_path = tiny_classifier_recipe(tmp_path)
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["evaluate"] = {"baseline": {"api": api_block(endpoint["server"], max_concurrency=3, cache_as="tiny-server")},
                          "few_shot": 2}
    recipe_path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("API_TEST_KEY", KEY)
    code, out, err = run_api(run_cli, ["run", recipe_path, "--run-dir", tmp_path / "run", "--stages",
                                       "prepare,train,evaluate"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())
    baseline, n = metrics["api_baseline"], metrics["num_examples"]
    assert baseline["kind"] == "api-2-shot-prompting" and baseline["model"] == endpoint["server"].model
    assert baseline["api"]["calls_made"] == n and baseline["api"]["calls_cached"] == 0
    assert baseline["api"]["tokens"] > 0 and baseline["api"]["mean_latency_seconds"] > 0
    # in addition to the baseline auto chooses (the majority class: the tiny base is no causal LM), not instead
    assert metrics["baseline"]["kind"] == "majority-class" and "api" not in metrics["baseline"]
    assert "accuracy" in baseline["difference"] and "accuracy" in metrics["baseline"]["difference"]  # paired gains
    report = (tmp_path / "run/evaluate/report.md").read_text()
    assert ("| metric | adapted | 95% CI | majority-class | gain | gain 95% CI | api-2-shot-prompting | gain | "
            "gain 95% CI |") in report.splitlines(), report
    majority = [json.loads(line) for line in (tmp_path / "run/evaluate/predictions.base.jsonl").read_text().splitlines()]
    assert len(majority) == n and len({r["prediction"] for r in majority}) == 1
    rows = [json.loads(line) for line in (tmp_path / "run/evaluate/predictions.api.jsonl").read_text().splitlines()]
    # unreadable answers are counted, located and wrong; accuracy counts the readable right ones
    unread = [i for i, r in enumerate(rows) if r["prediction"] is None]
    assert baseline["unparsed"]["count"] == len(unread) and baseline["unparsed"]["rows"] == unread[:20]
    right = sum(r["prediction"] == r["reference"] for r in rows)
    assert baseline["metrics"]["accuracy"] == pytest.approx(right / n)
    assert all(isinstance(r["answer"], str) for r in rows)
    assert out["api"]["baseline"]["calls_made"] == n
    assert "API model" in report and "Baseline `majority-class`" in report
    assert KEY not in files_text(tmp_path / "run") and KEY not in err

    # the stage again, with the API model alone (beside: none) and the server moved to a port where nothing
    # listens: the cache knows it by its name (cache_as), so every answer comes from the cache, no call made
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        moved = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    recipe["evaluate"]["baseline"].update(beside="none")
    recipe["evaluate"]["baseline"]["api"]["base_url"] = moved
    recipe_path.write_text(yaml.safe_dump(recipe))
    code, out, err = run_api(run_cli, ["evaluate", recipe_path, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    assert out["api"]["baseline"]["calls_made"] == 0 and out["api"]["baseline"]["calls_cached"] == n
    alone = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())
    assert "baseline" not in alone and alone["api_baseline"]["metrics"] == baseline["metrics"]
    assert not (tmp_path / "run/evaluate/predictions.base.jsonl").exists()
    manifest = json.loads((tmp_path / "run/evaluate/manifest.json").read_text())
    assert manifest["api"]["baseline"]["calls_cached"] == n

    # a wrong key is exit 1 naming api_key_env, before any inference; an unset variable too
    recipe["evaluate"]["baseline"]["api"]["base_url"] = endpoint["server"].base_url
    recipe_path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("API_TEST_KEY", "wrong-key-123")
    code, out, err = run_api(run_cli, ["evaluate", recipe_path, "--run-dir", tmp_path / "wrong"])
    assert code == 1 and "evaluate.baseline.api.api_key_env" in err and "refused the key" in err, err
    assert "wrong-key-123" not in err


def test_an_endpoint_that_cannot_be_reached_is_exit_1_naming_base_url_before_training(tmp_path, run_cli):
    import yaml
    from tiny_classifier import tiny_classifier_recipe

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe_path = tiny_classifier_recipe(tmp_path)
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["evaluate"] = {"baseline": {"api": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}}}
    recipe_path.write_text(yaml.safe_dump(recipe))
    code, _, err = run_api(run_cli, ["run", recipe_path, "--run-dir", tmp_path / "run"])
    assert code == 1 and "evaluate.baseline.api.base_url" in err and f"127.0.0.1:{port}" in err, err
    assert "Traceback" not in err and not (tmp_path / "run/train/manifest.json").exists()


def test_generation_baseline_and_pairwise_judge(endpoint, tmp_path, run_cli, monkeypatch):
    server = endpoint["server"]
    recipe = tg.recipe_dict(endpoint["model"], endpoint["data"], train={"max_steps": 1})
    recipe["evaluate"] = {"batch_size": 8, "generation": {"max_new_tokens": 6}, "max_examples": 4,
                          "baseline": {"api": api_block(server)},
                          "judge": {"api": api_block(server, max_tokens=12), "criteria": "Which answer reverses the words?"}}
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    monkeypatch.setenv("API_TEST_KEY", KEY)
    code, out, err = run_api(run_cli, ["run", path, "--run-dir", tmp_path / "run", "--stages", "prepare,train,evaluate"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())
    baseline, judge = metrics["api_baseline"], metrics["judge"]
    assert baseline["kind"] == "api-zero-shot-prompting" and {"rougeL", "bleu", "chrf"} <= set(baseline["metrics"])
    # the base model prompted beside the API model; the judge compares the adapted model with the API model
    assert metrics["baseline"]["kind"] == "zero-shot-prompting" and set(baseline["metrics"]) < set(metrics["baseline"]["metrics"])
    assert judge["against"] == "api-zero-shot-prompting"
    assert judge["examples"] == 4 and judge["api"]["calls_made"] == 8  # both orders of every pair
    assert out["api"]["judge"]["calls_made"] == 8 and out["api"]["baseline"]["calls_made"] == 4
    assert judge["judged"] + judge["unjudged"] == 4
    if judge["judged"]:
        assert judge["win_rate"] + judge["tie_rate"] + judge["loss_rate"] == pytest.approx(1, abs=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "run/evaluate/predictions.jsonl").read_text().splitlines()]
    assert all(len(r["judge"]["reasons"]) == 2 for r in rows[:4])
    assert "## Judge" in (tmp_path / "run/evaluate/report.md").read_text()


def test_judge_verdicts_both_orders_and_intervals():
    from adaptctl.api.judge import adapted_score, verdict, wilson

    assert verdict("A is closer.\nVerdict: B") == "b" and verdict("**Verdict:** Tie") == "tie" and verdict("hm") is None
    assert adapted_score("a", "b") == 1.0      # the adapted answer won in both positions
    assert adapted_score("a", "a") == 0.5      # the judge preferred position A both times: a tie
    assert adapted_score(None, "a") == 0.0 and adapted_score(None, None) is None
    low, high = wilson(0, 10)
    assert low == 0 and 0.2 < high < 0.35 and wilson(5, 0) is None


def test_label_reading():
    from adaptctl.tasks.api_forms import read_label

    labels = ["World", "Sports", "Business", "Sci/Tech"]
    assert read_label(" sci/tech.", labels) == "Sci/Tech" and read_label("It is about Sports, not World", labels) == "Sports"
    assert read_label("no idea", labels) is None and read_label("hamster", ["ham", "spam"]) is None


# ---------------------------------------------------------------------------------------- teacher
def test_api_teacher_run_killed_mid_labelling_resumes_with_only_the_missing_calls(endpoint, tmp_path, run_cli,
                                                                                  monkeypatch):
    server = endpoint["server"]
    data = tg.write_pairs(tmp_path / "pairs.jsonl", rows=90, seed=3)
    recipe = tg.recipe_dict(endpoint["model"], data, train={"max_steps": 1})
    recipe["distill"] = {"teacher": {"api": api_block(server, max_concurrency=1, max_tokens=24)}, "alpha": 1.0}
    recipe["evaluate"] = {"batch_size": 8, "generation": {"max_new_tokens": 4}, "max_examples": 3}
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    cache, run = tmp_path / "run/api_cache", tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "adaptctl", "distill", str(path), "--run-dir", str(run), "-q"],
                               env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None and len(list(cache.glob("*/*.json"))) < 5:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = len(list(cache.glob("*/*.json")))
    assert 5 <= kept, process.stderr.read()

    monkeypatch.setenv("API_TEST_KEY", KEY)
    code, out, err = run_api(run_cli, ["run", path, "--run-dir", run, "--stages", "distill,evaluate"])
    assert code == 0, err
    calls = out["api"]["teacher"]
    manifest = json.loads((run / "distill/manifest.json").read_text())
    asked = manifest["api"]["teacher"]
    assert asked["calls_cached"] == kept and asked["calls_made"] + kept == manifest["teacher_rows"]
    assert kept < manifest["teacher_rows"], "the kill came after the labelling: nothing left to resume"
    assert manifest["sequence_level"] and manifest["gold_rows"] == 0
    metrics = json.loads((run / "evaluate/metrics.json").read_text())
    assert metrics["teacher"]["api"]["calls_made"] == 3 and calls["calls_made"] == 3


# ---------------------------------------------------------------------------------------- recipe rules
@pytest.mark.parametrize("section, words", [
    ({"evaluate": {"judge": {"api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}}, "evaluate.judge"),
    ({"distill": {"teacher": {"api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}, "augment": {"copies": 2}}},
     "distill.augment.copies"),
    ({"evaluate": {"baseline": {"api": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "A-B"}}}},
     "evaluate.baseline"),
    ({"evaluate": {"baseline": {"api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "beside": "base"}}},
     "evaluate.baseline.beside"),
    ({"evaluate": {"baseline": {"api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "beside": "majority"}}},
     "evaluate.baseline.beside"),
])
def test_api_blocks_are_validated_at_their_line(tmp_path, run_cli, section, words):
    import yaml

    recipe = {"name": "x", "task": "classification", "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
              "data": {"source": "data.csv", "text": "text", "label": "label"}, **section}
    if "majority" in str(section):  # a generation task, which has no majority class to put beside the API model
        recipe.update(task="causal-lm", data={"source": "data.txt", "text": "text"}, method={"name": "lora"})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(["validate", path])
    assert code == 1 and words in err and "recipe.yaml:" in err, err


# ---------------------------------------------------------------------------------------- retries
class _Flaky:
    """A local HTTP endpoint that answers 429 (with a Retry-After of 10 ms) to the first `busy` chat requests,
    then a chat completion: the network faults the openai client's retries are for, injected on 127.0.0.1."""

    def __init__(self, busy: int):
        import http.server
        import threading

        flaky = self
        self.busy, self.requests = busy, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                flaky.requests += 1
                if flaky.requests <= flaky.busy:
                    body, status, extra = b'{"error": {"message": "slow down"}}', 429, {"retry-after-ms": "10"}
                else:
                    body, status, extra = json.dumps({
                        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "spam"}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode(), 200, {}
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_rate_limits_are_retried_then_stop_the_stage_with_the_answers_kept(tmp_path):
    from adaptctl.api.client import ApiCaller
    from adaptctl.core.errors import RunFailed
    from adaptctl.recipe.schema import Api

    chat = [[{"role": "user", "content": "is this spam?"}]]
    flaky = _Flaky(busy=2)   # the probe's two tries, then the call itself goes through
    try:
        caller = ApiCaller(Api(base_url=flaky.base_url, model="m", max_retries=2), tmp_path, "evaluate.baseline.api")
        assert [a.text for a in caller.ask_all(chat, "test")] == ["spam"] and flaky.requests == 3
        flaky.requests, flaky.busy = 0, 99  # busy for good: 1 + max_retries tries, then exit 3; the answer stays
        other = ApiCaller(Api(base_url=flaky.base_url, model="m", max_retries=2), tmp_path, "evaluate.baseline.api")
        with pytest.raises(RunFailed, match="evaluate.baseline.api.base_url.*after 2 retries"):
            other.ask_all(chat + [[{"role": "user", "content": "and this?"}]], "test")
        assert flaky.requests == 2 + 3 and other.stats.cached == 1 and other.stats.failed == 1
    finally:
        flaky.close()
