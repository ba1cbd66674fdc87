"""model.add_tokens (issue 17): domain words added to the tokenizer whole, new embeddings at the mean
of the word's old pieces, fertility before and after in prepare's stats, and the extended tokenizer and
resized embeddings carried through train, evaluate and export (whose reload check covers them)."""

from __future__ import annotations

import json

from tests.test_masked_lm import TOPICS, minilm_tokenizer, save_tiny_bert, write_recipe


def test_mined_words_save_the_most_tokens_and_start_at_their_pieces_mean(tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM

    from adaptctl.data import vocabulary

    tokenizer = minilm_tokenizer()
    texts = ["electroencephalography again and electroencephalography", "photosynthesis of the river", "the the the"]
    mined = vocabulary.mine(texts, tokenizer, 2)
    assert mined == ["electroencephalography", "photosynthesis"]  # frequency x pieces saved; 'the' is one token
    before = vocabulary.fertility(texts, tokenizer)
    added = vocabulary.extend(tokenizer, mined)
    assert vocabulary.fertility(texts, tokenizer) < before
    assert tokenizer.tokenize("Electroencephalography!") == ["electroencephalography", "!"]
    model = AutoModelForMaskedLM.from_pretrained(str(save_tiny_bert(tmp_path / "base")))
    old = model.get_input_embeddings().weight.detach().clone()
    vocabulary.grow_embeddings(model, tokenizer, added)
    table = model.get_input_embeddings().weight
    assert table.shape[0] == len(tokenizer) == old.shape[0] + 2
    new_id = tokenizer.convert_tokens_to_ids("photosynthesis")
    assert torch.allclose(table[new_id], old[added["photosynthesis"]].mean(0))
    assert torch.equal(table[:old.shape[0]], old)  # the old rows are untouched
    assert torch.isfinite(model.get_output_embeddings().bias).all()  # the grown decoder bias too


def test_added_tokens_travel_through_train_evaluate_and_export(tmp_path, run_cli):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    recipe = write_recipe(tmp_path, save_tiny_bert(tmp_path / "base"))
    document = json.loads(recipe.read_text())
    document["model"]["add_tokens"] = {"from_data": 3}
    document["train"]["max_steps"] = 2
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    vocab = json.loads((tmp_path / "run/prepare/stats.json").read_text())["vocabulary"]
    assert vocab["added_tokens"] == 3 and vocab["fertility_after"] < vocab["fertility_before"]
    assert "electroencephalography" in vocab["words"] and "tokens per word" in err
    exported = tmp_path / "run/export/model"
    tokenizer = AutoTokenizer.from_pretrained(str(exported))
    assert tokenizer.tokenize("electroencephalography") == ["electroencephalography"]
    model = AutoModelForMaskedLM.from_pretrained(str(exported))
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == minilm_tokenizer().vocab_size + 3
    metrics = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())
    assert metrics["baseline"]["metrics"]["perplexity"] > 0  # the base, grown the same way, scored the new ids


def test_add_tokens_needs_method_full(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, "sentence-transformers/all-MiniLM-L6-v2")
    document = json.loads(recipe.read_text())
    document["model"]["add_tokens"] = [TOPICS[0].split()[-1]]
    document["method"] = {"name": "lora"}
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "model.add_tokens" in err and "method full" in err
