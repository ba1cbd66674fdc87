"""Security defaults: recipes are read with yaml.safe_load only, model folders that would run code
(custom classes, pickle weights) are refused unless the recipe says it trusts them, secrets from
the environment never reach the run directory or the output, and paths in a recipe resolve
against the recipe file, not the current directory.

The loader's refusal of hostile YAML (tags, anchors that explode) is in test_recipe.py
(test_hostile_yaml_is_refused_not_crashed_on); here the whole command line runs, and nothing may
execute.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = {"pos": "great lovely happy wonderful superb", "neg": "awful broken sad terrible horrible"}
SECRETS = {"HF_TOKEN": "hf_SECRET123", "ACME_API_KEY": "acme-7f3c9e-do-not-leak"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder with a tiny random BERT classifier (`base/`, safetensors) and a two-class csv."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models.resolve import resolve_model

    root = tmp_path_factory.mktemp("security")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    rows = ["text,label"] + [f"{WORDS[lab]} item {i},{lab}" for i in range(30) for lab in WORDS]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root


def recipe_text(base: str = "base", data: str = "data.csv", **model) -> str:
    document = {
        "name": "security", "task": "classification", "seed": 1,
        "model": {"base": base, **model},
        "data": {"source": data, "text": "text", "label": "label", "max_length": 24,
                 "splits": {"validation": 0.1, "test": 0.2}},
        "method": {"name": "full"},
        "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "save_every": 1},
    }
    return yaml.safe_dump(document, sort_keys=False)


def model_copy(tiny: Path, folder: Path) -> Path:
    shutil.copytree(tiny / "base", folder)
    return folder


# ------------------------------------------------------------------ YAML
@pytest.mark.parametrize("where", ["recipe", "extends parent"])
def test_a_python_tag_is_refused_and_nothing_runs(where, run_cli, tmp_path):
    marker = tmp_path / "pwned"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    recipe = tmp_path / "recipe.yaml"
    if where == "recipe":
        recipe.write_text(recipe_text() + f"description: {payload}\n")
    else:
        (tmp_path / "parent.yaml").write_text(recipe_text() + f"description: {payload}\n")
        recipe.write_text("extends: parent.yaml\nseed: 2\n")
    for command in (["validate", recipe], ["run", recipe, "--run-dir", tmp_path / "run"]):
        code, _, err = run_cli(command)
        assert code == 1, err
        assert "python/object" in err and "Traceback" not in err
        assert not marker.exists(), "the YAML tag ran a command"
    assert not (tmp_path / "run").exists()


def test_a_python_tag_in_a_set_value_is_only_text(run_cli, tmp_path):
    """--set values are YAML, read with the safe loader; one it refuses is taken as the literal string."""
    marker = tmp_path / "pwned"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text())
    (tmp_path / "data.csv").write_text("text,label\nhello,a\n")  # validate reads its columns
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    code, out, err = run_cli(["validate", recipe, "--json", "--set", f"description={payload}"])
    assert code == 0, err
    assert json.loads(out)["recipe"]["description"] == payload
    assert not marker.exists()


def test_adaptctl_reads_yaml_only_with_the_safe_loader():
    """Every yaml.load / unsafe_load / full_load / Loader= in the package, by reading the source."""
    unsafe = []
    for path in (PROJECT / "adaptctl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml":
                if node.attr in ("load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all",
                                 "Loader", "UnsafeLoader", "FullLoader", "CLoader"):
                    unsafe.append(f"{path.relative_to(PROJECT)}:{node.lineno}: yaml.{node.attr}")
    assert unsafe == []


# ------------------------------------------------------------------ run directories
def test_a_users_folder_as_run_dir_is_refused_and_nothing_in_it_is_removed(tiny, run_cli, tmp_path):
    """issue 22.1: `--run-dir p` over a folder that holds prepare/ and train/checkpoints/ deleted both."""
    user = tmp_path / "p"
    (user / "train" / "checkpoints").mkdir(parents=True)
    (user / "train" / "checkpoints" / "mine.txt").write_text("x")
    (user / "prepare").mkdir()
    (user / "prepare" / "IMPORTANT.txt").write_text("x")
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    model_copy(tiny, tmp_path / "base")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text())
    for command in ("prepare", "train", "run"):
        code, _, err = run_cli([command, recipe, "--run-dir", user])
        assert code == 1, err
        assert "Traceback" not in err and str(user) in err and "empty or new --run-dir" in err
    assert (user / "prepare" / "IMPORTANT.txt").read_text() == "x"
    assert (user / "train" / "checkpoints" / "mine.txt").read_text() == "x"
    assert sorted(p.name for p in user.iterdir()) == ["prepare", "train"]
    for given in ("", "/"):
        code, _, err = run_cli(["prepare", recipe, "--run-dir", given])
        assert code == 1 and "--run-dir" in err and "Traceback" not in err, err


# ------------------------------------------------------------------ code in model folders
def test_trust_remote_code_is_off_by_default():
    from adaptctl.recipe.schema import Model

    assert Model(base="x").trust_remote_code is False and Model(base="x").allow_pickle is False


@pytest.mark.parametrize("config_file", ["config.json", "tokenizer_config.json"])
def test_a_model_with_custom_code_is_refused_naming_the_flag(config_file, tiny, run_cli, tmp_path):
    model = model_copy(tiny, tmp_path / "custom")
    marker = tmp_path / "custom-code-ran"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((model / config_file).read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel",
                          "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (model / config_file).write_text(json.dumps(config))
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text(base="custom"))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1, err
    assert "Traceback" not in err
    assert "needs its own code" in err and str(model / config_file) in err
    assert "model.trust_remote_code: true" in err
    assert not marker.exists()
    assert not (tmp_path / "run" / "prepare" / "data").exists()


def custom_code_model(tiny: Path, folder: Path, marker: Path) -> Path:
    """The tiny model whose config.json names classes in its own evil.py, which writes `marker` when imported.
    Its model_type is not one transformers knows, so nothing but the folder's code could load it: what makes
    transformers ask on stdin rather than fall back to its own BERT classes."""
    model = model_copy(tiny, folder)
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "evil-bert"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel",
                          "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_custom_code_is_refused_by_predict_and_a_distill_teacher_even_when_stdin_says_yes(tiny, run_cli, tmp_path,
                                                                                          monkeypatch):
    """issue 22.2: without trust_remote_code=False transformers asks on stdin, and `yes y |` ran the folder's code."""
    import io

    marker = tmp_path / "custom-code-ran"
    model = custom_code_model(tiny, tmp_path / "custom", marker)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 100))
    (tmp_path / "inputs.txt").write_text("great lovely item\n")
    code, out, err = run_cli(["predict", model, "--input", tmp_path / "inputs.txt"])
    assert code == 1, err
    assert "needs its own code" in err and str(model / "config.json") in err and "Traceback" not in err
    assert out == "" and not marker.exists()

    model_copy(tiny, tmp_path / "base")
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    recipe = tmp_path / "distill.yaml"
    recipe.write_text(recipe_text() + "distill: {teacher: custom}\n")
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,distill"])
    assert code == 1, err
    assert "distill.teacher" in err and "needs its own code" in err and "model.trust_remote_code: true" in err
    assert "Traceback" not in err and not marker.exists()
    assert not (tmp_path / "run" / "distill" / "model").exists()


def test_every_from_pretrained_in_adaptctl_says_whether_to_trust_remote_code():
    """By reading the source: a from_pretrained without trust_remote_code lets transformers ask on stdin."""
    loose = []
    for path in (PROJECT / "adaptctl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"):
                continue
            if ast.unparse(node.func) == "peft.PeftModel.from_pretrained":  # adapter weights into a loaded model: no code
                continue
            named = any(k.arg == "trust_remote_code" for k in node.keywords)
            spread = any(k.arg is None and ("_options(" in ast.unparse(k.value) or ast.unparse(k.value) == "options")
                         for k in node.keywords)
            if not (named or spread):
                loose.append(f"{path.relative_to(PROJECT)}:{node.lineno}: {ast.unparse(node.func)}")
    assert loose == []


def pickled_model(tiny: Path, folder: Path) -> Path:
    """The same weights as pytorch_model.bin only (the old pickle format, which can run code when loaded)."""
    import torch
    from safetensors.torch import load_file

    model = model_copy(tiny, folder)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    return model


def test_pickle_weights_are_refused_naming_allow_pickle_and_load_when_allowed(tiny, run_cli, tmp_path):
    from safetensors.torch import load_file

    pickled_model(tiny, tmp_path / "pickled")
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text(base="pickled"))
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "refused", "--stages", "prepare,train"])
    assert code == 1, err
    assert "Traceback" not in err
    assert "only pickle weights (.bin)" in err and "model.allow_pickle: true" in err

    recipe.write_text(recipe_text(base="pickled", allow_pickle=True))
    run = tmp_path / "allowed"
    code, _, err = run_cli(["run", recipe, "--run-dir", run, "--stages", "prepare,train"])
    assert code == 0, err
    trained = run / "train" / "model"
    assert (trained / "model.safetensors").exists()  # what adaptctl writes is safetensors, whatever it read
    assert not [p for p in trained.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    start = (tiny / "base" / "model.safetensors")
    assert load_file(trained / "model.safetensors").keys() == load_file(start).keys()


class _Payload:
    """Unpickling this writes a file: what a hostile pytorch_model.bin does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_an_unrelated_safetensors_file_does_not_let_pickle_weights_through(tiny, run_cli, tmp_path):
    """issue 22.3: any *.safetensors beside pytorch_model.bin passed the guard, then the .bin was unpickled."""
    import pickle

    from adaptctl.core.errors import UserError
    from adaptctl.models.loading import check_loadable

    marker = tmp_path / "unpickled"
    model = model_copy(tiny, tmp_path / "pickled")
    (model / "model.safetensors").rename(model / "extra_head.safetensors")  # not what from_pretrained loads
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text(base="pickled"))
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,train"])
    assert code == 1, err
    assert "only pickle weights (.bin)" in err and "pytorch_model.bin" in err and "model.allow_pickle: true" in err
    assert "Traceback" not in err and not marker.exists()

    # a sharded index counts only with its shards; an adapter only with adapter_model.safetensors
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(UserError, match="only pickle weights"):
        check_loadable(model)
    shutil.copy(model / "extra_head.safetensors", model / "model-00001-of-00001.safetensors")
    check_loadable(model)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    (adapter / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="only pickle weights"):
        check_loadable(adapter)
    assert not marker.exists()


# ------------------------------------------------------------------ tokenizers
def test_a_model_without_tokenizer_files_is_refused_and_unknown_tokens_are_warned_of(tiny, run_cli, tmp_path):
    """issue 22.5: without its vocabulary transformers builds a 5-token tokenizer and trains on [UNK]s."""
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    model = model_copy(tiny, tmp_path / "base")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text())
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "refused"])
    assert code == 1, err
    assert f"model folder {model} has no tokenizer files" in err and "tokenizer.json" in err and "vocab.txt" in err
    assert "Traceback" not in err and not (tmp_path / "refused" / "prepare" / "data").exists()

    # a vocabulary that misses most words of the data: prepared, with a warning and the share in stats.json
    shutil.copy(tiny / "base" / "tokenizer_config.json", model)
    (model / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "great", "item"]) + "\n")
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "unknown"])
    assert code == 0, err
    stats = json.loads((tmp_path / "unknown" / "prepare" / "stats.json").read_text())
    assert stats["unknown_token_fraction"] > 0.3
    assert "of the tokens are the unknown token [UNK]" in err
    # the fitting tokenizer: no warning
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "fits", "--set", f"model.base={tiny / 'base'}"])
    assert code == 0 and "unknown token" not in err, err
    assert json.loads((tmp_path / "fits" / "prepare" / "stats.json").read_text())["unknown_token_fraction"] < 0.05


@pytest.mark.parametrize("damaged, words", [("config.json", "is not readable JSON"),
                                             ("model.safetensors", "is not a readable safetensors file")])
def test_a_damaged_model_file_is_exit_1_naming_it(tiny, run_cli, tmp_path, damaged, words):
    """issue 22.8: a corrupt config.json or model.safetensors, a located exit 1 instead of a traceback."""
    shutil.copy(tiny / "data.csv", tmp_path / "data.csv")
    model = model_copy(tiny, tmp_path / "base")
    data = (model / damaged).read_bytes()
    (model / damaged).write_bytes(data[: len(data) // 3])  # cut short, as an interrupted copy leaves it
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text())
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1, err
    assert f"{model / damaged} {words}" in err and "hint:" in err and "Traceback" not in err


# ------------------------------------------------------------------ a full run from another folder, with secrets
@pytest.fixture(scope="module")
def full_run(tiny, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`adaptctl run --json` as a separate process, with secrets in its environment and a cwd that holds a
    decoy data.csv and base/: relative paths must resolve against the recipe file, not the cwd."""
    recipe_dir = tmp_path_factory.mktemp("recipes")
    cwd = tmp_path_factory.mktemp("elsewhere")
    # every third row pastes a secret into its text, as a careless export of support tickets would
    rows = (tiny / "data.csv").read_text().splitlines()
    values = list(SECRETS.values())
    leaky = [row if i % 3 else row.replace(" item ", f" item {values[i % 2]} ", 1) for i, row in enumerate(rows[1:])]
    (recipe_dir / "data.csv").write_text("\n".join([rows[0], *leaky]) + "\n")
    model_copy(tiny, recipe_dir / "base")
    (cwd / "data.csv").write_text("text,label\n" + "".join(f"decoy {i},{lab}\n" for i in range(20) for lab in ("x", "y", "z")))
    (cwd / "base").mkdir()  # a decoy model folder without config.json
    recipe = recipe_dir / "recipe.yaml"
    recipe.write_text(recipe_text() + f"secrets: [ACME_API_KEY]\ndescription: 'secrets stay out: {SECRETS['ACME_API_KEY']} "
                      f"and {SECRETS['HF_TOKEN']}'\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **SECRETS, "HF_DATASETS_CACHE": str(cwd / "hf-datasets")}
    # The run directory's own path holds a secret too (issue 32.2): the Trainer pickles its output_dir into each
    # checkpoint's training_args.bin, which no redaction reaches; it must be given a path without the value.
    run = f"runs-{SECRETS['ACME_API_KEY']}/run"
    done = subprocess.run([sys.executable, "-m", "adaptctl", "run", str(recipe),
                           "--run-dir", run, "--json"], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    return cwd / run, done


def test_secrets_never_reach_the_run_directory_or_the_output(full_run):
    run, done = full_run
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"recipe.yaml", "manifest.json", "metrics.json", "metrics.jsonl", "README.md", "predictions.jsonl",
            "training_args.bin", "trainer_state.json"} <= names
    for name, value in SECRETS.items():
        assert value not in done.stdout and value not in done.stderr, f"{name} printed"
        leaked = [str(p.relative_to(run)) for p in files if value.encode() in p.read_bytes()]
        assert leaked == [], f"{name}'s value is in {leaked}"
    # the recipe keeps the variable's name, which is what a reader needs to re-run it
    assert yaml.safe_load((run / "recipe.yaml").read_text())["secrets"] == ["ACME_API_KEY"]


def test_secrets_in_the_data_and_the_recipe_are_masked_in_every_output(full_run, run_cli, tmp_path, monkeypatch):
    """issue 22.4: `secrets:` was never read; a value in the data or the description reached predictions.jsonl,
    report.md, recipe.yaml, the model card and stderr.  The values are in both here, and the whole run
    directory, the prepared-data cache and the output are searched for them."""
    run, done = full_run
    assert "hold the value of a secret variable" in done.stderr  # prepare said it masked rows
    arrow = b"".join(p.read_bytes() for p in (run / "prepare" / "data").rglob("*.arrow"))
    for name, value in SECRETS.items():
        assert ("*" * len(value)).encode() in arrow, f"no row carried {name}: the test would prove nothing"
    cached = Path(os.environ["ADAPTCTL_CACHE"]) / "prepared" / json.loads((run / "prepare" / "manifest.json").read_text())["cache_key"]
    # nor in the Arrow copies `datasets` makes of the files it reads (issue 32.2: its shared cache kept the raw rows)
    hf_cache = run.parent.parent / "hf-datasets"
    for value in SECRETS.values():
        assert not [p for p in (*cached.rglob("*"), *hf_cache.rglob("*")) if p.is_file() and value.encode() in p.read_bytes()]
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert resolved["description"] == "secrets stay out: [ACME_API_KEY redacted] and [HF_TOKEN redacted]"
    assert "[ACME_API_KEY redacted]" in (run / "export" / "model" / "README.md").read_text()

    # predict has no recipe: the well-known token variables are still redacted from what it prints
    monkeypatch.setenv("HF_TOKEN", SECRETS["HF_TOKEN"])
    (tmp_path / "inputs.txt").write_text(f"great item {SECRETS['HF_TOKEN']}\n")
    code, out, err = run_cli(["predict", run, "--input", tmp_path / "inputs.txt"])
    assert code == 0, err
    assert SECRETS["HF_TOKEN"] not in out + err and json.loads(out)["input"] == "great item [HF_TOKEN redacted]"


def test_redaction_skips_short_values_and_catches_json_escaped_ones(monkeypatch):
    from adaptctl.core import redact

    monkeypatch.setenv("WANDB_API_KEY", "abc")  # shorter than 4 characters: "abc" occurs everywhere
    token = 'hf_"quoted\\value'  # JSON escapes its quote and backslash
    monkeypatch.setenv("HF_TOKEN", token)
    assert redact.redact(json.dumps({"note": f"abc {token}"})) == '{"note": "abc [HF_TOKEN redacted]"}'
    assert redact.mask(f"x {token} y") == "x " + "*" * len(token) + " y"


def test_paths_in_a_recipe_resolve_against_the_recipe_file(full_run, tiny):
    run, done = full_run
    labels = json.loads((run / "prepare" / "labels.json").read_text())["label2id"]
    assert set(labels) == set(WORDS), "the data came from the current directory's decoy data.csv"
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe_dir = Path(json.loads((run / "prepare" / "manifest.json").read_text())["recipe"]).parent
    assert resolved["data"]["source"]["path"] == str(recipe_dir / "data.csv")
    assert resolved["model"]["base"] == str(recipe_dir / "base")
    summary = json.loads(done.stdout)
    assert summary["status"] == "complete" and summary["stages"] == dict.fromkeys(
        ["prepare", "train", "evaluate", "export"], "complete")
