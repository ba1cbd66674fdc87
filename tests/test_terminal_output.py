"""What a user sees: one progress bar that fits an 80-column terminal, library output (log records,
warnings, load reports) as adaptctl console lines, and CI logs without repeated progress lines.

Tiny random models (see test_train_methods.py); rich Consoles forced to a width stand in for a terminal.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import pytest
import yaml
from rich.console import Console

from adaptctl.core import console

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_STATUS = "loss=2.302585 lr=0.0009876 grad=13.37 eval_loss=2.291234 and more metrics than any line can hold"


def terminal(width: int) -> Console:
    """A console that believes it is a terminal of this width, like console.stderr on one."""
    return Console(file=io.StringIO(), width=width, force_terminal=True, highlight=False, soft_wrap=True,
                   markup=False, color_system=None)


def rendered_lines(progress: console.Progress, width: int) -> list[str]:
    out = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    out.print(progress._bar.get_renderable())
    return [line for line in out.export_text().splitlines() if line.strip()]


@pytest.mark.parametrize("width, description", [(80, "train"), (80, "distill: teacher logits"), (50, "train"),
                                                (200, "distill: teacher logits")])
def test_the_bar_is_one_line_that_fits_the_terminal(width, description, monkeypatch):
    monkeypatch.setattr(console, "stderr", terminal(width))
    with console.Progress(description, 300) as progress:
        progress.advance(7, LONG_STATUS)
        lines = rendered_lines(progress, width)
    assert len(lines) == 1, lines
    assert len(lines[0]) < width, lines[0]
    assert description in lines[0] and "7/300" in lines[0] and "loss=" in lines[0]
    if width >= 80 and description == "train":
        assert "loss=2.302585 lr=0.0009876" in lines[0]  # the latest loss and lr at least
    if width < 200:
        assert "…" in lines[0]  # the status is cut, not wrapped onto a second row


def test_ci_lines_only_when_the_count_or_the_metrics_changed(monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: clock[0])
    monkeypatch.delenv(console.EVERY_ENV, raising=False)
    with console.Progress("train", 100, every=15) as progress:
        for step in range(1, 61):
            clock[0] += 1.0  # one step a second; new metrics every 30 steps
            progress.advance(1, f"loss={1 / (1 + step // 30):.4g}")
        for _ in range(3):  # stalled: time passes, nothing moves
            clock[0] += 30
            progress.advance(0, "loss=0.3333")
    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["train: 15/100 loss=1", "train: 30/100 loss=0.5", "train: 45/100", "train: 60/100 loss=0.3333"]


def test_ci_log_of_a_tiny_training_has_no_repeated_progress_line(run_cli, tmp_path, monkeypatch):
    from test_train_methods import classification_setup

    monkeypatch.setenv(console.EVERY_ENV, "0")  # every step may write a line: only changes do
    recipe = {**classification_setup(tmp_path), "method": {"name": "full"},
              "train": {"max_steps": 12, "batch_size": 4, "precision": "fp32", "logging_steps": 4}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(["train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run"])
    assert code == 0, err
    progress = [line.split("] ", 1)[1] for line in err.splitlines() if re.search(r"\] train: \d+/12", line)]
    assert progress[-1].startswith("train: 12/12")
    assert len(progress) >= 3
    assert all(a != b for a, b in zip(progress, progress[1:])), progress
    statuses = [line.split(" ", 2)[2] for line in progress if line.count(" ") >= 2]
    assert len(statuses) == len(set(statuses)), progress  # a metric is written once, when it is new
    assert "Loading weights" not in err and "LOAD REPORT" not in err


def test_library_log_records_and_warnings_come_out_as_console_lines(monkeypatch, capsys):
    from adaptctl.core import library_output

    monkeypatch.setenv("HF_TOKEN", "hf_notarealtoken1234")
    library_output.route()
    capsys.readouterr()
    logging.getLogger("transformers.modeling_utils").warning("token hf_notarealtoken1234 in a\nlong message")
    logging.getLogger("datasets.builder").warning("datasets says something once")
    logging.getLogger("datasets.builder").warning("datasets says something once")
    logging.getLogger("transformers.trainer").info("an info record below the libraries' level")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = library_output._show_warning
        warnings.warn_explicit("peft saw something", UserWarning, "/x/site-packages/peft/tuners/lora.py", 3)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: transformers: token [HF_TOKEN redacted] in a long message",
                   "warning: datasets: datasets says something once",
                   "warning: peft: UserWarning: peft saw something"]


def test_a_load_report_is_one_line_and_the_weights_bar_is_off(tmp_path, monkeypatch, capsys):
    from test_train_methods import minilm_tokenizer  # noqa: F401  (the packaged tokenizer: offline)
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from adaptctl.core import library_output

    library_output.route()
    BertModel(BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=20)).save_pretrained(tmp_path / "base")
    capsys.readouterr()
    BertForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    # a fresh task head is what adaptctl asks for: an info line, not a warning on every run
    assert "transformers: BertForSequenceClassification from: " in err[0] and not err[0].startswith("warning:")
    assert "newly initialized: classifier" in err[0] and "Loading weights" not in err[0]


def test_on_a_terminal_of_80_columns_training_shows_one_bar_that_fits(run_cli, tmp_path, monkeypatch, capsys):
    from test_train_methods import classification_setup

    screen = terminal(80)
    monkeypatch.setattr(console, "stderr", screen)
    recipe = {**classification_setup(tmp_path), "method": {"name": "lora"},
              "train": {"max_steps": 6, "batch_size": 4, "precision": "fp32", "logging_steps": 2}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(["train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run"])
    assert code == 0, err
    assert err == ""  # nothing printed around the console (a library's own handler or tqdm bar)
    shown = ANSI.sub("", screen.file.getvalue())
    rows = [row for line in shown.split("\n") for row in line.split("\r") if row.strip()]
    bars = [row for row in rows if re.match(r"train .*\d+/6", row)]  # log lines may wrap; the live bar may not
    assert all(len(row) < 80 for row in bars), [row for row in bars if len(row) >= 80]
    assert bars and bars[-1].split()[0] == "train" and "6/6" in bars[-1]
    assert not any("Loading weights" in row or "LOAD REPORT" in row for row in rows)
