"""Issue 32's rules, each tried on more than the instance the probe found:

1. what adaptctl did not make is never replaced (outputs.py: pipes and devices written through, a regular
   file only with --overwrite, anything else refused);
2. (secrets: tests/test_security.py, the run directory's path; tests/test_sweep.py, a swept value);
3. every reader of another run's output keys on what it reads: predict on a chained run whose parent was
   trained again, the merged-adapter cache over a base changed in place, a run chained on itself;
4. a stop reaches every process adaptctl started (children.py; the sweep's workers: tests/test_sweep.py);
5. what parses user input ends in a message, not a traceback or a hang: chat and data templates (errors,
   loops, sizes), a damaged model.onnx, a tracker that is not installed, pickle weights under a chained
   adapter, endless or non-regular files, a full disk under prepare's copy.

One tiny LoRA classifier run (tests/tiny_classifier.py) and a run chained on it are made once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from tiny_classifier import tiny_classifier_recipe


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(parent recipe, parent run, child recipe, child run): a LoRA run, and a LoRA run with model.base naming it."""
    from adaptctl.cli import main

    root = tmp_path_factory.mktemp("chain")
    recipe, parent = tiny_classifier_recipe(root), root / "run"
    assert main(["run", str(recipe), "--run-dir", str(parent), "--stages", "prepare,train", "-q"]) == 0
    child_recipe = root / "child.yaml"
    document = yaml.safe_load(recipe.read_text())
    document.update(name="child", model={"base": str(parent)})
    document["data"]["source"] = str(root / "data.csv")
    child_recipe.write_text(yaml.safe_dump(document))
    assert main(["run", str(child_recipe), "--run-dir", str(root / "child"), "--stages", "prepare,train", "-q"]) == 0
    return recipe, parent, child_recipe, root / "child"


# ------------------------------------------------------------------ 1. outputs adaptctl did not make
def test_output_paths_are_written_through_or_refused_never_replaced(tmp_path):
    from adaptctl.core import outputs
    from adaptctl.core.errors import UserError

    new = tmp_path / "new.jsonl"
    outputs.write(new, "a\n")
    assert new.read_text() == "a\n"
    # a regular file: only with --overwrite; through a link, the file it points at, and the link stays
    with pytest.raises(UserError, match="is an existing file") as refused:
        outputs.write(new, "b\n")
    assert "--overwrite" in refused.value.hint and new.read_text() == "a\n"
    link = tmp_path / "link.jsonl"
    link.symlink_to(new)
    outputs.write(link, "c\n", overwrite=True)
    assert link.is_symlink() and new.read_text() == "c\n"
    # a pipe: written through (a reader on the other end), still a pipe
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    outputs.write(fifo, "d\n", overwrite=False)
    reader.join(10)
    assert got == ["d\n"] and stat.S_ISFIFO(fifo.stat().st_mode)
    # a device: written through, never renamed over (as root, a rename would replace the system's /dev/null)
    outputs.write(Path("/dev/null"), "e\n", overwrite=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # a link to nothing, a folder, a socket: refused by name
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        for path, words in ((tmp_path / "dangling", "does not exist"), (tmp_path, "is a folder"),
                            (tmp_path / "sock", "is a socket")):
            with pytest.raises(UserError, match=words):
                outputs.write(path, "f\n", overwrite=True)
    finally:
        server.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "fifo", "link.jsonl", "new.jsonl", "sock"]


def test_predict_refuses_an_existing_output_before_loading_and_overwrites_when_told(chain, run_cli, tmp_path):
    _, parent, _, _ = chain
    (tmp_path / "in.txt").write_text("great lovely\n")
    mine = tmp_path / "mine.jsonl"
    mine.write_text("the user's own file\n")
    code, out, err = run_cli(["predict", parent, "--input", tmp_path / "in.txt", "--output", mine])
    assert code == 1 and out == "" and f"--output {mine} is an existing file" in err and "--overwrite" in err, err
    assert "predict:" not in err and mine.read_text() == "the user's own file\n"  # refused before the model loaded
    code, _, err = run_cli(["predict", parent, "--input", tmp_path / "in.txt", "--output", mine, "--overwrite"])
    assert code == 0, err
    assert json.loads(mine.read_text())["input"] == "great lovely"


# ------------------------------------------------------------------ 3. readers of another run's output
def test_predict_refuses_a_chained_run_whose_parent_was_trained_again(chain, run_cli, tmp_path):
    parent_recipe, parent, child_recipe, child = chain
    (tmp_path / "in.txt").write_text("great lovely\n")
    code, _, err = run_cli(["predict", child, "--input", tmp_path / "in.txt"])
    assert code == 0, err
    code, _, err = run_cli(["train", parent_recipe, "--run-dir", parent, "--set", "train.learning_rate=0.01"])
    assert code == 0, err
    for target in (child, child / "train" / "model"):  # the run, or its model folder
        code, out, err = run_cli(["predict", target, "--input", tmp_path / "in.txt"])
        assert code == 1 and "Traceback" not in err and out == "", err
        assert f"was trained on the model of {parent}, which was re-run since" in err and "adaptctl run" in err
    code, _, err = run_cli(["evaluate", child_recipe, "--run-dir", child])
    assert code == 1 and "stale" in err  # as evaluate already refused it


def test_the_merged_adapter_cache_follows_the_base_weights(chain, tmp_path, monkeypatch):
    """A run named as model.base is merged once into the cache, keyed by the adapter and by its base's
    weights: a base changed in place is merged again; pickle-only base weights are refused by allow_pickle."""
    import torch
    from safetensors.torch import load_file, save_file

    from adaptctl.core.errors import UserError
    from adaptctl.models.resolve import merged_adapter

    _, parent, _, _ = chain
    run = tmp_path / "run"
    shutil.copytree(parent, run)
    base = Path(shutil.copytree(json.loads((parent / "train/model/adaptctl.json").read_text())["base_model_path"],
                                tmp_path / "base"))
    info = json.loads((run / "train/model/adaptctl.json").read_text())
    (run / "train/model/adaptctl.json").write_text(json.dumps({**info, "base_model_path": str(base)}))
    first = merged_adapter(run / "train/model", "train")
    assert merged_adapter(run / "train/model", "train") == first  # found again, not merged again
    weights = load_file(base / "model.safetensors")
    save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in weights.items()}, base / "model.safetensors",
              metadata={"format": "pt"})
    second = merged_adapter(run / "train/model", "train")
    assert second != first
    assert not torch.equal(load_file(second / "model.safetensors")["bert.embeddings.word_embeddings.weight"],
                           load_file(first / "model.safetensors")["bert.embeddings.word_embeddings.weight"])
    # a base with pickle weights only: refused naming the setting, merged when allowed
    state = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    torch.save(state, base / "pytorch_model.bin")
    with pytest.raises(UserError, match="only pickle weights") as refused:
        merged_adapter(run / "train/model", "train")
    assert "model.allow_pickle: true" in refused.value.hint
    assert (merged_adapter(run / "train/model", "train", allow_pickle=True) / "config.json").is_file()


def fake_run(folder: Path, base: str) -> Path:
    """A run directory as adaptctl marks one, whose resolved recipe names `base`."""
    from adaptctl.core.rundir import RunDir

    RunDir(folder).claim()
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": folder.name, "model": {"base": base}}))
    return folder


def test_a_run_chained_on_itself_or_on_its_descendant_is_refused(chain, run_cli, tmp_path, monkeypatch):
    parent_recipe, _, _, _ = chain
    document = yaml.safe_load(parent_recipe.read_text())
    document["data"]["source"] = str(parent_recipe.parent / "data.csv")
    monkeypatch.chdir(tmp_path)
    own = fake_run(tmp_path / "runs" / "selfish", base=str(parent_recipe.parent / "base"))
    recipe = tmp_path / "selfish.yaml"
    recipe.write_text(yaml.safe_dump({**document, "name": "selfish", "model": {"base": "runs/selfish"}}))
    for args in (["validate", recipe], ["run", recipe], ["prepare", recipe, "--run-dir", own]):
        code, _, err = run_cli(args)
        assert code == 1 and "model.base names this run's own directory" in err and "selfish.yaml:" in err, err
    # A's base is B, and B was trained from A: A would start from its own descendant
    a = tmp_path / "a"
    fake_run(tmp_path / "b", base=str(a))
    recipe.write_text(yaml.safe_dump({**document, "name": "a", "model": {"base": str(tmp_path / "b")}}))
    code, _, err = run_cli(["train", recipe, "--run-dir", a])
    assert code == 1 and "a run that starts from this run" in err and str(tmp_path / "b") in err, err
    assert not (a / "prepare").exists()


# ------------------------------------------------------------------ 5. user input ends in a message
def test_chat_templates_that_fail_or_run_away_are_exit_1_naming_data_chat_template(monkeypatch):
    from transformers import AutoTokenizer

    from adaptctl.data import limits
    from adaptctl.core.errors import UserError
    from adaptctl.models.resolve import resolve_model
    from adaptctl.tasks.conversation import render

    monkeypatch.setattr(limits, "RENDER_SECONDS", 0.5)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    messages = [{"role": "user", "content": "hi"}]
    for template, words in {
        "{{ no_such_function() }}": "UndefinedError",
        "{{ raise_exception('roles must alternate user/assistant') }}": "roles must alternate",
        "{{ messages.__class__.__mro__ }}": "SecurityError",
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}": "CPU time",
        "{% for m in messages %}": "TemplateSyntaxError",
    }.items():
        tokenizer.chat_template = template
        with pytest.raises(UserError, match=words) as refused:
            render(tokenizer, messages)
        assert refused.value.message.startswith("data.chat_template:")
    tokenizer.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}{% endfor %}"
    assert render(tokenizer, messages) == "user: hi"


def test_data_templates_are_bounded_in_time_and_size(monkeypatch):
    from adaptctl.data import limits
    from adaptctl.data.columns import TemplateRowError, render, template_problem

    monkeypatch.setattr(limits, "RENDER_SECONDS", 0.5)
    row = {"text": "hi"}
    for template, words in {
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}{{ text }}": "CPU time",
        "{% for a in range(100000) %}{{ text * 5000 }}{% endfor %}": "longer than",
        "{{ text * 1000000000 }}": "repetition",
        "{{ text.ljust(10000000000) }}": "a size over",
        "{{ text | center(10000000000) }}": "a size over",
        "{{ 9 ** 9999999 }}": "power",
        "{text:>10000000000}": "width or precision",
    }.items():
        with pytest.raises(TemplateRowError, match=words):
            render(template, row)
    assert template_problem("{text:>10000000000}") and template_problem("{text:>4}") is None
    assert render("{{ text * 3 }}", row) == "hihihi" and render("{text:>4}", row) == "  hi"


def test_endless_or_non_regular_inputs_are_refused_not_read_for_ever(chain, run_cli, tmp_path, monkeypatch):
    """/dev/zero, a FIFO with no writer, a file that is one endless line: as a recipe, as data.source, to
    validate and to prepare; each exit 1 naming the file, none blocking or reading for ever."""
    from adaptctl.data import limits

    parent_recipe, parent_run, _, _ = chain
    monkeypatch.setattr(limits, "MAX_LINE_BYTES", 4096)
    signal.alarm(120)  # a hang fails the test instead of stalling the suite
    try:
        code, _, err = run_cli(["validate", "/dev/zero"])
        assert code == 1 and "/dev/zero: more than 1 MiB, which is no recipe" in err, err
        os.mkfifo(tmp_path / "fifo.csv")
        (tmp_path / "long.jsonl").write_text('{"text": "a", "label": "pos"}\n'
                                             '{"text": "' + "x" * 5000 + '", "label": "neg"}\n')
        # nested deep: Python's json raised RecursionError, and pyarrow's reader crashes the process from some
        # 80,000 levels (a segmentation fault, measured)
        (tmp_path / "deep.jsonl").write_text('{"text": ' + "[" * 1500 + "]" * 1500 + ', "label": "pos"}\n')
        document = yaml.safe_load(parent_recipe.read_text())
        for source, words in (({"path": "/dev/zero", "format": "text"}, "/dev/zero is a device, not a regular file"),
                              (str(tmp_path / "fifo.csv"), "fifo.csv is a pipe (FIFO), not a regular file"),
                              (str(tmp_path / "long.jsonl"), "long.jsonl:2: a line of more than"),
                              (str(tmp_path / "deep.jsonl"), "deep.jsonl:1: JSON nested more than 500 levels deep")):
            document["data"]["source"] = source
            (tmp_path / "r.yaml").write_text(yaml.safe_dump(document))
            for command in ("validate", "prepare"):
                extra = ["--run-dir", tmp_path / "run"] if command == "prepare" else []
                code, _, err = run_cli([command, tmp_path / "r.yaml", *extra])
                assert code == 1 and words in err and "Traceback" not in err, (command, err)
        code, _, err = run_cli(["predict", parent_run, "--input", tmp_path / "deep.jsonl"])
        assert code == 1 and "deep.jsonl:1: not valid JSON (nested deeper than Python can read)" in err, err
    finally:
        signal.alarm(0)


def test_a_full_disk_while_prepare_copies_into_the_run_is_exit_3_naming_it(chain, run_cli, tmp_path, monkeypatch):
    import errno

    from adaptctl.stages import prepare

    parent_recipe, _, _, _ = chain
    real = shutil.copytree

    def full(src, dst, *args, **kwargs):  # what copytree raises when a file fails: shutil.Error of the failures
        raise shutil.Error([(str(src), str(dst), str(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))])

    monkeypatch.setattr(prepare.shutil, "copytree", full)
    code, _, err = run_cli(["prepare", parent_recipe, "--run-dir", tmp_path / "run"])
    assert code == 3 and f"no space left on the device while writing {tmp_path / 'run' / 'prepare'}" in err, err
    assert "Traceback" not in err and not list((tmp_path / "run").glob(".prepare*"))
    monkeypatch.setattr(prepare.shutil, "copytree", real)
    code, _, err = run_cli(["prepare", parent_recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err


def test_a_damaged_model_onnx_and_a_missing_tracker_are_exit_1(chain, run_cli, tmp_path):
    import importlib.util

    parent_recipe, parent, _, _ = chain
    folder = Path(shutil.copytree(json.loads((parent / "train/model/adaptctl.json").read_text())["base_model_path"],
                                  tmp_path / "model"))
    (tmp_path / "in.txt").write_text("great\n")
    for content in (b"", b"not an onnx graph at all", b"\x08\x07\x12\x04junk" * 50):
        (folder / "model.onnx").write_bytes(content)
        code, out, err = run_cli(["predict", folder / "model.onnx", "--input", tmp_path / "in.txt"])
        assert code == 1 and out == "" and "is not an ONNX model onnxruntime can load" in err and "Traceback" not in err, err
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    code, _, err = run_cli(["validate", parent_recipe, "--set", "train.report_to=[tensorboard]"])
    assert code == 1 and "train.report_to.0: tracker tensorboard is not installed" in err and "pip install" in err, err


def test_children_get_one_sigterm_and_their_process_groups_end_with_adaptctl(tmp_path):
    """A child (and what it started) ends when adaptctl stops: SIGTERM first, then SIGKILL to the group."""
    from adaptctl.core import children

    script = ("import os, signal, subprocess, sys, time\n"
              f"open({str(tmp_path / 'pids')!r}, 'w').write(str(subprocess.Popen([sys.executable, '-c', "
              "'import time; time.sleep(600)']).pid))\n"
              "def term(*_):  # the first SIGTERM is noted, the next ones ignored: only SIGKILL ends it\n"
              "    open(sys.argv[1], 'a').write('term')\n"
              "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "signal.signal(signal.SIGTERM, term)\n"
              "time.sleep(600)\n")
    child = children.start([sys.executable, "-c", script, str(tmp_path / "signals")])
    grandchild = int(wait_for(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text()))
    with pytest.raises(KeyboardInterrupt), children.stopped_on_exit([child]):
        os.killpg(child.pid, 0)  # its own process group: a terminal's Ctrl-C would not reach it
        raise KeyboardInterrupt
    assert child.returncode is not None and (tmp_path / "signals").read_text() == "term"
    assert wait_for(lambda: not alive(grandchild))


def wait_for(condition, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"  # a zombie is dead, not yet reaped


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch):
    from adaptctl.core import children

    monkeypatch.setattr(children, "GRACE_S", 1)


def test_a_stop_that_a_library_swallows_still_stops_the_run_before_the_next_stage(tmp_path, run_cli, monkeypatch):
    """datasets hashes a map's function inside a bare `except:` (fingerprint.update_fingerprint): a SIGTERM landing
    there raised a KeyboardInterrupt that it swallowed, and the run (a sweep: all its trials) went on.  The stop
    is remembered and honoured before the next stage."""
    from datasets import fingerprint

    recipe = tiny_classifier_recipe(tmp_path)
    with (tmp_path / "data.csv").open("a") as data:  # rows of its own: prepare tokenizes, no cache hit
        data.write(f"unseen row {tmp_path.name},pos\n")
    hashing, sent = fingerprint.update_fingerprint, []

    def signalled_while_hashing(*args):
        if not sent:
            sent.append(True)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs here and raises KeyboardInterrupt
            except:  # noqa: E722  swallowed, as around datasets' own hashing
                pass
        return hashing(*args)

    monkeypatch.setattr(fingerprint, "update_fingerprint", signalled_while_hashing)
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "-q"])
    assert sent and code == 130, err
    assert "stopped by SIGTERM before stage train" in err
    statuses = {stage: json.loads((tmp_path / "run" / stage / "manifest.json").read_text())["status"]
                for stage in ("prepare", "train") if (tmp_path / "run" / stage / "manifest.json").exists()}
    assert statuses == {"prepare": "complete"}  # prepare's work was whole; nothing after it started
