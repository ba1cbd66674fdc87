"""Machine translation, measured (issue 39): Multi30k en->de and en->fr (1,000 test lines) by SmolLM2-135M-Instruct
through its chat template (zero-shot, then LoRA SFT) and by a BERT2BERT encoder-decoder warm-started from two
copies of all-MiniLM-L6-v2 (untrained, then fully fine-tuned); and, where BERT2BERT's uncased English vocabulary
makes translation pointless, English-to-English summarization on DialogSum against SmolLM2.  Writes
bench/RESULTS-translation.md from the run directories: BLEU and chrF (sacrebleu, signatures recorded), ROUGE,
stage wall times, what MiniLM's vocabulary costs German and French, and 3 example outputs per model.

    python bench/translation.py --run    # every recipe: adaptctl run ... --threads 1 (hours on 2 busy cores)
    python bench/translation.py --run --only multi30k-smollm2-en-de --set train.max_steps=150 \
        --set evaluate.max_examples=50   # one recipe, shortened: the overrides go to `adaptctl run --set`
    python bench/translation.py --run --only multi30k-smollm2-en-de --tag 100-steps --set train.max_steps=100
                                         # a second run of one recipe, kept beside the first (runs/NAME.TAG)
    python bench/translation.py          # the report from the runs already made (recipes not run are named)

The report reads every setting it states from the runs themselves (run/recipe.yaml, the stage manifests), and
its commands name the --set overrides each run was made with (its recipe.yaml against the bench recipe's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RUNS = BENCH / "out" / "runs"
SHARED = BENCH.parent.parent / "shared" / "data"
DIRECTIONS = {"de": "German", "fr": "French"}
TRANSLATION = [f"multi30k-{path}-en-{lang}" for lang in DIRECTIONS for path in ("smollm2", "bert2bert")]
SUMMARIZATION = ["dialogsum-lora", "dialogsum-bert2bert"]
NAMES = {"smollm2": "SmolLM2-135M-Instruct", "bert2bert": "BERT2BERT (MiniLM-L6 x2)",
         "dialogsum-lora": "SmolLM2-135M-Instruct", "dialogsum-bert2bert": "BERT2BERT (MiniLM-L6 x2)"}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def command(name: str, overrides: list[str], threads: int, tag: str | None = None) -> list[str]:
    sets = [part for override in overrides for part in ("--set", override)]
    run = RUNS / (f"{name}.{tag}" if tag else name)
    return [sys.executable, "-m", "adaptctl", "run", str(BENCH / "recipes" / f"{name}.yaml"),
            "--run-dir", str(run), "--threads", str(threads), *sets]


def made(name: str) -> bool:
    return bool(runs(name))


def runs(name: str) -> list[Path]:
    """Every evaluated run of one recipe (runs/NAME and the tagged runs/NAME.TAG), the shortest training first."""
    found = [run for run in [RUNS / name, *RUNS.glob(f"{name}.*")] if (run / "evaluate" / "metrics.json").is_file()]
    return sorted(found, key=lambda run: read(run / "train" / "manifest.json")["steps"])


def recipe_of(run: Path) -> str:
    return run.name.split(".")[0]


def baseline_run(run: Path) -> Path | None:
    """The run whose evaluation holds this run's "before": itself, or (a run made with evaluate.baseline: none)
    another run of the same recipe scored on as many test rows, so the baseline is generated once."""
    rows = read(run / "evaluate" / "metrics.json")["num_examples"]
    for candidate in [run, *runs(recipe_of(run))]:
        document = read(candidate / "evaluate" / "metrics.json")
        if "baseline" in document and document["num_examples"] == rows:
            return candidate
    return None


def _flat(document: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in document.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def overrides(run: Path) -> dict:
    """What the run was made with that its bench recipe does not say: both recipes resolved (defaults filled,
    paths absolute) and compared value by value."""
    from adaptctl.recipe.loader import load_recipe

    bench, ran = (_flat(load_recipe(path).recipe.model_dump(mode="json"))
                  for path in (BENCH / "recipes" / f"{recipe_of(run)}.yaml", run / "recipe.yaml"))
    return {key: ran.get(key) for key in sorted(set(bench) | set(ran)) if bench.get(key) != ran.get(key)}


def training(run: Path) -> str:
    """How much training the run had, from its train manifest: steps, rows seen, of how many training rows."""
    manifest = read(run / "train" / "manifest.json")
    rows = read(run / "prepare" / "stats.json").get("splits", {}).get("train", {}).get("rows")
    seen = manifest["steps"] * manifest["global_batch_size"]
    share = f" = {seen / rows:.2f} epochs of {rows:,}" if rows else ""
    return f"{manifest['steps']} steps of {manifest['global_batch_size']} ({seen:,} rows{share})"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def stage_seconds(run: Path, stage: str) -> float | None:
    manifest = run / stage / "manifest.json"
    return read(manifest).get("wall_seconds") if manifest.is_file() else None


def predictions(run: Path, base: bool) -> list[dict]:
    file = run / "evaluate" / ("predictions.base.jsonl" if base else "predictions.jsonl")
    return [json.loads(line) for line in file.read_text().splitlines()]


# ------------------------------------------------------------------ vocabulary
def tokenizer(name: str):
    from transformers import AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(name).path))


def vocabulary_rows() -> list[str]:
    """Per target language with a BERT2BERT run: MiniLM's unknown-token rate on the targets (prepare's
    stats.json), tokens per word for MiniLM and SmolLM2, and the best BLEU/chrF any model on MiniLM's vocabulary
    can reach on the lines that run was scored on: their references encoded and decoded, scored against themselves."""
    from sacrebleu.metrics import BLEU, CHRF

    minilm, smol = tokenizer(MINILM), tokenizer(SMOL)
    rows = []
    for lang, language in DIRECTIONS.items():
        if not made(f"multi30k-bert2bert-en-{lang}"):
            continue
        run = runs(f"multi30k-bert2bert-en-{lang}")[-1]
        references = [row["reference"] for row in predictions(run, base=False)]
        words = sum(len(line.split()) for line in references)
        stats = read(run / "prepare" / "stats.json")
        round_trip = [minilm.decode(minilm(line)["input_ids"], skip_special_tokens=True) for line in references]
        bleu, chrf = BLEU().corpus_score(round_trip, [references]).score, CHRF().corpus_score(round_trip, [references]).score
        fertility = [sum(len(ids) for ids in t(references, add_special_tokens=False)["input_ids"]) / words
                     for t in (minilm, smol)]
        rows.append(f"| {language} | {len(references):,} | {stats.get('unknown_token_fraction_targets')} | "
                    f"{fertility[0]:.2f} | {fertility[1]:.2f} | {bleu:.1f} | {chrf:.1f} | "
                    f"`{references[0]}` -> `{round_trip[0]}` |")
    return rows


def unknown_rates() -> set:
    return {read(run / "prepare" / "stats.json").get("unknown_token_fraction_targets")
            for name in TRANSLATION if "bert2bert" in name for run in runs(name)}


def normalised_bleu(run: Path) -> tuple[float, float]:
    """BERT2BERT's BLEU and chrF against the references as MiniLM's tokenizer writes them (lower case, no accents):
    the model's quality apart from what its vocabulary cannot write."""
    from sacrebleu.metrics import BLEU, CHRF

    minilm = tokenizer(MINILM)
    rows = predictions(run, base=False)
    references = [minilm.decode(minilm(row["reference"])["input_ids"], skip_special_tokens=True) for row in rows]
    texts = [row["prediction"] for row in rows]
    return BLEU().corpus_score(texts, [references]).score, CHRF().corpus_score(texts, [references]).score


# ------------------------------------------------------------------ tables
def before(run: Path) -> tuple[dict, str]:
    """The baseline's metrics and, where another run generated it, a note naming that run."""
    source = baseline_run(run)
    if source is None:
        return {}, " (not measured)"
    metrics = read(source / "evaluate" / "metrics.json")["baseline"]["metrics"]
    return metrics, "" if source == run else f" (generated once, in `{source.name}`)"


def translation_rows() -> list[str]:
    rows = []
    for name in TRANSLATION:
        rows += [translation_row(name, run) for run in runs(name)]
    return rows


def translation_row(name: str, run: Path) -> str:
    lang, path = name[-2:], name.split("-")[1]
    document = read(run / "evaluate" / "metrics.json")
    (base, borrowed), after = before(run), document["metrics"]
    untrained = ("zero-shot (chat template)" if path == "smollm2" else "untrained warm start") + borrowed
    adapted = ("LoRA SFT" if path == "smollm2" else "full fine-tune") + f", {training(run)}"
    normalised = ""
    if path == "bert2bert":
        bleu, chrf = normalised_bleu(run)
        normalised = f" (against lower-cased, unaccented references: BLEU {bleu:.2f}, chrF {chrf:.2f})"
    train, evaluate = stage_seconds(run, "train"), stage_seconds(run, "evaluate")
    return (f"| en->{lang} | {NAMES[path]} | {document['num_examples']:,} | {untrained} | "
            f"{_score(base, 'bleu')} | {_score(base, 'chrf')} | {adapted} | {after['bleu']:.2f} | "
            f"{after['chrf']:.2f}{normalised} | {train / 60:.1f} | {evaluate / 60:.1f}{' (adapted only)' * bool(borrowed)} |")


def _score(metrics: dict, key: str, digits: int = 2) -> str:
    return f"{metrics[key]:.{digits}f}" if key in metrics else "-"


def summarization_rows() -> list[str]:
    return [summarization_row(name, run) for name in SUMMARIZATION for run in runs(name)]


def summarization_row(name: str, run: Path) -> str:
    document = read(run / "evaluate" / "metrics.json")
    (base, _), after = before(run), document["metrics"]
    return (f"| {NAMES[name]} | {document['num_examples']} | {training(run)} | "
            + " | ".join(f"{_score(base, m, 4)} -> {after[m]:.4f}" for m in ("rouge1", "rouge2", "rougeL"))
            + f" | {stage_seconds(run, 'train') / 60:.1f} | {stage_seconds(run, 'evaluate') / 60:.1f} |")


def summarization_table() -> list[str]:
    rows = summarization_rows()
    if not rows:
        return ["No DialogSum run yet."]
    return ["| model | test dialogues | training | ROUGE-1 | ROUGE-2 | ROUGE-L | train min | evaluate min |",
            "|---|---|---|---|---|---|---|---|", *rows]


def examples(names: list[str], count: int = 3) -> list[str]:
    """The first `count` test rows (chosen by nothing), every model's output beside the reference: the baseline
    once per recipe, then each of its runs (labelled by its steps where a recipe has several)."""
    names = [name for name in names if made(name)]
    if not names:
        return ["", "(no run)"]
    lines = []
    first = predictions(runs(names[0])[0], base=False)
    for i in range(count):
        lines += ["", f"{i + 1}. `{_cell(first[i]['input'].split(': ', 1)[-1])}`", f"   - reference: `{_cell(first[i]['reference'])}`"]
        for name in names:
            lines += _example_lines(name, i)
    return lines


def _example_lines(name: str, i: int) -> list[str]:
    path = name.split("-")[1] if name.startswith("multi30k") else name
    untrained, trained = {"smollm2": ("zero-shot", "LoRA"), "bert2bert": ("untrained", "fine-tuned"),
                          "dialogsum-lora": ("zero-shot", "LoRA"), "dialogsum-bert2bert": ("untrained", "fine-tuned")}[path]
    recipe_runs = runs(name)
    baseline = next((run for run in map(baseline_run, recipe_runs) if run is not None), None)
    lines = [] if baseline is None else [
        f"   - {NAMES[path]}, {untrained}: `{_cell(predictions(baseline, True)[i]['prediction'])}`"]
    for run in recipe_runs:
        steps = f", {read(run / 'train' / 'manifest.json')['steps']} steps" if len(recipe_runs) > 1 else ""
        lines.append(f"   - {NAMES[path]}, {trained}{steps}: `{_cell(predictions(run, False)[i]['prediction'])}`")
    return lines


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split()).replace("`", "'")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def signatures() -> str:
    document = read(runs(next(name for name in TRANSLATION if made(name)))[0] / "evaluate" / "metrics.json")
    return f"BLEU `{document['signatures']['bleu']}`, chrF `{document['signatures']['chrf']}`"


def commands() -> list[str]:
    """The command that makes each run as it was made: its --set overrides read back from the run."""
    lines = []
    for run in (run for name in TRANSLATION + SUMMARIZATION for run in runs(name)):
        tag = f" --tag {run.name.split('.', 1)[1]}" if "." in run.name else ""
        sets = "".join(f" --set {key}={json.dumps(value) if not isinstance(value, str) else value}"
                       for key, value in overrides(run).items())
        lines.append(f"nice -n 10 python bench/translation.py --run --only {recipe_of(run)}{tag}{sets}")
    return lines


def not_made() -> str:
    missing = [name for name in TRANSLATION + SUMMARIZATION if not made(name)]
    return ("Not run this round (no run directory; each is `python bench/translation.py --run --only NAME`): "
            + ", ".join(f"`{name}`" for name in missing) + ".") if missing else "Every recipe was run."


def vocabulary_section() -> list[str]:
    rows = vocabulary_rows()
    if not rows:
        return ["No BERT2BERT translation run yet."]
    rates = unknown_rates()
    minilm = tokenizer(MINILM)
    spelled = ", ".join(f"`{word}` comes back as `{minilm.decode(minilm(word)['input_ids'], skip_special_tokens=True)}`"
                        for word in ("Männer", "Mädchen", "Fußball", "Garçon"))
    rate = (f"The unknown-token rate is {rates.pop()}" if len(rates) == 1 else "The unknown-token rates are "
            + ", ".join(str(rate) for rate in sorted(rates)))
    return [
        ("| target | test lines | unknown-token rate (stats.json `unknown_token_fraction_targets`) | MiniLM tokens "
         "per word | SmolLM2 tokens per word | best BLEU on this vocabulary | best chrF | first reference, encoded "
         "and decoded |"),
        "|---|---|---|---|---|---|---|---|", *rows, "",
        (f"{rate}: WordPiece falls back to word pieces and single letters, and the uncased tokenizer folds accents "
         "away before it looks anything up, so the rate does not show the cost. The cost is in what the decoder "
         f"can write: lower case only, no umlauts, no accents ({spelled}), so the references "
         "themselves, encoded and decoded, score the \"best\" columns against the real ones: no model on this "
         "vocabulary can score above them (BLEU is case-sensitive, and German capitalises every noun). The pieces "
         "per word are not the cost: they are in the table beside SmolLM2's.")]


def report() -> str:
    lines = [
        "# Machine translation and BERT2BERT (bench/translation.py)", "",
        ("Multi30k task 1 (`../shared/data/multi30k`): 5,000 training lines (`train5k.*`), scored on the "
        "`test_2016_flickr` set (1,000 lines; where a run's `test lines` is smaller it was scored on the first N "
        "lines, `evaluate.max_examples`, the same lines for both of its models), one reference per line, read as "
        f"line-aligned text (`data.source.columns`). sacrebleu 2, corpus level, signatures {signatures()}. Greedy "
        "decoding. Wall times are whole stages on 2 CPU cores shared with other helpers' jobs and test runs "
        "(several at once while these ran; each run niced, on 1 torch thread): they say what this machine took, not what the code "
        "costs; the metrics do not depend on the load. The training each run had is read from its train manifest; "
        "runs shortened from the bench recipe say so in their `--set` overrides under Commands."), "",
        not_made(), "",
        "## Translation", "",
        ("| direction | model | test lines | before | BLEU | chrF | after | BLEU | chrF | train min | "
         "evaluate min (both models unless marked) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|", *translation_rows(), "",
        ("Recipes: `bench/recipes/multi30k-smollm2-en-{de,fr}.yaml` (LoRA r 16 on every projection, batch 8, lr "
        "1e-3, prompt `Translate to German: {en}` through the chat template), `bench/recipes/multi30k-bert2bert-en-"
        "{de,fr}.yaml` (`model.base` and `model.decoder` all-MiniLM-L6-v2, method full, batch 32, lr 1e-4). The "
        "\"before\" of SmolLM2 is the same model prompted zero-shot; of BERT2BERT the composed model before training, "
        "whose cross-attention is random (a floor, not a baseline anyone would use)."), "",
        "## What MiniLM's uncased English vocabulary costs German and French", "", *vocabulary_section(), "",
        "## English-to-English: DialogSum summarization", "",
        ("Trained on `dialogsum.dev.jsonl` (450 train, 50 validation), scored on the first test dialogues against "
        "their three references (best of three, mean over dialogues); ROUGE lower-cases, so the uncased vocabulary "
        "costs nothing here. Recipes: `bench/recipes/dialogsum-lora.yaml` (SmolLM2, LoRA) and "
        "`bench/recipes/dialogsum-bert2bert.yaml` (BERT2BERT, full). \"before -> after\": untrained (zero-shot for "
        "SmolLM2) -> trained."), "",
        *summarization_table(), "",
        "## Examples (the first 3 test lines, every model run)", "", "### en->de", *examples(TRANSLATION[:2]), "",
        "### en->fr", *examples(TRANSLATION[2:]), "", "### DialogSum (summaries)", *examples(SUMMARIZATION), "",
        "## Commands", "", "```bash", *commands(),
        "python bench/translation.py   # this file, from the runs in bench/out/runs", "```", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    everything = TRANSLATION + SUMMARIZATION
    parser.add_argument("--run", action="store_true", help="run the recipes first (one after another)")
    parser.add_argument("--only", action="append", choices=everything, help="run only this recipe (repeatable)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="override a recipe value in every run (adaptctl run --set), e.g. train.max_steps=150")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--tag", help="keep this run beside the recipe's others, in runs/NAME.TAG")
    args = parser.parse_args()
    if args.run:
        for name in args.only or everything:
            subprocess.run(command(name, args.overrides, args.threads, args.tag), check=True, cwd=BENCH.parent)
    (BENCH / "RESULTS-translation.md").write_text(report())


if __name__ == "__main__":
    main()
