"""Export: merged and adapter folders that plain Transformers / peft reload, predictions that match
evaluate and predict, no pickles, and a failed verification that leaves nothing behind."""

from __future__ import annotations

import json

import pytest

WORDS = {"pos": "great lovely happy wonderful superb", "neg": "awful broken sad terrible horrible"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny BERT classifier trained with LoRA and evaluated; export is left to the tests."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models.resolve import resolve_model

    root = tmp_path_factory.mktemp("export")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37)
    BertForSequenceClassification(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    rows = ["id,text,label"] + [f"r{i}{lab},{WORDS[lab]} item {i},{lab}" for i in range(60) for lab in ("pos", "neg")]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    (root / "recipe.yaml").write_text(f"""
name: export-test
task: classification
model: {{base: {root / 'base'}}}
data: {{source: data.csv, text: text, label: label, splits: {{validation: 0.1, test: 0.2}}, max_length: 32}}
method: {{name: lora, r: 4, alpha: 8, target_modules: [query, value]}}
train: {{max_steps: 6, batch_size: 8, learning_rate: 5.0e-3, precision: fp32}}
evaluate: {{compare_with_base: true}}
""")
    return root


def _run(run_cli, *args):
    code, out, err = run_cli(list(args))
    assert code == 0, err
    return out


def test_merged_export_reloads_and_matches_evaluate_and_predict(tiny_run, run_cli, tmp_path):
    from transformers import AutoModelForSequenceClassification

    run_dir = tmp_path / "run"
    _run(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir)
    model_dir = run_dir / "export" / "model"
    names = {p.name for p in model_dir.iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert set(model.config.id2label.values()) == {"neg", "pos"}
    assert not any("lora" in name for name, _ in model.named_parameters())

    evaluated = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    # the data's own columns lead each evaluated row (issue 33.1): rows match by id, not by position
    assert all(e["id"].endswith(e["label"]) and e["label"] == e["reference"] and e["text"] == e["input"]
               for e in evaluated)
    # the user's rows, with a label of their own and a field named as predict's output: both stay as given
    inputs = tmp_path / "inputs.jsonl"
    rows = [{"id": e["id"], "text": e["input"], "label": "mine", "prediction": None} for e in evaluated]
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    err = run_cli(["predict", model_dir, "--input", inputs, "--output", tmp_path / "out.jsonl"])[2]
    predicted = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: p[k] for k in rows[0]} for p in predicted] == rows and "prediction -> adaptctl_prediction" in err
    assert [p["adaptctl_prediction"] for p in predicted] == [e["prediction"] for e in evaluated]
    for p, e in zip(predicted, evaluated):
        for label, prob in e["probabilities"].items():
            assert p["probabilities"][label] == pytest.approx(prob, abs=1e-4)
    inputs.write_text(json.dumps({"text": "x", "prediction": 1, "adaptctl_prediction": 2}) + "\n")
    code, _, err = run_cli(["predict", model_dir, "--input", inputs])
    assert code == 1 and "'prediction' and 'adaptctl_prediction'" in err and "hint:" in err

    card = (model_dir / "README.md").read_text()
    assert "base_model: " + str(tiny_run / "base") in card
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    accuracy = document["metrics"]["accuracy"]
    assert f"| accuracy | {accuracy:.4f} |" in card
    # which model the figures are of, against the folder (issue 33.5), and how sure they are (33.3)
    low, high = document["intervals"]["accuracy"]
    assert low <= accuracy <= high and document["scored_as"]["form"] == "adapter over its base model, unmerged"
    assert set(document["baseline"]["difference"]) == {"accuracy", "precision", "recall", "f1", "mcc"}
    difference = json.loads((run_dir / "export" / "manifest.json").read_text())["evaluated_difference"]
    assert difference["exported_as"] == "merged model in fp32" and difference["max_probability_difference"] < 1e-4
    assert f"The figures are of the {difference['evaluated_as']}; this folder holds the merged model in fp32" in card
    report = (run_dir / "evaluate" / "report.md").read_text()
    assert ("## Warnings" in report) == bool(document["warnings"]) and "| metric | adapted | 95% CI |" in report


def test_adapter_export_loads_with_peft(tiny_run, run_cli, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    run_dir = tmp_path / "run"
    _run(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--set", "export.merge_adapter=false")
    model_dir = run_dir / "export" / "model"
    assert (model_dir / "adapter_config.json").exists() and (model_dir / "adapter_model.safetensors").exists()
    model = AutoPeftModelForSequenceClassification.from_pretrained(model_dir)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert "library_name: peft" in (model_dir / "README.md").read_text()


def test_failed_verification_exits_3_and_leaves_no_folder(tiny_run, run_cli, tmp_path, monkeypatch):
    from adaptctl.export import verify

    run_dir = tmp_path / "run"
    _run(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--stages", "prepare,train")
    monkeypatch.setattr(verify, "TOLERANCE", -1.0)  # any difference, even 0, now counts as a mismatch
    code, _, err = run_cli(["export", tiny_run / "recipe.yaml", "--run-dir", run_dir])
    assert code == 3 and "verification failed" in err
    assert not (run_dir / "export" / "model").exists()
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".model")]
    assert json.loads((run_dir / "export" / "manifest.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------ onnx
def test_mean_pooling_survives_export_predict_onnx_and_plain_transformers(tiny_run, run_cli, tmp_path):
    """Issue 33.7: a classifier trained with mean pooling exports merged with its own mean_pooling.py; adaptctl
    predict, the ONNX graph and plain Transformers (with trust_remote_code=True) read it alike."""
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    err = _run_err(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--stages", "prepare,train,export",
                   "--set", "model.pooling=mean", "--set", "export.formats=[onnx]", "--set", "method.target_modules=null")
    assert "the head reads the mean of the token states (model.pooling: mean)" in err
    # an unset target_modules is the classification default, and the log says so (issue 33.7)
    assert "lora: method.target_modules unset: all-linear, the default for classification" in err
    assert "unused from the checkpoint" not in err  # the checkpoint's pooler is dropped by design, not warned about
    folder = run_dir / "export" / "model"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert-mean-pooling"
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["max_output_difference"] < 1e-4 and manifest["onnx"]["max_abs_diff"] < 1e-4
    assert "trust_remote_code=True" in (folder / "README.md").read_text()
    (tmp_path / "in.txt").write_text("great lovely happy\nawful broken sad\n")
    outputs = {name: run_cli(["predict", folder, *flag, "--input", tmp_path / "in.txt"])
               for name, flag in (("torch", []), ("onnx", ["--onnx"]))}
    assert all(code == 0 and "warning" not in err for code, _, err in outputs.values()), outputs
    rows = {name: [json.loads(line) for line in out.splitlines()] for name, (_, out, _) in outputs.items()}
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["prediction"] == b["prediction"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    plain = ("import sys, torch; from transformers import AutoModelForSequenceClassification as A, AutoTokenizer as T\n"
             "m, t = (C.from_pretrained(sys.argv[1], trust_remote_code=True) for C in (A, T))\n"
             "print('RESULT', type(m).__module__.split('.')[0], m(**t(sys.argv[2], return_tensors='pt')).logits"
             ".softmax(-1)[0].tolist())")
    done = subprocess.run([sys.executable, "-c", plain, str(folder), "great lovely happy"], capture_output=True,
                          text=True, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300,
                          check=False, stdin=subprocess.DEVNULL)
    result = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), "RESULT - []")
    module, probabilities = result.split(" ", 2)[1:]
    assert done.returncode == 0 and module == "transformers_modules", done.stderr[-2000:]
    labels = json.loads((folder / "config.json").read_text())["id2label"]
    assert json.loads(probabilities) == pytest.approx([rows["torch"][0]["probabilities"][labels[str(i)]]
                                                       for i in range(2)], abs=1e-4)


def _run_err(run_cli, *args):
    code, _, err = run_cli(list(args))
    assert code == 0, err
    return err


def test_onnx_export_matches_pytorch_and_predicts_the_same(tiny_run, run_cli, tmp_path):
    import onnxruntime

    run_dir = tmp_path / "run"
    _run(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--set", "export.formats=[onnx]")
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    onnx = manifest["onnx"]
    assert onnx["file"] == "export/model/model.onnx" and "model.onnx" in manifest["files"]
    assert onnx["examples"] == 8 and onnx["labels_identical"] and onnx["max_abs_diff"] < 1e-4
    assert manifest["outputs"]["onnx"] == onnx["file"]
    session = onnxruntime.InferenceSession(str(run_dir / onnx["file"]), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", "sequence"]] * len(session.get_inputs())
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("logits", ["batch", 2])]

    evaluated = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": row["input"]}) + "\n" for row in evaluated))
    model_dir = run_dir / "export" / "model"
    predicted = {}
    for name, target in [("torch", [model_dir]), ("onnx-flag", [run_dir, "--onnx"]), ("onnx-file", [model_dir / "model.onnx"])]:
        _run(run_cli, "predict", *target, "--input", inputs, "--output", tmp_path / f"{name}.jsonl", "--batch-size", 4)
        predicted[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in predicted["onnx-flag"]] == [p["prediction"] for p in predicted["torch"]]
    assert predicted["onnx-file"] == predicted["onnx-flag"]
    for o, t in zip(predicted["onnx-flag"], predicted["torch"]):
        assert o.keys() == t.keys() and o["input"] == t["input"]
        for label, prob in t["probabilities"].items():
            assert o["probabilities"][label] == pytest.approx(prob, abs=1e-5)


def test_failed_onnx_check_exits_3_and_leaves_no_folder_then_an_adapter_export_carries_it_merged(
        tiny_run, run_cli, tmp_path, monkeypatch):
    from adaptctl.export import onnx

    run_dir = tmp_path / "run"
    _run(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--stages", "prepare,train")
    with monkeypatch.context() as patch:
        patch.setattr(onnx, "TOLERANCE", -1.0)  # any difference, even 0, now counts as a mismatch
        code, _, err = run_cli(["export", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--set", "export.formats=[onnx]"])
    assert code == 3 and "ONNX verification failed" in err and "Traceback" not in err
    assert not (run_dir / "export" / "model").exists()
    assert not [p for p in (run_dir / "export").iterdir() if p.name.startswith(".model")]
    assert json.loads((run_dir / "export" / "manifest.json").read_text())["status"] == "failed"

    _run(run_cli, "export", tiny_run / "recipe.yaml", "--run-dir", run_dir,
         "--set", "export.formats=[onnx]", "--set", "export.merge_adapter=false")
    names = {p.name for p in (run_dir / "export" / "model").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "model.onnx"} <= names
    onnx_manifest = json.loads((run_dir / "export" / "manifest.json").read_text())["onnx"]
    assert onnx_manifest["labels_identical"] and onnx_manifest["max_abs_diff"] < 1e-4


# ------------------------------------------------------------------ dtype
def test_bf16_export_halves_the_weights_verifies_and_keeps_onnx_fp32(tiny_run, run_cli, tmp_path):
    import torch
    from safetensors import safe_open

    from adaptctl.export.verify import tolerance

    run_dir = tmp_path / "run"
    _run(run_cli, "run", tiny_run / "recipe.yaml", "--run-dir", run_dir, "--stages", "prepare,train,export")
    weights = run_dir / "export" / "model" / "model.safetensors"
    fp32_bytes = weights.stat().st_size
    fp32 = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert fp32["dtype"] == "fp32" and fp32["tolerance"] == 1e-3 and fp32["max_output_difference"] < 1e-4

    _run(run_cli, "export", tiny_run / "recipe.yaml", "--run-dir", run_dir,
         "--set", "export.dtype=bf16", "--set", "export.formats=[onnx]")
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert 0.45 < weights.stat().st_size / fp32_bytes < 0.55
    model_dir = run_dir / "export" / "model"
    assert json.loads((model_dir / "config.json").read_text())["dtype"] == "bfloat16"
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["verified"] and manifest["dtype"] == "bf16"
    assert manifest["tolerance"] == tolerance("bf16") and 0 < manifest["max_output_difference"] < 5e-2
    assert manifest["weights_bytes"] == weights.stat().st_size
    assert manifest["onnx"]["max_abs_diff"] < 1e-4, "the ONNX graph must come from the fp32 model"
    card = (model_dir / "README.md").read_text()
    assert "- Weights: merged, safetensors, bf16" in card and "dtype: bf16" in card
    assert "- Adapted modules: `query`, `value` (4 modules); trained in full: `classifier`" in card


def test_an_unknown_export_dtype_is_exit_1_naming_the_field(tiny_run, run_cli, tmp_path):
    code, _, err = run_cli(["validate", tiny_run / "recipe.yaml", "--set", "export.dtype=int8"])
    assert code == 1 and "export.dtype" in err and "Traceback" not in err


# ------------------------------------------------------------------ predict on a generation run
def test_predict_on_a_causal_lm_run_renders_and_decodes_as_evaluate(run_cli, tmp_path):
    """Rows with the recipe's source field (`question`) go through data.prompt and evaluate.generation:
    predict's text for a row is evaluate's, from the run directory (recipe.yaml) and from the export
    folder alone (adaptctl.json); `id` is kept and --max-new-tokens overrides the run's 8."""
    import tiny_generation as tg

    base = tg.save_tiny_llama(tmp_path / "llama")
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", tg.recipe_dict(base, tg.write_pairs(tmp_path / "pairs.jsonl")))
    run_dir = tmp_path / "run"
    _run(run_cli, "run", recipe, "--run-dir", run_dir)
    evaluated = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    questions = [e["input"].removeprefix("Reverse: ").removesuffix("\nAnswer: ") for e in evaluated]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in enumerate(questions)))
    assert any(e["prediction"] for e in evaluated)  # something to compare (a random model rarely stops at once)

    for model in (run_dir / "train" / "model", run_dir / "export" / "model"):
        out = _run(run_cli, "predict", model, "--input", inputs)
        predicted = [json.loads(line) for line in out.splitlines()]
        assert [p["prediction"] for p in predicted] == [e["prediction"] for e in evaluated], model
        assert [p["input"] for p in predicted] == [e["input"] for e in evaluated]
        # every input field passes through unchanged (issue 33.1), beside the input the model read
        assert [(p["id"], p["question"]) for p in predicted] == list(enumerate(questions))

    short = [json.loads(line) for line in _run(run_cli, "predict", run_dir, "--input", inputs,
                                               "--max-new-tokens", 2).splitlines()]
    tokenizer = tg.smol_tokenizer()
    assert all(len(tokenizer(s["prediction"], add_special_tokens=False)["input_ids"]) <= 3 for s in short)
    assert all(e["prediction"].startswith(s["prediction"]) for s, e in zip(short, evaluated))  # greedy: a prefix
    assert any(len(s["prediction"]) < len(e["prediction"]) for s, e in zip(short, evaluated))

    (tmp_path / "bad.jsonl").write_text('{"question": "a b c"}\n{"id": 7}\n')
    code, out, err = run_cli(["predict", run_dir, "--input", tmp_path / "bad.jsonl"])
    assert code == 1 and out == "" and "Traceback" not in err
    assert "data.prompt: column 'question' is not in " in err and "bad.jsonl:2" in err and "the row has id" in err
    code, _, err = run_cli(["predict", run_dir, "--input", inputs, "--temperature", 0.5])
    assert code == 1 and "--temperature 0.5" in err and "--do-sample" in err
    code, _, err = run_cli(["predict", run_dir, "--input", inputs, "--max-new-tokens", 0])
    assert code == 1 and "--max-new-tokens 0: input should be greater than 0" in err


def test_predict_encodes_a_chat_prompt_as_training_did(monkeypatch):
    """With data.chat_template, predict's prompt tokens are those training put before the response,
    short prompts whole and long ones cut as prepare cuts them (its end and the chat header kept)."""
    import tiny_generation as tg
    from adaptctl.evaluation import generation
    from adaptctl.recipe.inference import from_shipped
    from adaptctl.tasks import causal_lm

    tokenizer = tg.smol_tokenizer()
    recipe = from_shipped("causal-lm", {"data": {"prompt": "{q}", "response": "{a}", "chat_template": True,
                                                 "max_length": 48}})
    prompts = ["Reverse: apple river", "Summarize: " + "the cat sat on the mat " * 20]
    seen = {}
    monkeypatch.setattr(generation, "generate_texts", lambda model, tok, ids, r, **kw: (seen.setdefault("ids", ids), {}))
    causal_lm.predict(None, tokenizer, prompts, recipe, {}, batch_size=2)
    trained = causal_lm.encode_pairs(prompts[:1], ["river apple"], tokenizer, recipe)
    assert seen["ids"][0] == trained["input_ids"][0][:trained["prompt_length"][0]]
    header = tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                                     add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    assert len(seen["ids"][1]) < 48 and seen["ids"][1][:5] == header[:5]
    assert tokenizer.decode(seen["ids"][1]).endswith("mat <|im_end|>\n<|im_start|>assistant\n")
