"""train.fast_dropout: dropout masks cut from 16-bit random draws, and SDPA with that mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptctl.training import fast_dropout


def test_the_mask_keeps_each_element_with_probability_1_minus_p_in_every_16_bit_lane():
    torch.manual_seed(0)
    keep = fast_dropout.kept((250_000, 4), 0.1)  # a row of 4 is one 64-bit draw: a biased lane would show
    for lane in range(4):
        assert keep[:, lane].float().mean().item() == pytest.approx(0.9, abs=0.003)
    torch.manual_seed(0)
    assert torch.equal(fast_dropout.kept((250_000, 4), 0.1), keep), "the masks follow torch's seed"


def test_dropout_scales_what_it_keeps_and_passes_gradients_only_through_it():
    torch.manual_seed(1)
    x = torch.randn(64, 384, dtype=torch.bfloat16, requires_grad=True)
    out = fast_dropout.fast_dropout(x, 0.25)
    out.sum().backward()
    kept = out != 0
    assert torch.allclose(out[kept].float(), (x[kept] / 0.75).float(), rtol=1e-2)
    assert torch.equal(x.grad != 0, kept)
    assert 0.70 < kept.float().mean().item() < 0.80


def _attention_inputs(causal_padding: bool):
    torch.manual_seed(2)
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))
    mask = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    mask[0, ..., 4:] = False  # padding in the first row
    if causal_padding:
        mask &= torch.ones(6, 6, dtype=torch.bool).tril()
    return query, key, value, mask


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_sdpa_fast_dropout_is_sdpa_when_every_element_is_kept(causal, monkeypatch):
    """The math path (used when dropout > 0) against torch's SDPA: with the mask forced to keep everything,
    the only difference left is the 1 / (1 - p) scale."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = nn.Module()
    module.is_causal = False
    query, key, value, mask = _attention_inputs(causal)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    monkeypatch.setattr(fast_dropout, "kept", lambda shape, p: torch.ones(shape, dtype=torch.bool))
    got, _ = fast_dropout.sdpa_fast_dropout(module, query, key, value, mask, dropout=0.2, scaling=0.3)
    assert torch.allclose(got * 0.8, expected, atol=1e-5)
    unmasked, _ = fast_dropout.sdpa_fast_dropout(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    assert torch.equal(unmasked, expected), "without dropout it is SDPA itself"


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(3)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
                        attn_implementation="sdpa")
    return BertForSequenceClassification(config)


def test_installed_swaps_while_training_and_puts_the_model_back(tmp_path):
    import json

    model = _tiny_bert()
    batch = {"input_ids": torch.randint(0, 50, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.long)}
    batch["attention_mask"][0, 5:] = 0
    model.eval()
    before = model(**batch).logits
    with fast_dropout.installed(model, wanted=True) as swapped:
        assert swapped == 3 * 2 + 2 + 1  # 3 per layer (one holds the attention p), embeddings, classifier; the config
        assert model.config._attn_implementation == fast_dropout.ATTENTION
        assert torch.allclose(model(**batch).logits, before, atol=1e-6), "evaluation inside is unchanged"
        model.train()
        assert not torch.allclose(model(**batch).logits, before, atol=1e-3), "training inside drops out"
        model.eval()
    assert model.config._attn_implementation == "sdpa"
    assert all(type(m) is nn.Dropout for m in model.modules() if isinstance(m, nn.Dropout))
    model.save_pretrained(tmp_path)
    assert fast_dropout.ATTENTION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_off_leaves_the_model_alone():
    model = _tiny_bert()
    with fast_dropout.installed(model, wanted=False) as swapped:
        assert swapped == 0 and model.config._attn_implementation == "sdpa"
        assert not any(isinstance(m, fast_dropout.FastDropout) for m in model.modules())
