"""The markdown report of evaluate (evaluate/report.md) and the privacy sentences the model card shares with it.
The figures live with what they show: training/plots.py, evaluation/plots.py, sweep/plots.py, data/plots.py."""

from __future__ import annotations

FIRST_EXAMPLES = 3


def evaluation_report(document: dict, main, baselines: tuple = (None, None), prompted_as: str = "") -> str:
    """evaluate/report.md: metrics against the baselines, plots, best and worst examples.  baselines: the
    EvalResults of the base model's (or majority) baseline and of the API model, either None; prompted_as:
    how a prompting baseline asked the base model (the task's ZeroShot.words)."""
    lines = [f"# Evaluation: {document['model']}", "",
             f"Task `{document['task']}`, split `{document['split']}`, {document['num_examples']} examples.", ""]
    lines += _warnings(document.get("warnings") or [])
    lines += _metrics_table(document)
    if "scored_as" in document:
        form = document["scored_as"]
        lines += ["", f"Scored as: the {form['form']}, in {form['precision']} (an export may differ: its model card "
                      "and export/manifest.json say by how much)."]
    speed = document.get("examples_per_second")
    if speed:
        lines += ["", f"Inference: {speed:.1f} examples/s."]
    if "teacher" in document:
        lines += _teacher_section(document)
    if (document.get("baseline") or {}).get("metrics"):
        lines += ["", _baseline_sentence(document["baseline"], prompted_as)]
    if (document.get("api_baseline") or {}).get("metrics"):
        lines += ["", _api_baseline_sentence(document["api_baseline"])]
    if "judge" in document:
        lines += judge_section(document["judge"])
    if "general" in document:
        lines += _forgetting_section(document)
    if "retrieval" in document:
        lines += _retrieval_section(document)
    if "positive_label" in document:
        lines += ["", _positive_sentence(document["positive_label"])]
    lines += privacy_section(document)
    if "answers" in document:
        lines += _answers_section(document)
    if "signatures" in document:
        lines += ["", f"BLEU and chrF by sacrebleu, signatures `{document['signatures']['bleu']}` and "
                      f"`{document['signatures']['chrf']}`."]
    if "calibration" in document:
        c = document["calibration"]
        lines += ["", f"Calibration: temperature {c['temperature']:.4f} fitted on the validation split; expected "
                      f"calibration error (15 bins) {c['ece_before']:.4f} before, {c['ece_after']:.4f} after."]
    if "reliability" in main.extras:
        lines += ["", "![reliability diagram](reliability.png)"]
    for n, (template, found) in enumerate((document.get("slices") or {}).items()):
        lines += _slice_table(template, found, f"slice_{n}.png")
    if "per_class" in document:
        lines += _per_class_table(document["per_class"], main.extras.get("labels") or [])
        lines += ["", "![confusion matrix](confusion_matrix.png)", ""]
    lines += _explanations(main.extras.get("attributions") or [])
    beside = _beside(main, baselines, document)
    # the split's first rows, chosen by nothing: what a typical output looks like, beside the extremes below
    lines += _examples(f"First {FIRST_EXAMPLES} examples", list(range(min(FIRST_EXAMPLES, len(main.predictions)))),
                       main.predictions, beside)
    lines += _examples("Worst examples", _worst(main.predictions), main.predictions, beside)
    lines += _examples("Best examples", _best(main.predictions), main.predictions, beside)
    return "\n".join(lines) + "\n"


def _retrieval_section(document: dict) -> list[str]:
    """data.retrieval: retrieval quality, then the answers of the model, the baseline reading the same passages
    and the closed-book base model, on all questions and by whether the gold passage was shown."""
    quality, k = document["retrieval"], document["retrieval"]["k"]
    lines = ["", "## Retrieval", ""]
    if quality.get("with_gold"):
        cutoffs = [name for name in quality if name.startswith("recall_at_")]
        lines += [f"Embedder `{quality['embedder']}`, {k} passages per question; against the gold passage of "
                  f"{quality['with_gold']} of {quality['questions']} questions: "
                  + ", ".join(f"recall@{name.removeprefix('recall_at_')} {quality[name]:.3f}" for name in cutoffs)
                  + f", MRR@10 {quality['mrr_at_10']:.3f}.", ""]
    else:
        lines += [f"Embedder `{quality['embedder']}`, {k} passages per question; the data names no gold passage "
                  "(data.retrieval.gold), so retrieval is not scored.", ""]
    slices = document.get("retrieval_slices") or {}
    models = [name for name in next(iter(slices.values()), {}) if name != "count"]
    overall = {models[0]: document["metrics"], **({models[1]: document["baseline"]["metrics"]}
                                                  if "baseline" in document and len(models) > 2 else {}),
               "closed-book": document["closed_book"]["metrics"]}
    lines += ["| questions | count | " + " | ".join(f"{m} EM / F1" for m in models) + " |",
              "|---|---|" + "---|" * len(models)]
    lines.append(f"| all | {document['num_examples']} | " + " | ".join(_em_f1(overall.get(m, {})) for m in models) + " |")
    for name, row in slices.items():
        lines.append(f"| {name} | {row['count']} | " + " | ".join(_em_f1(row.get(m, {})) for m in models) + " |")
    return lines + ["", "closed-book: the base model given the question alone (`predictions.closed_book.jsonl`)."]


def _em_f1(metrics: dict) -> str:
    if "exact_match" not in metrics:
        return "-"
    return f"{metrics['exact_match']:.1f} / {metrics['f1']:.1f}"


def _warnings(warnings: list[str]) -> list[str]:
    if not warnings:
        return []
    return ["## Warnings", "", *(f"- **{warning}**" for warning in warnings), ""]


def _metrics_table(document: dict) -> list[str]:
    """Each metric with its bootstrap 95% interval; beside it each baseline's (the base model's or majority,
    then the API model's), the gain and the gain's paired interval (evaluation/significance.py): a gain whose
    interval reaches 0 is within noise."""
    others = [document[key] for key in ("baseline", "api_baseline") if (document.get(key) or {}).get("metrics")]
    intervals = document.get("intervals") or {}
    header = "| metric | adapted | 95% CI |" + "".join(f" {other['kind']} | gain | gain 95% CI |" for other in others)
    lines = [header, "|---|---|---|" + "---|---|---|" * len(others)]
    for name, value in document["metrics"].items():
        row = f"| {name} | {value:.4f} | {_interval(intervals.get(name))} |"
        for other in others:
            row += _gain_cells(value, other, name)
        lines.append(row)
    if any(other.get("difference") for other in others):
        lines += ["", "The intervals are bootstrap percentiles over 1,000 resamples of the examples; the gain's is "
                      "paired (both models on the same resamples)."]
    return lines


def _gain_cells(value: float, other: dict, name: str) -> str:
    """One baseline's cells of a metric row: its value, the gain over it and the gain's interval."""
    if name not in other["metrics"]:
        return " - | - | - |"
    theirs, found = other["metrics"][name], (other.get("difference") or {}).get(name) or {}
    mark = "" if not found or found.get("beyond_noise") else \
        " (worse beyond noise)" if found.get("worse_beyond_noise") else " (within noise)"
    return f" {theirs:.4f} | {value - theirs:+.4f} | {_interval(found.get('ci95'), signed=True)}{mark} |"


def _interval(bounds, signed: bool = False) -> str:
    if not bounds or any(not isinstance(b, (int, float)) or b != b for b in bounds):
        return "-"
    form = "{:+.4f}" if signed else "{:.4f}"
    return f"{form.format(bounds[0])} to {form.format(bounds[1])}"


def _answers_section(document: dict) -> list[str]:
    """answer_pattern: how many generations each model wrote in the pattern's format, beside what they got
    right by the pattern and, with a fallback, by the fallback (a model never taught the format)."""
    ours, baseline = document["answers"], document.get("baseline") or {}
    theirs = baseline.get("answers")
    models = [("adapted", ours, document["metrics"])] + ([(baseline["kind"], theirs, baseline["metrics"])] if theirs else [])
    lines = ["", "## Answers", "",
             f"`evaluate.answer_pattern` `{_cell(ours['pattern'])}` extracts the answer from the generated and the "
             "reference text; exact_match and f1 compare those answers (as numbers where both are), and a generation "
             "it does not match counts as wrong.", "",
             "| | " + " | ".join(name for name, _, _ in models) + " |", "|---|" + "---|" * len(models),
             "| generations the pattern did not match | "
             + " | ".join(f"{a['unmatched']} of {a['examples']}" for _, a, _ in models) + " |",
             "| exact_match (the pattern's answers) | " + " | ".join(metric_text(m.get("exact_match")) for _, _, m in models) + " |"]
    if "fallback" in ours:
        lines.append("| exact_match_fallback (else the last number) | "
                     + " | ".join(metric_text(m.get("exact_match_fallback")) for _, _, m in models) + " |")
    lines += ["", f"{ours['unmatched_references']} references did not match the pattern and were taken whole."]
    if "fallback" in ours:
        lines.append("exact_match_fallback takes, where the pattern finds no answer, the last number of the generation "
                     "(`evaluate.answer_fallback`): a model that never learnt the format can be right in its own words. "
                     "The unmatched counts say who learnt the format; the two exact matches, who got the answers.")
    return lines


def _explanations(rows: list[dict]) -> list[str]:
    """Each explained example as text with its most attributed tokens in bold (evaluate/attributions.jsonl)."""
    if not rows:
        return []
    from adaptctl.evaluation.explain import marked_text

    lines = ["", "## Explanations", "", "Token attributions towards the predicted class (Captum's layer integrated "
             "gradients over the embeddings); the top tokens are in bold. All scores: `attributions.jsonl`.", ""]
    for row in rows:
        lines.append(f"- {row['kind']}: reference `{_cell(row['reference'])}`, predicted `{_cell(row['prediction'])}` "
                     f"({row['score']:.3f}): " + _cell(marked_text(row["tokens"], row["top_tokens"]), 400))
    return lines


def _positive_sentence(positive: dict) -> str:
    if positive["inferred"]:
        return (f"Precision, recall and F1 score `{positive['label']}` as the positive class, inferred from the "
                "label names (set `evaluate.positive_label` to choose it).")
    return f"Precision, recall and F1 score `{positive['label']}` as the positive class (`evaluate.positive_label`)."


def _slice_table(template: str, found: dict, plot: str) -> list[str]:
    """One row per slice value (its count and every metric), and the best-worst gap of each metric."""
    values = found["values"]
    names = list(dict.fromkeys(m for row in values.values() for m in row["metrics"]))
    lines = ["", f"## By `{_cell(template)}`", "", "| value | count | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for value, row in values.items():
        lines.append(f"| {_cell(value)} | {row['count']} | " + " | ".join(metric_text(row["metrics"].get(n)) for n in names) + " |")
    lines.append("| best - worst | | " + " | ".join(metric_text(found["gap"].get(n)) for n in names) + " |")
    return lines + ["", f"![by {_cell(template)}]({plot})"]


def _per_class_table(per_class: dict, labels: list[str]) -> list[str]:
    """Precision, recall, F1 and support of every class: an average hides a rare class that is never found."""
    names = labels or [k for k, v in per_class.items() if isinstance(v, dict) and "support" in v and "avg" not in k]
    total = sum(int((per_class.get(name) or {}).get("support", 0)) for name in names) or 1
    lines = ["", "## Per class", "", "| class | precision | recall | f1 | support | share |", "|---|---|---|---|---|---|"]
    for name in names:
        row = per_class.get(name) or {}
        support = int(row.get("support", 0))
        lines.append(f"| {_cell(name)} | {row.get('precision', 0):.4f} | {row.get('recall', 0):.4f} | "
                     f"{row.get('f1-score', 0):.4f} | {support} | {support / total:.1%} |")
    return lines


# What each baseline kind is, in the report's words: a reader should know what the gain is over.
BASELINE_WORDS = {
    "majority-class": "every example labelled `{label}`, the most frequent label of the train split ({share:.1%} of it)",
}
# base-model: whether the head it is scored with is the checkpoint's own (the task spec's fresh_head says)
FRESH_HEAD = ("the base model `{model}` with a task head that the checkpoint does not have, freshly initialised "
              "and untrained (a floor, not a competitor)")
OWN_HEAD = "the base model `{model}` as it ships, with its own pretrained head (what it could do before adaptation)"
CHAIN_START = ", the first model of the chain (`evaluate.compare_with: base`)"


def _baseline_sentence(baseline: dict, prompted_as: str) -> str:
    kind = baseline["kind"]
    words = BASELINE_WORDS.get(kind)
    if kind == "base-model":  # metrics.json from before fresh_head was recorded: the head was random then
        words = FRESH_HEAD if baseline.get("fresh_head", True) else OWN_HEAD
    elif words is None:  # zero-shot-prompting, k-shot-prompting
        words = "the base model `{model}` prompted, without training" + prompted_as
    if baseline.get("compared_with") == "base":
        words += CHAIN_START
    return f"Baseline `{kind}`: " + words.format(label=baseline.get("label"), share=baseline.get("train_share") or 0,
                                                 model=baseline.get("model")) + "."


def _api_baseline_sentence(baseline: dict) -> str:
    api, unparsed = baseline["api"], baseline.get("unparsed")
    lines = (f"Baseline `{baseline['kind']}`: the API model `{api['model']}` at `{api['base_url']}`, asked the recipe's "
             f"own prompt. " + api_sentence(api))
    if unparsed and unparsed["count"]:
        more = " ..." if unparsed["count"] > len(unparsed["rows"]) else ""
        lines += (f" {unparsed['count']} answers named no label and count as wrong (rows "
                  f"{', '.join(map(str, unparsed['rows']))}{more} of predictions.api.jsonl).")
    return lines


def _forgetting_section(document: dict) -> list[str]:
    """evaluate.general: the general-text perplexity change beside the domain gain, base against adapted."""
    general, baseline = document["general"], document.get("baseline") or {}
    domain, domain_base = document["metrics"].get("perplexity"), (baseline.get("metrics") or {}).get("perplexity")
    lines = ["", "## Forgetting check", "",
             f"Perplexity (lower is better) of the adapted model and of the base `{general['base_model']}` on the "
             f"held-out domain text and on general text (`{_cell(general['source'])}`: {general['examples']} texts, "
             f"{general['scored_tokens']} scored tokens), scored alike.", "",
             "| text | adapted | base | change |", "|---|---|---|---|",
             f"| domain (`{document['split']}` split) | {metric_text(domain)} | {metric_text(domain_base)} | "
             f"{_change(domain, domain_base)} |",
             f"| general | {metric_text(general['perplexity'])} | {metric_text(general['base_perplexity'])} | "
             f"{_change(general['perplexity'], general['base_perplexity'])} |", "", _forgetting_sentence(general)]
    if baseline.get("fresh_head"):
        lines += ["", "The base is scored with a freshly initialised head, so its perplexities are a floor, not what "
                      "it knew: the general-text change measures the trained head more than forgetting."]
    return lines


def _change(ours, theirs) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)) or not theirs:
        return "-"
    return f"{ours - theirs:+.4f} ({100 * (ours - theirs) / theirs:+.1f}%)"


def _forgetting_sentence(general: dict) -> str:
    change = general.get("change_percent")
    if change is None:
        return "The general-text change could not be computed (a perplexity is not finite)."
    if change > 0:
        return (f"General-text perplexity rose {change:.1f}%: the adapted model predicts general text worse than "
                "the base, which is forgetting.")
    return f"General-text perplexity did not rise ({change:+.1f}%): no forgetting measured on this text."


def _beside(main, baselines: tuple, document: dict) -> tuple[str, list[dict]] | None:
    """The baseline's column in the example tables: its kind and its predictions, row for row (the base
    model's or majority baseline, else the API model's)."""
    for key, result in zip(("baseline", "api_baseline"), baselines):
        if result is not None and key in document and len(result.predictions) == len(main.predictions):
            return document[key]["kind"], result.predictions
    return None


def _teacher_section(document: dict) -> list[str]:
    """Distillation: what the student kept of its teacher's quality, at what size and speed."""
    teacher = document["teacher"]
    lines = ["", "## Teacher vs student", "", f"Teacher: {teacher['model']}.", "",
             "| | student | teacher | retained |", "|---|---|---|---|"]
    for name, value in teacher["metrics"].items():
        ours, kept = document["metrics"].get(name), teacher["retained_percent"].get(name)
        lines.append(f"| {name} | {metric_text(ours)} | {value:.4f} | {f'{kept:.1f}%' if kept is not None else '-'} |")
    ours, theirs = teacher.get("student_parameters"), teacher.get("parameters")
    if ours and theirs:
        lines.append(f"| parameters | {ours:,} | {theirs:,} | {ours / theirs:.0%} of the teacher's |")
    ours, theirs = document.get("examples_per_second"), teacher.get("examples_per_second")
    if ours and theirs:
        lines.append(f"| inference examples/s | {ours:.1f} | {theirs:.1f} | {teacher['speedup']:.2f}x the teacher's speed |")
    if teacher.get("agreement") is not None:
        lines += ["", f"The student gives the teacher's answer on {teacher['agreement']:.1%} of the examples."]
    if "api" in teacher:
        lines += ["", "Teacher's calls on this split: " + api_sentence(teacher["api"])]
    return lines


def _score(judge: dict) -> str:
    ci = judge.get("score_ci95")
    return f"{metric_text(judge.get('score'))} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else metric_text(judge.get("score"))


def api_sentence(api: dict) -> str:
    """What an API model's calls cost: calls made and cached, failures, tokens, latency and cost."""
    latency = api.get("mean_latency_seconds")
    cost = f", cost {api['cost']:.4f}" if api.get("cost") is not None else ""
    return (f"{api['calls_made']} calls made, {api['calls_cached']} answered from the run's cache, "
            f"{api['calls_failed']} failed; {api['tokens']:,} tokens ({api['prompt_tokens']:,} prompt, "
            f"{api['completion_tokens']:,} answer){cost}; mean latency "
            f"{f'{latency:.3f} s' if latency is not None else '-'}.")


def judge_section(judge: dict) -> list[str]:
    """evaluate.judge: win/tie/loss of the adapted model against the baseline, with 95% intervals."""
    def rate(name):
        value, ci = judge.get(f"{name}_rate"), judge.get(f"{name}_ci95")
        return f"{metric_text(value)} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else metric_text(value)

    return ["", "## Judge", "",
            f"The API model `{judge['api']['model']}` compared the adapted model's answer with the `{judge['against']}` "
            f"baseline's on {judge['judged']} of {judge['examples']} examples, each in both orders "
            f"({judge['unjudged']} without a verdict). Criteria: {_cell(judge['criteria'], 300)}", "",
            "| win | tie | loss | score (win + tie/2) |", "|---|---|---|---|",
            f"| {rate('win')} | {rate('tie')} | {rate('loss')} | {_score(judge)} |", "",
            f"Both orders gave the same verdict on {metric_text(judge.get('position_consistency'))} of the judged "
            "examples. The judge's reasons are in `predictions.jsonl`. " + api_sentence(judge["api"])]


def metric_text(value) -> str:
    """A metric as the report and the console show it: 4 decimals, or '-' where a model has none."""
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


# The example tables pick rows by index, so that the baseline's prediction for the same row sits beside them.
def _worst(predictions: list[dict], limit: int = 5) -> list[int]:
    """Classification: confidently wrong first. Generation and QA: the lowest per-example score."""
    rows = list(range(len(predictions)))
    if predictions and "probabilities" in predictions[0]:
        wrong = [i for i in rows if predictions[i].get("prediction") != predictions[i].get("reference")]
        return sorted(wrong, key=lambda i: -predictions[i].get("score", 0))[:limit]
    return sorted(rows, key=lambda i: predictions[i].get("score", 0))[:limit]


def _best(predictions: list[dict], limit: int = 5) -> list[int]:
    rows = list(range(len(predictions)))
    if predictions and "probabilities" in predictions[0]:
        rows = [i for i in rows if predictions[i].get("prediction") == predictions[i].get("reference")]
    return sorted(rows, key=lambda i: -predictions[i].get("score", 0))[:limit]


def worst_and_best(predictions: list[dict], limit: int) -> list[tuple[str, int]]:
    """("worst" | "best", row index) of the rows the report's example tables pick, `limit` of each."""
    return [("worst", i) for i in _worst(predictions, limit)] + [("best", i) for i in _best(predictions, limit)]


def _examples(title: str, picked: list[int], predictions: list[dict], beside: tuple[str, list[dict]] | None) -> list[str]:
    if not picked:
        return []
    if all(predictions[i].get("prediction") is None and "perplexity" in predictions[i] for i in picked):
        return _text_examples(title, picked, predictions, beside)
    header, rule = "| input | reference | prediction | score |", "|---|---|---|---|"
    if beside:
        header, rule = header + f" {beside[0]} |", rule + "---|"
    lines = ["", f"## {title}", "", header, rule]
    for i in picked:
        row = predictions[i]
        cells = [_cell(row.get("input")), _cell(row.get("reference")), _cell(row.get("prediction")),
                 f"{row.get('score', 0):.3f}"]
        if beside:
            cells.append(_cell(beside[1][i].get("prediction")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _text_examples(title: str, picked: list[int], predictions: list[dict], beside) -> list[str]:
    """Plain text (continued pretraining, masked-lm): nothing is generated, so each text with its perplexity
    (lower is better), and the compared model's on the same text."""
    header, rule = "| text | perplexity |", "|---|---|"
    if beside:
        header, rule = header + f" {beside[0]} perplexity |", rule + "---|"
    lines = ["", f"## {title} (by perplexity)", "", header, rule]
    for i in picked:
        cells = [_cell(predictions[i].get("input")), metric_text(predictions[i].get("perplexity"))]
        if beside:
            cells.append(metric_text(beside[1][i].get("perplexity")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(value, limit: int = 160) -> str:
    text = " ".join(str(value if not isinstance(value, list) else value[0]).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------ privacy
GUARANTEE = ("The guarantee covers the training rows (a model trained with or without any one row is nearly "
             "indistinguishable), not the base model's pretraining data, nor the validation and test rows, "
             "nor the training and validation losses in train/metrics.jsonl.")


def privacy_section(document: dict) -> list[str]:
    """report.md's Privacy section: the epsilon DP-SGD spent, the PII found in the data, the canaries' exposure."""
    lines = []
    if spent := document.get("privacy"):
        lines += ["", dp_sentence(spent), "", GUARANTEE]
    if pii := document.get("pii"):
        lines += ["", pii_sentence(pii)]
        if pii.get("by_column"):
            kinds = sorted({kind for counts in pii["by_column"].values() for kind in counts})
            lines += ["", "| column | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
            lines += [f"| {column} | " + " | ".join(str(counts.get(kind, 0)) for kind in kinds) + " |"
                      for column, counts in pii["by_column"].items()]
        if pii.get("examples"):
            lines += ["", "Examples, redacted:", ""] + [f"- `{_cell(example)}`" for example in pii["examples"]]
    if canaries := document.get("canaries"):
        lines += ["", canary_sentence(canaries)]
    return (["", "## Privacy"] + lines) if lines else []


def dp_sentence(spent: dict) -> str:
    return (f"Trained with DP-SGD: epsilon {spent['epsilon']:.3g} (target {spent['target_epsilon']:g}) at delta "
            f"{spent['delta']:g}, {spent['accountant']} accountant, over {spent['steps']} steps of Poisson batches "
            f"({spent['expected_batch_size']:g} of {spent['training_rows']} rows expected), noise multiplier "
            f"{spent['noise_multiplier']:.4g}, each example's gradient clipped to {spent['max_grad_norm']:g}.")


def pii_sentence(pii: dict) -> str:
    counts = ", ".join(f"{count} {kind}" for kind, count in pii["counts"].items() if count) or "none"
    done = {"report": "reported only: the data was trained on as it is",
            "redact": "each replaced by a typed placeholder before tokenizing"}.get(pii["action"], pii["action"])
    return (f"Personal data found by pattern (data.pii, {', '.join(pii['detect'])}): {counts} in "
            f"{pii['rows']} rows; {done}. Names are not detected (that needs an NER model).")


def canary_sentence(canaries: dict) -> str:
    return (f"Memorisation: {canaries['count']} canaries ('{canaries['prefix']}' and a random number, each inserted "
            f"{canaries['copies']} time{'s' * (canaries['copies'] > 1)} into the training rows); exposure mean "
            f"{canaries['mean_exposure']:.2f} bits, max {canaries['max_exposure']:.2f}, of at most "
            f"{canaries['max_possible']:.2f} (each canary's likelihood ranked among {canaries['candidates']} random "
            "candidates; 0 is chance, the maximum means every canary outranks every candidate).")
