"""lm-evaluation-harness against `adaptctl serve`: does a served model score what the model itself scores?

lm-evaluation-harness's `local-completions` model asks an OpenAI-compatible server for log-likelihoods (token ids,
echo, logprobs: 1, max_tokens: 1); its `hf` model computes the same numbers in-process with transformers.  This
runs one multiple-choice task both ways on one run's export and compares every log-likelihood:

- as the run serves (its precision: auto, bf16 autocast on a CPU) against `hf` under the same autocast
  (`mixed_precision_dtype=bfloat16`);
- in fp32 (a copy of the export whose adaptctl.json asks for fp32) against `hf` in fp32.

The task (no download): 100 Multi30k test captions, each with its German reference among 3 other test lines'
references (seed 0), scored as "Translate to German: {en}\\nGerman:" + " " + choice.  Writes
bench/RESULTS-lmeval.md from bench/out/lmeval/.

lm-evaluation-harness is not a dependency of adaptctl; it was installed beside the project's venv without its
dependencies (torch, transformers, datasets come from the venv):

    pip install --target /work/lmeval-pkgs --no-deps lm-eval==0.4.13 sqlitedict pytablewriter evaluate \\
        jsonlines more_itertools zstandard word2number tqdm-multiprocess DataProperty mbstrdecoder tabledata \\
        tcolorpy typepy pathvalidate aiohttp tenacity aiohappyeyeballs aiosignal frozenlist multidict yarl \\
        propcache attrs chardet
    LMEVAL_PATH=/work/lmeval-pkgs python bench/lmeval_serve.py [--run bench/out/runs/NAME] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))  # tests/serving.py: start a server on a free port, stop it

from serving import served  # noqa: E402  (found through the sys.path entry above)

OUT = BENCH / "out" / "lmeval"
SHARED = BENCH.parent.parent / "shared" / "data" / "multi30k"
TASK = "multi30k_mc_de"
SIDES = {"served": "adaptctl serve, precision auto (bf16 autocast)", "hf": "lm-eval hf, bf16 autocast",
         "served-fp32": "adaptctl serve, fp32", "hf-fp32": "lm-eval hf, fp32"}


def write_task(items: int) -> Path:
    en, de = ((SHARED / f"test_2016_flickr.{lang}").read_text().splitlines() for lang in ("en", "de"))
    rng = random.Random(0)
    rows = []
    for i in range(items):
        choices = [de[j] for j in rng.sample([j for j in range(len(de)) if j != i], 3)]
        label = rng.randrange(4)
        choices.insert(label, de[i])
        rows.append(json.dumps({"en": en[i], "choices": choices, "label": label}, ensure_ascii=False))
    (OUT / "task.jsonl").write_text("\n".join(rows) + "\n")
    (OUT / f"{TASK}.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {OUT / 'task.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Translate to German: {{en}}\\nGerman:\"\ndoc_to_choice: choices\ndoc_to_target: label\n"
        "target_delimiter: \" \"\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return OUT


def fp32_copy(export: Path) -> Path:
    """The export with adaptctl.json's inference precision set to fp32 (what serve and predict read)."""
    copy = OUT / "fp32-model"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(export, copy)
    settings = json.loads((copy / "adaptctl.json").read_text())
    settings["inference"]["precision"] = "fp32"
    (copy / "adaptctl.json").write_text(json.dumps(settings, indent=2))
    return copy


def lm_eval(side: str, model_args: str, model: str) -> float:
    """One lm_eval run into OUT/side; its wall seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": os.environ.get("LMEVAL_PATH", "")}
    shutil.rmtree(OUT / side, ignore_errors=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", model, "--tasks", TASK, "--include_path", str(OUT),
                    "--model_args", model_args, "--output_path", str(OUT / side), "--log_samples",
                    "--device", "cpu", "--batch_size", "1"], check=True, env=env,
                   stdout=open(OUT / f"{side}.log", "w"), stderr=subprocess.STDOUT)
    return time.monotonic() - start


def through_server(side: str, folder: Path, tokenizer: Path) -> float:
    with served(folder, "--threads", "1", env={"HF_HUB_OFFLINE": "1"}) as server:
        return lm_eval(side, f"model={server.model},base_url={server.base_url}/completions,tokenizer={tokenizer},"
                             "tokenizer_backend=huggingface,num_concurrent=1", "local-completions")


def run_all(run: Path):
    export = run / "export" / "model"
    seconds = {"served": through_server("served", run, export),
               "hf": lm_eval("hf", f"pretrained={export},dtype=float32,mixed_precision_dtype=bfloat16", "hf")}
    seconds["served-fp32"] = through_server("served-fp32", fp32_copy(export), export)
    seconds["hf-fp32"] = lm_eval("hf-fp32", f"pretrained={export},dtype=float32", "hf")
    (OUT / "seconds.json").write_text(json.dumps({"run": str(run), **seconds}, indent=2))


# ------------------------------------------------------------------ the page
def samples(side: str) -> dict:
    found = next((OUT / side).glob("*/samples_*.jsonl"))
    rows = [json.loads(line) for line in found.read_text().splitlines()]
    return {row["doc_id"]: ([float(r[0]) for r in row["filtered_resps"]], [r[1] for r in row["filtered_resps"]],
                            row["acc"]) for row in rows}


def comparison(a: str, b: str) -> str:
    left, right = samples(a), samples(b)
    gaps = [abs(x - y) for doc in left for x, y in zip(left[doc][0], right[doc][0])]
    greedy = sum(x == y for doc in left for x, y in zip(left[doc][1], right[doc][1]))
    picks = sum(left[doc][2] == right[doc][2] for doc in left)
    accuracy = [sum(side[doc][2] for doc in side) / len(side) for side in (left, right)]
    return (f"| {SIDES[a]} | {SIDES[b]} | {len(gaps)} | {max(gaps):.2e} | {sum(gaps) / len(gaps):.2e} | "
            f"{greedy} of {len(gaps)} | {picks} of {len(left)} | {accuracy[0]:.2f} / {accuracy[1]:.2f} |")


def report() -> str:
    seconds = json.loads((OUT / "seconds.json").read_text())
    run = Path(seconds.pop("run"))
    version = next(Path(os.environ.get("LMEVAL_PATH", "")).glob("lm_eval-*.dist-info"), Path("lm_eval-?")).name
    return "\n".join([
        "# lm-evaluation-harness against adaptctl serve (bench/lmeval_serve.py)", "",
        (f"One multiple-choice task, scored by lm-evaluation-harness ({version.removesuffix('.dist-info')}) twice "
         f"on the export of `bench/out/runs/{run.name}`: through `adaptctl serve` (`local-completions`: token "
         "ids, `echo`, `logprobs: 1`, `max_tokens: 1`) and in-process (`hf`). 100 Multi30k test captions, each "
         "with its German reference among 3 other test lines' references (seed 0), scored as `Translate to German: "
         "{en}\\nGerman:` + ` ` + choice (no chat template: the ids are sent as lm-eval tokenizes them). Each "
         "log-likelihood is a sum over the choice's tokens (about 25)."), "",
        "| scored by | against | log-likelihoods | max abs difference | mean abs difference | is-greedy flags equal "
        "| same pick | accuracy (each) |",
        "|---|---|---|---|---|---|---|---|",
        comparison("served", "hf"), comparison("served-fp32", "hf-fp32"), comparison("served", "served-fp32"), "",
        ("In fp32 the server's figures are the model's own to float error. Under bf16 autocast both sides cast the "
         "same fp32 weights; what is left is, as far as this page checked, bf16 rounding in differently shaped "
         "computations (lm-eval feeds the context and continuation without its last token, the server the whole "
         "echoed prompt); the picks and is-greedy flags are the same. The first run of this check found a bug: an answer "
         "that ended at its first token listed no token, and lm-eval, which drops the last entry after the "
         "echoed prompt, lost the prompt's last token (on the 100-step run of the same recipe, in fp32: 68 of 400 "
         "log-likelihoods off by up to 4.7 nats); the end token is now listed last, as vLLM lists it."), "",
        "Wall seconds on this shared 2-core CPU (1 torch thread, another benchmark beside it): "
        + ", ".join(f"{SIDES[side]} {value:.0f}" for side, value in seconds.items()) + ".", "",
        "```bash", "LMEVAL_PATH=/work/lmeval-pkgs python bench/lmeval_serve.py   # see its docstring for the install",
        "```", ""])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=BENCH / "out" / "runs" / "multi30k-smollm2-en-de")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        OUT.mkdir(parents=True, exist_ok=True)
        write_task(args.items)
        run_all(args.run.resolve())
    (BENCH / "RESULTS-lmeval.md").write_text(report())


if __name__ == "__main__":
    main()
