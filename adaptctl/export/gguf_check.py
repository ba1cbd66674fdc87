"""Check GGUF files the way their users will load them, in a fresh process
(`python -m adaptctl.export.gguf_check`): transformers reads each file (`gguf_file=`) and its logits on
export's verify examples must match the trained fp32 model's within the type's tolerance, and its greedy
tokens on the verify prompts must be the trained model's for the 16- and 32-bit types; where llama-cpp-python
is installed, llama.cpp tokenizes the prompts with its own tokenizer from the file (the same tokens as
training) and generates greedily (the same tokens, for the 16- and 32-bit types).

A greedy divergence where the trained model's top two tokens are closer than the type's tolerance is a
near tie that rounding may flip: recorded, not failed.  Everything else that differs is a failed check.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

GREEDY_TOKENS = 16      # generated per prompt: enough for a divergence to show, cheap on a CPU
PROMPTS = 10
# Relative to max(1, |logit|), against the trained fp32 model: f16 rounds each weight to 11 significant bits,
# bf16 to 8, q8_0 to 8 bits per block of 32 with one scale.  The largest differences measured are in each
# export's manifest and bench/RESULTS-gguf.md (a tiny random Llama: f16 1.9e-4, q8_0 5.3e-3 on logits under 1).
TOLERANCE = {"f32": 1e-4, "f16": 1e-2, "bf16": 5e-2, "q8_0": 5e-2}
EXACT = ("f32", "f16")  # greedy tokens must equal the trained model's (bf16 and q8_0: agreement recorded)
HINT = "nothing was written to export/model; remove gguf from export.formats to export without it"


def reference(model, tokenizer, prompts: list[list[int]]) -> tuple[list[list[int]], list]:
    """The trained model's greedy tokens for each prompt, and its logits at each generated step."""
    import torch

    tokens, logits = [], []
    for prompt in prompts:
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 **_greedy(model, tokenizer), output_logits=True, return_dict_in_generate=True)
        new = out.sequences[0, len(prompt):].tolist()
        tokens.append(_until_stop(new, stop_ids(model, tokenizer)))
        logits.append(torch.cat(out.logits).float())
    return tokens, logits


def stop_ids(model, tokenizer) -> set[int]:
    from adaptctl.evaluation.generation import eos_token_ids

    return set(eos_token_ids(model, tokenizer))


def _greedy(model, tokenizer) -> dict:
    from adaptctl.data.tokens import pad_token_id

    return {"max_new_tokens": GREEDY_TOKENS, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0,
            "eos_token_id": sorted(stop_ids(model, tokenizer)), "pad_token_id": pad_token_id(tokenizer)}


def _until_stop(tokens: list[int], stops: set[int]) -> list[int]:
    """Up to and with the first stop token."""
    for i, token in enumerate(tokens):
        if token in stops:
            return tokens[:i + 1]
    return tokens


def prompts_of(split) -> list[list[int]]:
    """Up to PROMPTS prompts of a prepared split: each row's tokens before its response (prompt_length), or
    the first half of a plain text's."""
    rows = split.select(range(min(PROMPTS, len(split))))
    lengths = rows["prompt_length"] if "prompt_length" in rows.column_names else [None] * len(rows)
    return [ids[:length] if length else ids[:max(1, len(ids) // 2)] for ids, length in zip(rows["input_ids"], lengths)]


def prompt_texts(tokenizer, prompts: list[list[int]]) -> list[str | None]:
    """Each prompt as the text a llama.cpp user would give (the tokens the tokenizer adds itself, such as
    BOS, left to llama.cpp); None where the text does not encode back to the same tokens in transformers
    either (a prompt cut inside a word), so it says nothing about llama.cpp's tokenizer."""
    added = len(tokenizer("x", add_special_tokens=True)["input_ids"]) - len(tokenizer("x", add_special_tokens=False)["input_ids"])
    texts = []
    for prompt in prompts:
        text = tokenizer.decode(prompt[added:] if added > 0 else prompt, skip_special_tokens=False)
        texts.append(text if tokenizer(text, add_special_tokens=True)["input_ids"] == prompt else None)
    return texts


def verify(folder: Path, files: dict[str, str], model, tokenizer, examples: list[dict], expected: dict,
           prompts: list[list[int]]) -> dict:
    """Every file's figures for the manifest; RunFailed on a difference beyond its tolerance."""
    from adaptctl.core.errors import RunFailed

    wanted, logits = reference(model, tokenizer, prompts)
    texts = prompt_texts(tokenizer, prompts)
    actual, found = _run_child(folder, files, examples, prompts, texts, sorted(stop_ids(model, tokenizer)))
    figures = {}
    for kind in files:
        figures[kind] = _check_file(kind, expected, actual, found[kind], wanted, logits, prompts, texts)
    failed = [f"{kind}: {problem}" for kind, f in figures.items() for problem in f.pop("problems")]
    if failed:
        raise RunFailed("GGUF verification failed: " + "; ".join(failed), hint=HINT)
    return figures


def _check_file(kind, expected, actual, found, wanted, logits, prompts, texts) -> dict:
    allowed = TOLERANCE[kind]
    problems, worst = [], 0.0
    for key, value in expected.items():
        got = actual.get(f"{kind}/{key}")
        if got is None or tuple(got.shape) != tuple(value.shape):
            problems.append(f"transformers gives no logits of the right shape for {key}")
            continue
        difference = (got - value).abs().max().item()
        worst = max(worst, difference)
        if difference > allowed * max(1.0, value.abs().max().item()):
            problems.append(f"transformers' logits differ from the trained model's by {difference:.3g} on {key} "
                            f"(allowed {allowed:g} x max(1, |logit|))")
    figures = {"max_logit_difference": worst, "tolerance": allowed, "load_seconds": found["load_seconds"]}
    figures["transformers"] = _agreement(kind, "transformers", wanted, found["greedy"], logits, problems)
    figures["transformers"]["tokens_per_second"] = found["tokens_per_second"]
    if found.get("llama_cpp") is None:
        figures["llama_cpp"] = {"checked": False, "why": found.get("llama_cpp_missing", "llama_cpp is not installed")}
    else:
        llama = found["llama_cpp"]
        same = [t == p for t, p in zip(llama["tokens"], prompts) if t is not None]
        if not all(same):
            problems.append(f"llama.cpp tokenizes {same.count(False)} of {len(same)} prompts differently from training")
        checked = _agreement(kind, "llama.cpp", wanted, llama["greedy"], logits, problems)
        figures["llama_cpp"] = {"checked": True, "prompts_tokenized_identically": f"{sum(same)}/{len(same)}", **checked,
                                "tokens_per_second": llama["tokens_per_second"]}
    return {**figures, "problems": problems}


def _agreement(kind: str, runtime: str, wanted, got, logits, problems: list) -> dict:
    """How many prompts' greedy tokens equal the trained model's; a divergence at a near tie is recorded."""
    identical, near_ties, tokens, same_tokens = 0, [], 0, 0
    for n, (want, have, steps) in enumerate(zip(wanted, got, logits)):
        length = min(len(want), len(have))
        tokens += len(want)
        same_tokens += sum(a == b for a, b in zip(want, have))
        if want == have:
            identical += 1
            continue
        at = next((i for i in range(length) if want[i] != have[i]), length)
        margin = float(steps[at, want[at]] - steps[at, have[at]]) if at < length else None
        scale = max(1.0, float(steps[at].abs().max())) if at < len(steps) else 1.0
        if margin is not None and margin <= TOLERANCE[kind] * scale:
            near_ties.append({"prompt": n, "step": at, "margin": round(margin, 5)})
        elif kind in EXACT:
            problems.append(f"{runtime}'s greedy tokens differ from the trained model's on prompt {n} at step {at}"
                            + (f" (the trained model's margin there is {margin:.3g})" if margin is not None else ""))
    return {"greedy_identical": f"{identical}/{len(wanted)}", "near_ties": near_ties,
            "token_agreement": round(same_tokens / tokens, 4) if tokens else None}


def _run_child(folder: Path, files: dict, examples, prompts, texts, stops) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    from adaptctl.core.errors import RunFailed
    from adaptctl.export.fresh_process import run_module

    with tempfile.TemporaryDirectory() as scratch:
        request, logits, found = Path(scratch) / "request.json", Path(scratch) / "logits.safetensors", Path(scratch) / "found.json"
        request.write_text(json.dumps({"files": files, "examples": examples, "prompts": prompts, "texts": texts,
                                       "stops": stops}))
        done = run_module("adaptctl.export.gguf_check", str(folder), str(request), str(logits), str(found))
        if done.returncode != 0:
            raise RunFailed(f"a GGUF file does not load in a fresh process:\n{done.stderr[-2000:]}", hint=HINT)
        return load_file(str(logits)), json.loads(found.read_text())


# ------------------------------------------------------------------ the child
def _child(folder: str, request: str, logits_out: str, found_out: str):
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from adaptctl.export.verify import reference_outputs

    asked = json.loads(Path(request).read_text())
    logits, found = {}, {}
    for kind, name in asked["files"].items():
        start = time.monotonic()
        # a GGUF file holds tensors and metadata only: there is no model code to trust
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False
        ).eval()
        loaded = time.monotonic() - start
        logits.update({f"{kind}/{k}": v for k, v in reference_outputs(model, asked["examples"]).items()})
        greedy, speed = _transformers_greedy(model, asked["prompts"], asked["stops"])
        found[kind] = {"load_seconds": round(loaded, 2), "greedy": greedy, "tokens_per_second": speed}
        del model
        found[kind].update(_llama_cpp(Path(folder) / name, asked["prompts"], asked["texts"], asked["stops"]))
    save_file(logits, logits_out)
    Path(found_out).write_text(json.dumps(found))


def _transformers_greedy(model, prompts, stops) -> tuple[list, float | None]:
    import torch

    outputs, generated, start = [], 0, time.monotonic()
    for prompt in prompts:
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=GREEDY_TOKENS, do_sample=False, num_beams=1, repetition_penalty=1.0,
                                 eos_token_id=stops, pad_token_id=stops[0])
        outputs.append(_until_stop(out[0, len(prompt):].tolist(), set(stops)))
        generated += len(outputs[-1])
    seconds = time.monotonic() - start
    return outputs, round(generated / seconds, 1) if seconds > 0 else None


def _llama_cpp(path: Path, prompts, texts, stops) -> dict:
    """llama.cpp's own tokens for each prompt text and its greedy continuation; {} keys say why not."""
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        return {"llama_cpp": None, "llama_cpp_missing": f"llama_cpp does not import ({exc})"}
    longest = max(len(p) for p in prompts) + GREEDY_TOKENS + 8
    llm = Llama(model_path=str(path), n_ctx=longest, n_threads=os.cpu_count() or 1, seed=0, verbose=False)
    tokens, greedy, generated, start = [], [], 0, time.monotonic()
    for prompt, text in zip(prompts, texts):
        own = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) if text is not None else None
        tokens.append(own)
        out = []
        for token in llm.generate(own if own is not None else prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                  repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if token in stops or len(out) >= GREEDY_TOKENS:
                break
        greedy.append(out)
        generated += len(out)
    seconds = time.monotonic() - start
    llm.close()
    return {"llama_cpp": {"tokens": tokens, "greedy": greedy,
                          "tokens_per_second": round(generated / seconds, 1) if seconds > 0 else None}}


if __name__ == "__main__":
    _child(*sys.argv[1:5])
