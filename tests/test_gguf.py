"""export.formats: [gguf]: a tiny random Llama (SmolLM2's tokenizer and chat template) trained with LoRA and
exported as f16 and q8_0 GGUF files that transformers and llama.cpp read back as the trained model; the
chat template and special tokens inside them and in the exported tokenizer; an Ollama Modelfile whose
template writes what the chat template writes; a failed check that exits 3 and leaves nothing; and
validate's error for what cannot have a GGUF.  The real-model figures are in bench/RESULTS-gguf.md."""

from __future__ import annotations

import json
import shutil

import go_template
import pytest
import tiny_generation as tg

CONVERSATION = [{"role": "user", "content": "Reverse: apple river stone"},
                {"role": "assistant", "content": "stone river apple"},
                {"role": "user", "content": "Reverse: green quick seven"}]


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory):
    """Trained (6 LoRA steps through the chat template) and exported with formats [gguf].  The safetensors
    folder's own fresh-process check (test_export.py tests it) is skipped to save its process."""
    from adaptctl.cli import main
    from adaptctl.export import verify

    root = tmp_path_factory.mktemp("gguf")
    base = tg.save_tiny_llama(root / "llama")
    recipe = tg.recipe_dict(base, tg.write_pairs(root / "pairs.jsonl"),
                            export={"formats": ["gguf"], "gguf": {"types": ["f16", "q8_0"]}})
    recipe["data"]["chat_template"] = True
    path = tg.write_recipe(root / "recipe.yaml", recipe)
    assert main(["train", str(path), "--run-dir", str(root / "run"), "--quiet"]) == 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify, "verify_in_fresh_process", lambda *args, **kwargs: 0.0)
        assert main(["export", str(path), "--run-dir", str(root / "run"), "--quiet"]) == 0
    return root


@pytest.fixture(scope="module")
def smol():
    """SmolLM2's tokenizer, loaded once (a copy for each use: tests set chat templates on it)."""
    import copy

    tokenizer = tg.smol_tokenizer()
    return lambda: copy.deepcopy(tokenizer)


def _manifest(root) -> dict:
    return json.loads((root / "run" / "export" / "manifest.json").read_text())


def test_gguf_files_reload_in_transformers_within_tolerance_and_greedy_equal_for_f16(gguf_run):
    gguf = _manifest(gguf_run)["gguf"]
    assert gguf["pre_tokenizer"] == "smollm" and set(gguf["files"]) == {"f16", "q8_0"}
    f16, q8 = gguf["files"]["f16"], gguf["files"]["q8_0"]
    for entry in (f16, q8):
        assert (gguf_run / "run" / "export" / "model" / entry["file"]).stat().st_size == entry["bytes"]
        assert 0 < entry["max_logit_difference"] <= entry["tolerance"]
    assert q8["bytes"] < f16["bytes"] and f16["max_logit_difference"] < q8["max_logit_difference"]
    ties = len(f16["transformers"]["near_ties"])
    assert f16["transformers"]["greedy_identical"] == f"{10 - ties}/10"


def test_llama_cpp_tokenizes_and_generates_as_the_trained_model(gguf_run):
    f16 = _manifest(gguf_run)["gguf"]["files"]["f16"]
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        assert f16["llama_cpp"]["checked"] is False and "llama_cpp" in f16["llama_cpp"]["why"]
        pytest.skip("llama-cpp-python is not installed (pip install llama-cpp-python): the export skipped its check")
    llama = f16["llama_cpp"]
    assert llama["checked"] and llama["prompts_tokenized_identically"] == "10/10"
    assert llama["greedy_identical"] == f"{10 - len(llama['near_ties'])}/10" and llama["tokens_per_second"] > 0


def test_the_gguf_and_the_exported_tokenizer_carry_the_chat_template_training_used(gguf_run, smol):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from adaptctl.recipe.schema import Recipe
    from adaptctl.tasks import causal_lm

    folder = gguf_run / "run" / "export" / "model"
    exported = AutoTokenizer.from_pretrained(str(folder))
    trained = smol()
    assert exported.chat_template == trained.chat_template
    recipe = Recipe.model_validate(json.loads(json.dumps(_resolved(gguf_run))))
    prompt = "Reverse: apple river stone\nAnswer: "
    built = causal_lm.encode_pairs([prompt], [""], trained, recipe)
    rendered = exported.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    assert exported(rendered, add_special_tokens=False)["input_ids"] == built["input_ids"][0][:built["prompt_length"][0]]
    assert "base model's" in _manifest(gguf_run)["chat_template"]
    assert "Chat template: the base model's" in (folder / "README.md").read_text()

    fields = GGUFReader(folder / "model-f16.gguf").fields
    assert fields["tokenizer.chat_template"].contents() == trained.chat_template
    assert fields["tokenizer.ggml.eos_token_id"].contents() == trained.eos_token_id
    assert fields["tokenizer.ggml.bos_token_id"].contents() == trained.bos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False  # SmolLM2's tokenizer adds none
    assert fields["tokenizer.ggml.pre"].contents() == "smollm" and fields["general.architecture"].contents() == "llama"
    assert len(fields["tokenizer.ggml.tokens"].data) == len(trained)


def _resolved(root) -> dict:
    import yaml

    return yaml.safe_load((root / "run" / "recipe.yaml").read_text())


def test_the_modelfile_renders_the_chat_templates_prompt(gguf_run, smol):
    folder = gguf_run / "run" / "export" / "model"
    text = (folder / "Modelfile").read_text()
    assert "FROM ./model-q8_0.gguf" in text  # the smallest file
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    system = text.split('SYSTEM """', 1)[1].split('"""', 1)[0]
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text
    assert "PARAMETER num_predict 8" in text  # the recipe's evaluate.generation.max_new_tokens
    tokenizer = smol()
    for messages in (CONVERSATION, [{"role": "system", "content": "Answer in one word."}] + CONVERSATION):
        wanted = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert go_template.render(template, messages, system) == wanted


def test_a_failed_gguf_check_exits_3_and_leaves_nothing(gguf_run, run_cli, tmp_path, monkeypatch):
    """A file llama.cpp's reader cannot parse (cut in half): the fresh process fails, nothing is published.
    (The safetensors folder's own check, tested in test_export.py, is skipped here to save its process.)"""
    from adaptctl.export import gguf_file, verify

    run = tmp_path / "run"
    shutil.copytree(gguf_run / "run", run, ignore=shutil.ignore_patterns("export"))
    write = gguf_file.write_gguf

    def cut_in_half(model, tokenizer, path, *args):
        write(model, tokenizer, path, *args)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])

    monkeypatch.setattr(gguf_file, "write_gguf", cut_in_half)
    monkeypatch.setattr(verify, "verify_in_fresh_process", lambda *args, **kwargs: 0.0)
    code, _, err = run_cli(["export", gguf_run / "recipe.yaml", "--run-dir", run,
                                   "--set", "export.gguf.types=[q8_0]"])
    assert code == 3 and "GGUF file does not load" in err and "Traceback (most recent call last)" not in err.split("\n")[0]
    assert not (run / "export" / "model").exists()
    assert [p.name for p in (run / "export").iterdir()] in ([], ["manifest.json"])


# ------------------------------------------------------------------ the chat template, the Modelfile
@pytest.mark.parametrize("chat_template", [False, True, ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
                                                        "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
                                                        "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")])
def test_the_shipped_chat_template_renders_the_prompt_training_and_predict_built(chat_template, smol):
    """Each data.chat_template: the template export ships (tasks.conversation.trained_template) makes, from
    one user message, the very tokens training put before the response; and its Modelfile the same text."""
    from adaptctl.export.modelfile import chat_parts
    from adaptctl.export.modelfile import go_template as to_go
    from adaptctl.recipe.inference import from_shipped
    from adaptctl.tasks import causal_lm, conversation

    recipe = from_shipped("causal-lm", {"data": {"prompt": "{q}", "response": "{a}", "chat_template": chat_template,
                                                 "max_length": 64}})
    tokenizer = smol()
    template, what = conversation.trained_template(smol(), recipe.data)
    prompt = "Reverse: apple river\nAnswer: "
    built = causal_lm.encode_pairs([prompt], ["river apple"], tokenizer, recipe)
    shipped = smol()
    shipped.chat_template = template
    rendered = shipped.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    assert shipped(rendered, add_special_tokens=False)["input_ids"] == built["input_ids"][0][:built["prompt_length"][0]]
    whole = shipped.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": "river apple"}],
                                        tokenize=False)
    assert tokenizer.decode(built["input_ids"][0]) == whole  # the reply and its end too, as text
    assert what.startswith({False: "a plain one", True: "the base model's"}.get(chat_template, "the recipe's own"))
    parts = chat_parts(shipped)
    assert go_template.render(to_go(parts), CONVERSATION, parts.default_system) == \
        shipped.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)


def test_a_template_that_writes_a_bos_text_keeps_it_once_at_the_start(smol):
    """Llama 3's layout: the BOS text once, then role headers; no default system message."""
    from adaptctl.export.modelfile import chat_parts
    from adaptctl.export.modelfile import go_template as to_go

    tokenizer = smol()
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                               "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                               "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    parts = chat_parts(tokenizer)
    assert parts.start == tokenizer.bos_token and parts.default_system is None
    for messages in (CONVERSATION, [{"role": "system", "content": "Be brief."}] + CONVERSATION):
        assert go_template.render(to_go(parts), messages, None) == \
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ------------------------------------------------------------------ what cannot have a GGUF
@pytest.mark.parametrize("task,architecture,expected", [
    ("classification", None, "export.formats: gguf is for causal-lm models, not classification"),
    ("causal-lm", "GPT2LMHeadModel", ("GPT2LMHeadModel, which adaptctl does not write as GGUF (it writes "
                                     "LlamaForCausalLM); llama.cpp's own converter does")),
    ("causal-lm", "OPTForCausalLM", "OPTForCausalLM, which llama.cpp cannot read"),
])
def test_gguf_for_what_cannot_have_one_is_a_located_validate_error(tmp_path, run_cli, task, architecture, expected):
    (tmp_path / "d.jsonl").write_text('{"text": "t", "label": "a"}\n')
    base = "sentence-transformers/all-MiniLM-L6-v2"
    if architecture:  # validate reads config.json only: no weights needed
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text(json.dumps({"architectures": [architecture]}))
        base = str(tmp_path / "model")
    data = "{source: d.jsonl, text: text, label: label}" if task == "classification" else "{source: d.jsonl, text: text}"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: x\ntask: {task}\nmodel: {{base: {base}}}\ndata: {data}\nexport:\n  formats: [gguf]\n")
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "Traceback" not in err
    assert f"{recipe}:" in err and ": export" in err and expected in " ".join(err.split())
    code, _, err = run_cli(["validate", recipe, "--set", "export.formats=[]"])
    assert code == 0, err


def test_a_llama_base_validates_with_gguf_and_prompt_tuning_does_not(tmp_path, run_cli):
    (tmp_path / "d.jsonl").write_text('{"text": "t"}\n')
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: x\ntask: causal-lm\nmodel: {base: HuggingFaceTB/SmolLM2-135M-Instruct}\n"
                      "data: {source: d.jsonl, text: text}\nexport: {formats: [gguf], gguf: {types: [q8_0]}}\n")
    code, _, err = run_cli(["validate", recipe])
    assert code == 0, err
    code, _, err = run_cli(["validate", recipe, "--set", "method.name=prompt-tuning"])
    assert code == 1 and "gguf needs the adapter merged" in err
    code, _, err = run_cli(["validate", recipe, "--set", "export.gguf.types=[q4_k]"])
    assert code == 1 and "export.gguf.types" in err
